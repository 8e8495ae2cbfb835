"""Pluggy hook specifications: how a plugin module hands its classes to the registry.

A plugin module (built in or from another distribution) is named by an entry point in the
group ``robustbench_lite`` and implements any of these hooks, calling ``register`` once per class::

    from robustbench_lite import hookimpl

    @hookimpl
    def register_attacks(register):
        register(MyAttack)
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

PROJECT = "robustbench_lite"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[[type], None]


@hookspec
def register_attacks(register: Register) -> None:
    """Register :class:`~robustbench_lite.interfaces.Attack` subclasses."""


@hookspec
def register_defenses(register: Register) -> None:
    """Register :class:`~robustbench_lite.interfaces.Defense` subclasses."""


@hookspec
def register_models(register: Register) -> None:
    """Register :class:`~robustbench_lite.interfaces.ModelBuilder` subclasses."""


@hookspec
def register_datasets(register: Register) -> None:
    """Register :class:`~robustbench_lite.interfaces.DatasetLoader` subclasses."""
