"""Pluggy hook specifications: how a plugin module hands its classes to the registry.

A plugin module (built in or from another distribution) is named by an entry point in the
group ``robustbench_lite`` and implements any of these hooks, calling ``register`` once per class::

    from robustbench_lite import hookimpl

    @hookimpl
    def register_attacks(register):
        register(MyAttack)

Plugins may also add ``rbl`` subcommands through ``register_commands``.
"""

from __future__ import annotations

from collections.abc import Callable

import click
import pluggy

PROJECT = "robustbench_lite"

# The plugin contract's version. A plugin module may declare the version it was written for as a
# module attribute ``RBL_PLUGIN_API = 1``; a module written for another version is refused.
PLUGIN_API_VERSION = 1

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


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add subcommands to the ``rbl`` command line, e.g. ``@cli.command() def lsa(): ...``."""
