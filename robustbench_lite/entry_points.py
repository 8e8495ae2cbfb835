"""Which installed plugin distributions load: all of them, or those the RBL_PLUGINS variable selects.

A benchmark is reproducible only with a known set of plugins. ``RBL_PLUGINS=rbl-lsa,rbl-foo``
loads those distributions besides the built-ins, ``RBL_PLUGINS=-rbl-foo`` every one but that,
and an empty ``RBL_PLUGINS=`` the built-ins alone (as pytest's ``-p no:NAME`` and llm's
``LLM_LOAD_PLUGINS`` do). The built-ins, entry points of robustbench-lite itself, always load.
Names are distribution names as pip spells them (``-``, ``_`` and ``.`` alike, any case).
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import re

from .errors import UsageError
from .hookspecs import PROJECT

VARIABLE = "RBL_PLUGINS"
BUILT_IN = "robustbench-lite"


def canonical(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def distribution_of(entry_point: metadata.EntryPoint) -> str:
    return canonical(entry_point.dist.metadata["Name"]) if entry_point.dist else ""


def selected_entry_points() -> list[metadata.EntryPoint]:
    """The entry points of our group that load, by :data:`VARIABLE` (every installed one when it is unset)."""
    points = list(metadata.entry_points(group=PROJECT))
    setting = os.environ.get(VARIABLE)
    if setting is None:
        return points
    names = [name.strip() for name in setting.split(",") if name.strip()]
    left_out = {canonical(name[1:]) for name in names if name.startswith("-")}
    wanted = {canonical(name) for name in names if not name.startswith("-")}
    installed = sorted({distribution_of(point) for point in points})
    if wanted and left_out:
        raise UsageError(f"{VARIABLE}={setting!r} both names distributions to load and, with '-', ones to leave "
                         "out; give one list or the other")
    unknown = sorted((wanted | left_out) - set(installed))
    if unknown:
        raise UsageError(f"{VARIABLE} names {', '.join(map(repr, unknown))}, not an installed plugin distribution; "
                         f"installed: {', '.join(installed) or 'none'}")
    if BUILT_IN in left_out:
        raise UsageError(f"{VARIABLE} cannot leave out {BUILT_IN}: its built-in plugins always load")

    def loads(point: metadata.EntryPoint) -> bool:
        distribution = distribution_of(point)
        return distribution == BUILT_IN or (distribution not in left_out if left_out else distribution in wanted)

    return [point for point in points if loads(point)]
