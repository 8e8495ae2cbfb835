"""A digest of a plugin's code, so that results and trained weights follow the code, not a version number.

An editable install keeps its distribution version while its code changes; keyed by version alone,
an edited attack would get its old numbers back. The digest covers the source of the module that
defines the class and of every module it imports from its own top-level package (``from .utils
import step`` in a plugin package, ``from robustbench_lite.attack_utils import ...`` in a built-in
one): the code that decides what the plugin computes, short of the libraries it calls. It is read
from disk at each call (a few small files), so an edit shows without a new process.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import sys
from pathlib import Path

DIGEST_LENGTH = 12


def code_digest(cls: type) -> str:
    """The digest of ``cls``'s module source and of the modules it imports from its own package."""
    module = cls.__module__
    digest = hashlib.sha256()
    for name in (module, *sorted(_own_imports(module))):
        digest.update(f"{name}\0".encode())
        digest.update(_source(name))
    return digest.hexdigest()[:DIGEST_LENGTH]


def _source(module: str) -> bytes:
    loaded = sys.modules.get(module)
    path = getattr(loaded, "__file__", None) if loaded is not None else None
    if path is None:
        spec = importlib.util.find_spec(module)
        path = spec.origin if spec is not None else None
    if path is None or not Path(path).is_file():  # a built-in or namespace module: nothing of ours to read
        return b""
    return Path(path).read_bytes()


def _own_imports(module: str) -> set[str]:
    """The modules of ``module``'s top-level package that its source imports (directly, not transitively)."""
    root = module.partition(".")[0]
    package = module if _is_package(module) else module.rpartition(".")[0]
    try:
        tree = ast.parse(_source(module))
    except SyntaxError:  # it was imported, so this cannot happen short of an edit since; the source still counts
        return set()
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, package)
            found.add(base)
            # ``from pkg import submodule`` imports a module, not only a name
            found.update(f"{base}.{alias.name}" for alias in node.names if _exists(f"{base}.{alias.name}"))
    return {name for name in found if name.partition(".")[0] == root and name != module and _exists(name)}


def _absolute(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    base = ".".join(parts[: len(parts) - node.level + 1])
    return f"{base}.{node.module}" if node.module else base


def _is_package(module: str) -> bool:
    loaded = sys.modules.get(module)
    return loaded is not None and hasattr(loaded, "__path__")


def _exists(module: str) -> bool:
    if module in sys.modules:
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
