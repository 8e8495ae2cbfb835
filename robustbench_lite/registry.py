"""Discovers plugins through entry points and hands out configured plugin instances.

Built-in plugins are entry points of this distribution in the group ``robustbench_lite``,
exactly like a third-party package's; the core imports none of them by name. A plugin module
that fails to import or to register is reported as a warning and skipped, so one broken
package never takes the others down. Two distributions registering the same name are never
resolved silently: that name becomes unusable until one is uninstalled, with an error naming both.
"""

from __future__ import annotations

import functools
import importlib.metadata as metadata
import inspect
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import click
import pluggy

from . import hookspecs
from .choices import PLUGIN_KINDS
from .entry_points import selected_entry_points
from .errors import PluginLoadWarning, UsageError, unknown_choice
from .interfaces import Attack, DatasetLoader, Defense, ModelBuilder, Plugin
from .options import PluginSpec, declaration_problems
from .plugin_code import code_digest

KINDS: dict[str, type[Plugin]] = dict(zip(PLUGIN_KINDS, (Attack, Defense, ModelBuilder, DatasetLoader), strict=True))
_SINGULAR = {"attacks": "attack", "defenses": "defense", "models": "model", "datasets": "dataset"}


class IncompatiblePluginError(Exception):
    """A plugin module declares a plugin API version this robustbench_lite does not provide."""


@dataclass(frozen=True)
class PluginInfo:
    """A registered plugin class and the distribution that provides it."""

    cls: type[Plugin]
    distribution: str
    version: str

    @property
    def provider(self) -> str:
        return f"{self.distribution} {self.version}"

    @property
    def code(self) -> str:
        """The digest of the class's code (see :mod:`robustbench_lite.plugin_code`)."""
        return code_digest(self.cls)


class Registry:
    """All plugins found in the given entry points (by default, every installed one RBL_PLUGINS lets load)."""

    def __init__(self, entry_points: Iterable[metadata.EntryPoint] | None = None) -> None:
        if entry_points is None:
            entry_points = selected_entry_points()
        self._manager = pluggy.PluginManager(hookspecs.PROJECT)
        self._manager.add_hookspecs(hookspecs)
        self._plugins: dict[str, dict[str, PluginInfo]] = {kind: {} for kind in KINDS}
        self._conflicts: dict[str, dict[str, list[str]]] = {kind: {} for kind in KINDS}
        for entry_point in entry_points:
            self._load(entry_point)

    def _load(self, entry_point: metadata.EntryPoint) -> None:
        dist = entry_point.dist
        distribution = dist.metadata["Name"] if dist else "unknown distribution"
        version = dist.version if dist else "?"
        try:
            module = entry_point.load()
            wanted = getattr(module, "RBL_PLUGIN_API", hookspecs.PLUGIN_API_VERSION)
            if wanted != hookspecs.PLUGIN_API_VERSION:
                raise IncompatiblePluginError(
                    f"it was written for plugin API {wanted!r}, but robustbench_lite provides plugin API "
                    f"{hookspecs.PLUGIN_API_VERSION}; install a {distribution} release built for it"
                )
            self._manager.register(module, name=f"{distribution}:{entry_point.name}")
            for kind in KINDS:
                hook = getattr(self._manager.hook, f"register_{kind}")
                for impl in hook.get_hookimpls():
                    if impl.plugin is module:
                        impl.function(register=functools.partial(self._add, kind, distribution, version))
        except Exception as error:  # a broken plugin must not break the others
            warnings.warn(
                f"plugin {entry_point.name!r} from distribution {distribution} {version} was skipped: "
                f"{type(error).__name__}: {error}",
                PluginLoadWarning,
                stacklevel=2,
            )

    def _add(self, kind: str, distribution: str, version: str, cls: type) -> None:
        base = KINDS[kind]
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise TypeError(f"register_{kind} got {cls!r}, which is not a {base.__name__} subclass")
        for attribute in ("name", "description"):
            if not isinstance(getattr(cls, attribute, None), str):
                raise TypeError(f"{cls.__name__} must define a string class attribute {attribute!r}")
        # Options computed on first use (a descriptor, as rbl-torchattacks' are) are not read here: reading
        # them would import what the descriptor defers.
        if isinstance(inspect.getattr_static(cls, "options"), tuple) and (problems := declaration_problems(cls)):
            raise TypeError(f"{cls.__name__} declares bad options: {'; '.join(problems)}")
        info = PluginInfo(cls, distribution, version)
        existing = self._plugins[kind].get(cls.name)
        if cls.name in self._conflicts[kind]:
            self._conflicts[kind][cls.name].append(info.provider)
        elif existing is not None and existing.cls is not cls:
            del self._plugins[kind][cls.name]
            self._conflicts[kind][cls.name] = [existing.provider, info.provider]
            warnings.warn(
                f"{_SINGULAR[kind]} {cls.name!r} is registered by both {existing.provider} and "
                f"{info.provider}; uninstall one of them to use it",
                PluginLoadWarning,
                stacklevel=2,
            )
        else:
            self._plugins[kind][cls.name] = info

    def add_commands(self, cli: click.Group) -> None:
        """Let every plugin add its subcommands to ``cli``; one that fails is skipped with a warning."""
        for impl in self._manager.hook.register_commands.get_hookimpls():
            try:
                impl.function(cli=cli)
            except Exception as error:
                warnings.warn(
                    f"plugin {impl.plugin_name!r} failed to add its commands: {type(error).__name__}: {error}",
                    PluginLoadWarning,
                    stacklevel=2,
                )

    def infos(self, kind: str) -> dict[str, PluginInfo]:
        """The usable plugins of one kind, by name, sorted."""
        self._check_kind(kind)
        return dict(sorted(self._plugins[kind].items()))

    def info(self, kind: str, name: str) -> PluginInfo:
        self._check_kind(kind)
        if name in self._conflicts[kind]:
            providers = " and ".join(self._conflicts[kind][name])
            raise UsageError(f"{_SINGULAR[kind]} {name!r} is registered by both {providers}; uninstall one")
        try:
            return self._plugins[kind][name]
        except KeyError:
            raise unknown_choice(_SINGULAR[kind], name, self._plugins[kind]) from None

    def create(self, kind: str, spec: str | PluginSpec, **options: Any) -> Any:
        """Instantiate a plugin from ``"name[key=value,...]"`` (or a PluginSpec) plus keyword options."""
        if isinstance(spec, str):
            spec = PluginSpec.parse(spec)
        info = self.info(kind, spec.name)
        return info.cls(**{**spec.options, **options})

    @staticmethod
    def _check_kind(kind: str) -> None:
        if kind not in KINDS:
            raise unknown_choice("plugin kind", kind, KINDS)


@functools.cache
def default_registry() -> Registry:
    """The registry of every installed plugin, discovered once per process."""
    return Registry()
