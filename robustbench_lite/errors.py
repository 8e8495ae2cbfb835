"""Exceptions shared by the core and plugins.

`UsageError` is the user's mistake (bad name, bad value, missing data): the CLI prints its
message as one line and exits with status 2. Anything else raised by a plugin inside a matrix
cell is a plugin failure: the cell is recorded as failed and the run goes on.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class RblError(Exception):
    """Base class of every error robustbench_lite raises on purpose."""


class UsageError(RblError):
    """A bad value supplied by the user; the message names it and the valid choices."""


class DiskFullError(RblError):
    """A write found the disk full; what was written before is kept, so the same command resumes."""


class DatasetMissingError(UsageError):
    """A dataset is not on disk and could not be downloaded; the message says where to put it."""


def unknown_choice(kind: str, value: str, choices: Iterable[str]) -> UsageError:
    """Build the error for an unknown name, listing the valid ones and the closest match."""
    choices = sorted(choices)
    close = difflib.get_close_matches(value, choices, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return UsageError(f"unknown {kind} {value!r}{hint}; valid choices: {', '.join(choices) or 'none installed'}")


class PluginLoadWarning(UserWarning):
    """A plugin distribution could not be imported or registered; the rest still work."""
