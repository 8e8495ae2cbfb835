"""Atomic file writes: a reader (or a run resumed after a crash) sees the old file or the new one, never half of one."""

from __future__ import annotations

import os
import re
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import UsageError

STALE_SECONDS = 3600.0  # a temporary file untouched this long belongs to a killed process, not to a write in flight
_TEMPORARY = re.compile(r"\..+\.[0-9a-f]{32}\.tmp")  # the names atomic_target gives its temporary files


@contextmanager
def atomic_target(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to: renamed over ``path`` when the block succeeds, removed otherwise.

    Not ``tempfile.mkstemp``: its files are private (0600), and leaderboards and plots are there to be read.
    """
    temporary = temporary_path(path)  # named as _TEMPORARY matches
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.filename is None:  # a failed write (a full disk) names no file
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise


def temporary_path(path: Path) -> Path:
    """A fresh temporary beside ``path``: ``.<name>.<32 hex digits>.tmp``."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")


def remove_stale_temporaries(folder: Path, older_than: float = STALE_SECONDS) -> None:
    """Remove the temporary files that :func:`atomic_target` left in ``folder`` when its process was killed
    (SIGKILL, or SIGTERM without cleanup): only files named as it names them, untouched for ``older_than``
    seconds. Every write touches a file, so another run's file being written is never taken."""
    cutoff = time.time() - older_than
    try:
        candidates = [path for path in folder.iterdir() if _TEMPORARY.fullmatch(path.name)]
    except OSError:  # no folder yet, so nothing left in it
        return
    for path in candidates:
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
        except OSError:  # removed meanwhile by another run, or not ours to remove
            pass


def nearest_existing(path: Path) -> Path:
    """``path``, or the closest of its parents that exists: where creating ``path`` as a folder would begin."""
    return next(candidate for candidate in (path, *path.parents) if candidate.exists())


def ensure_writable(out_dir: Path) -> None:
    """Create ``out_dir`` or raise a UsageError naming it, before any work is done."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as error:
        raise UsageError(f"output folder {str(out_dir)!r} is not writable: {error.strerror or error}") from None
