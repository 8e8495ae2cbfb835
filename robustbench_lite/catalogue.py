"""What the installed plugins are, for `rbl list` and the help texts, without importing them each time.

Listing plugins means importing every plugin module, and with them torch (seconds of CPU). The
catalogue is that listing as plain data, written once to the user's cache and read back while the
installation is unchanged: the key covers the entry points of our group (names, targets,
distributions and versions), the size and modification time of every source file of the packages
they live in, and of every import path folder but the first (what ``pip install`` changes). Loading warnings of
broken plugins are kept in it and shown again on every read, so no failure is cached away.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .atomic import atomic_target
from .choices import PLUGIN_KINDS
from .entry_points import selected_entry_points
from .errors import PluginLoadWarning
from .locations import default_cache_dir

FORMAT = 1  # of the cached file; another format is rebuilt, not read
STALE_SECONDS = 7 * 24 * 3600  # listings of other installations kept a week (virtual environments side by side)


@dataclass(frozen=True)
class PluginEntry:
    """One installed plugin as `rbl list` shows it."""

    kind: str
    name: str
    provider: str
    description: str
    doc: str
    options: list[list[str]]  # [name, default as written on the command line, help]
    facts: list[list[str]]  # [what, value]: a dataset's defaults, the dataset a model is for, ...


@dataclass(frozen=True)
class Catalogue:
    entries: list[PluginEntry]
    commands: dict[str, str]  # plugin subcommands of `rbl`: name -> short help
    warnings: list[str]  # why plugins were skipped while listing

    def of_kind(self, kind: str) -> list[PluginEntry]:
        return [entry for entry in self.entries if entry.kind == kind]

    def named(self, name: str) -> list[PluginEntry]:
        return [entry for entry in self.entries if entry.name == name]


def catalogue() -> Catalogue:
    """The installed plugins, from the cache when the installation is unchanged, else listed (and cached)."""
    path = default_cache_dir() / "catalogue" / f"plugins-{_installation_key()}.json"
    listed = _read(path)
    if listed is None:
        listed = build()
        _write(path, listed)
    for message in listed.warnings:
        warnings.warn(message, PluginLoadWarning, stacklevel=2)
    return listed


def build() -> Catalogue:
    """List every installed plugin by importing it (through the registry)."""
    import click

    from .registry import Registry

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        registry = Registry()
        group = click.Group()
        registry.add_commands(group)
        # inside: reading a plugin's options may load more plugins (rbl-lsa's come from the registry)
        entries = [_entry(kind, info) for kind in PLUGIN_KINDS for info in registry.infos(kind).values()]
    commands = {name: command.get_short_help_str(limit=80) for name, command in sorted(group.commands.items())}
    # the same plugin may fail for two registries (a plugin that asks the default one): say it once
    return Catalogue(entries, commands, list(dict.fromkeys(str(warning.message) for warning in caught)))


def _entry(kind: str, info: Any) -> PluginEntry:
    from .options import format_value

    cls = info.cls
    options = [[option.name, format_value(option.default), option.help] for option in cls.options]
    return PluginEntry(kind, cls.name, info.provider, cls.description, inspect.getdoc(cls) or "", options,
                       [[what, str(value)] for what, value in _facts(kind, cls)])


def _facts(kind: str, cls: type) -> list[tuple[str, Any]]:
    if kind == "datasets":
        from .options import budget_text

        return [("eps grid", ",".join(budget_text(eps) for eps in cls.default_eps)),
                ("train eps", budget_text(cls.default_train_eps)), ("epochs", cls.default_epochs)]
    if kind == "models":
        return [("for", cls.dataset)] if cls.dataset else []
    if kind == "attacks":
        return [("norm", cls.norm), ("family", cls.family)]
    return [(flag, "yes") for flag in ("randomized",) if getattr(cls, flag, False)]


def _installation_key() -> str:
    parts: list[Any] = [FORMAT, sys.version]
    packages = set()
    for entry_point in sorted(selected_entry_points(), key=lambda point: (point.name, point.value)):
        dist = entry_point.dist
        parts.append([entry_point.name, entry_point.value, dist.name if dist else None, dist.version if dist else None])
        packages.add(entry_point.module.partition(".")[0])
    for package in sorted(packages):
        parts.extend(_source_stamps(package))
    # sys.path[0] is the script's folder or the working directory: where a command runs, not what is installed
    parts.extend(_stamp(Path(folder)) for folder in sys.path[1:] if folder and Path(folder).is_dir())
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def _source_stamps(package: str) -> list[Any]:
    spec = importlib.util.find_spec(package)  # a top-level name: nothing gets imported
    if spec is None or spec.origin is None:
        return [package, None]
    origin = Path(spec.origin)
    files = sorted(origin.parent.rglob("*.py")) if spec.submodule_search_locations else [origin]
    return [_stamp(path) for path in files]


def _stamp(path: Path) -> list[Any]:
    try:
        status = path.stat()
    except OSError:
        return [str(path), None]
    return [str(path), status.st_mtime_ns, status.st_size]


def _read(path: Path) -> Catalogue | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != FORMAT:
            return None
        return Catalogue([PluginEntry(**entry) for entry in data["entries"]], dict(data["commands"]),
                         list(data["warnings"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # absent, unreadable or of another build
        return None


def _write(path: Path, listed: Catalogue) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_target(path) as target:
            target.write_text(json.dumps({"format": FORMAT, **asdict(listed)}), encoding="utf-8")
        for stale in path.parent.glob("plugins-*.json"):  # listings of installations changed since
            if stale != path and time.time() - stale.stat().st_mtime > STALE_SECONDS:
                stale.unlink(missing_ok=True)
    except OSError:  # a read-only home: list again next time rather than fail
        pass
