"""Progress a person can follow: rich bars in a terminal, plain lines in a log file, or nothing.

The runner talks to one small interface, that of :class:`rich.progress.Progress` (``add_task``,
``advance``, ``remove_task``, ``console.print``). :class:`PlainProgress` implements it as one line per
finished task (a training, a cell), flushed at once, with the time since the start and the run's ETA,
so a Slurm log or ``rbl run > log.txt`` shows how far a run is while it runs.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .choices import PROGRESS_MODES
from .errors import UsageError

# The task whose completion drives the ETA of plain lines: the runner's count of finished jobs.
JOBS_TASK = "jobs"


def resolve_mode(mode: str | bool) -> str:
    """``rich``, ``plain`` or ``none``: ``auto`` is rich where stderr is a terminal, else plain lines."""
    if isinstance(mode, bool):
        mode = "auto" if mode else "none"
    if mode not in PROGRESS_MODES:
        raise UsageError(f"unknown progress mode {mode!r}; valid choices: {', '.join(PROGRESS_MODES)}")
    if mode != "auto":
        return mode
    return "rich" if sys.stderr.isatty() else "plain"


def progress_display(mode: str | bool) -> Progress | PlainProgress:
    """The display for ``mode`` (see :func:`resolve_mode`): plain lines go to stdout, which a redirect keeps."""
    resolved = resolve_mode(mode)
    if resolved == "plain":
        return PlainProgress(sys.stdout)
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), console=Console(stderr=True), disable=resolved == "none",
    )


def clock(seconds: float) -> str:
    """``h:mm:ss``, as the rich bars show times."""
    whole = int(round(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


@dataclass
class _Task:
    description: str
    total: float | None
    completed: float
    started: float
    unit: str


class _PlainConsole:
    """``console.print`` of the plain display: the text without rich markup, as one timestamped line."""

    def __init__(self, display: PlainProgress) -> None:
        self._display = display

    def print(self, text: Any = "", *args: Any, **kwargs: Any) -> None:
        self._display.line(re.sub(r"\[/?[a-z ]+\]", "", str(text)))


class PlainProgress:
    """One line per finished task, each with the elapsed time and, once a job finished, the run's ETA."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._tasks: dict[int, _Task] = {}
        self._next_id = 0
        self._started = time.perf_counter()
        self._jobs: _Task | None = None
        self.console = _PlainConsole(self)

    def __enter__(self) -> PlainProgress:
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, description: str, total: float | None = None, **fields: Any) -> int:
        self._next_id += 1
        task = _Task(description, total, 0.0, time.perf_counter(), fields.get("unit", ""))
        self._tasks[self._next_id] = task
        if description == JOBS_TASK:
            self._jobs = task
        return self._next_id

    def advance(self, task_id: int, advance: float = 1) -> None:
        task = self._tasks[task_id]
        task.completed += advance
        if task is self._jobs:
            self.line(f"{JOBS_TASK}: {int(task.completed)}/{int(task.total or 0)} done")

    def remove_task(self, task_id: int) -> None:
        task = self._tasks.pop(task_id)
        if task is self._jobs:
            return
        done = f"{int(task.completed)}/{int(task.total)}" if task.total is not None else f"{int(task.completed)}"
        unit = f" {task.unit}" if task.unit else ""
        self.line(f"{task.description}: {done}{unit} in {time.perf_counter() - task.started:.1f}s")

    def line(self, text: str) -> None:
        elapsed = time.perf_counter() - self._started
        print(f"[{clock(elapsed)}{self._eta(elapsed)}] {text}", file=self._stream, flush=True)

    def _eta(self, elapsed: float) -> str:
        jobs = self._jobs
        if jobs is None or not jobs.total:
            return ""
        if not jobs.completed:
            return ", ETA ?"
        if jobs.completed >= jobs.total:
            return ""
        return f", ETA {clock(elapsed / jobs.completed * (jobs.total - jobs.completed))}"


# What the runner reports progress to: rich's bars or the plain lines.
Display = Progress | PlainProgress
