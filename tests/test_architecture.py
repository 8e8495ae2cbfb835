"""The core's modules import each other without a cycle, counting imports inside functions too.

A cycle hides which module depends on which (leaderboard, plot and sanity once imported each
other, two of them through imports moved into functions to dodge it); the flow from command to
leaderboard reads one way only.
"""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "robustbench_lite"


def core_imports(path: Path, modules: set[str]) -> set[str]:
    """The core modules ``path`` imports relatively (``from . import x``, ``from .x import y``), anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names = [node.module.partition(".")[0]] if node.module else [alias.name for alias in node.names]
            found.update(name for name in names if name in modules)
    return found


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph``, as a path that returns to its start, or None."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return path[path.index(module):] + [module]
        if module in done:
            return None
        for imported in sorted(graph[module]):
            found = visit(imported, [*path, module])
            if found:
                return found
        done.add(module)
        return None

    return next(filter(None, (visit(module, []) for module in sorted(graph))), None)


def test_the_cycle_finder_finds_a_cycle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None


def test_the_core_has_no_import_cycle():
    modules = {path.stem for path in CORE.glob("*.py")} - {"__init__"}
    graph = {module: core_imports(CORE / f"{module}.py", modules) for module in modules}
    assert graph["leaderboard"] >= {"plot", "sanity"}  # the graph is read, not empty
    assert cycle(graph) is None
