"""The entry point of rbl-lsa: registers the AT-LR defenses and the ``rbl lsa`` command."""

from __future__ import annotations

import click

from robustbench_lite import hookimpl
from robustbench_lite.hookspecs import Register

from .cli import lsa_command
from .defenses import AT_LR_DEFENSES

RBL_PLUGIN_API = 1


@hookimpl
def register_defenses(register: Register) -> None:
    for defense in AT_LR_DEFENSES:
        register(defense)


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(lsa_command)
