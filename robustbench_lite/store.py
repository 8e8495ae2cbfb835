"""The results store: an embedded SQLite database of finished work, from which leaderboards are rendered.

Two tables:

- ``results``: what one computation produced (clean predictions of a model, or its predictions
  under one attack at one eps), under a key of everything that determines it. A run looks every
  cell up before computing it, so the same command run again after a crash (even ``kill -9``)
  redoes only the missing work and, its numbers being seeded per cell, gives the same leaderboard.
  Failures are recorded too, with their error, but never reused: a later run retries them.
- ``runs``: what each run reported, its metadata and its leaderboard rows, updated after every
  (model, defense), so ``rbl leaderboard --db`` renders any run again without a model.

Every write is one short transaction; the database runs in WAL mode with a generous busy
timeout, so several processes (parallel runs, shards, Ray workers) can share one store. A run
ends by checkpointing the log into the database file, which then holds everything on its own.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import warnings
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import nearest_existing
from .errors import DiskFullError, UsageError

SCHEMA_VERSION = 1
BUSY_TIMEOUT_SECONDS = 300.0  # a writer waits this long for another one's transaction
# With less free than this, an I/O error of SQLite means a full disk: its files grow by pages and 32 KiB steps.
LOW_SPACE_BYTES = 1 << 20
# What the leaderboard reads of a stored run: every row's fields without a default (runner.Cell), and the metadata's.
CELL_FIELDS = ("model", "defense", "attack", "eps", "accuracy", "correct", "n", "seconds", "status")
METADATA_FIELDS = ("benchmark", "dataset", "eps", "seed", "device", "versions")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,          -- sha256 of key_json
    key_json TEXT NOT NULL,        -- everything that determines the result
    status TEXT NOT NULL,          -- ok or failed
    predictions BLOB,              -- per-sample predicted labels (int16), ok results only
    n INTEGER NOT NULL,
    seconds REAL NOT NULL,
    error TEXT NOT NULL DEFAULT '',
    created TEXT NOT NULL,
    forward_images INTEGER,        -- images passed forward through the model, scoring included
    backward_images INTEGER,       -- input gradients taken, in images
    digest TEXT,                   -- sha256 of key, n, predictions and notes (see _row_digest), ok results only
    notes TEXT                     -- the attack's warnings about this result, JSON {message: points}; NULL: none
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    benchmark TEXT NOT NULL,
    started TEXT NOT NULL,
    finished TEXT,                 -- NULL while running, or when the run was interrupted
    metadata TEXT NOT NULL,
    cells TEXT NOT NULL            -- the run's leaderboard rows, JSON
);
"""


def key_digest(key: dict[str, Any]) -> str:
    """The stable identity of a result key (order of dict entries does not matter)."""
    return hashlib.sha256(_canonical(key).encode()).hexdigest()


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))


def _row_digest(identity: str, n: int, blob: bytes, notes: str | None = None) -> str:
    """sha256 of a stored result's key digest, its number of points, its predictions' bytes and its notes
    (where it has any, so that results stored before notes keep their digests): a blob damaged on disk,
    moved under another key, or a warning removed, no longer matches."""
    return hashlib.sha256(f"{identity}:{n}:".encode() + blob + (f":{notes}".encode() if notes else b"")).hexdigest()


def _damage(identity: str, blob: bytes, n: int, digest: str | None, num_classes: int | None,
            notes: str | None) -> str | None:
    """What is wrong with a stored result (SQLite's own checks do not look inside blobs), or None."""
    if digest is None:
        return "it was stored without a digest by an older robustbench_lite, so it is unverified"
    if len(blob) != 2 * n:
        return f"its predictions hold {len(blob) / 2:g} labels, not {n}"
    if digest != _row_digest(identity, n, blob, notes):
        return "its predictions or warnings do not match their digest, so they were damaged on disk or altered"
    labels = np.frombuffer(blob, dtype="<i2")
    if num_classes is not None and len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        return f"its labels {labels.min()}..{labels.max()} are not all classes 0..{num_classes - 1} of this dataset"
    return None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class StoredResult:
    """A reusable result: per-sample predictions, the seconds and model passes it took to compute them,
    and the warnings its attack raised (message -> points concerned)."""

    predictions: torch.Tensor
    seconds: float
    forward_images: int | None = None
    backward_images: int | None = None
    notes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RunInfo:
    id: int
    benchmark: str
    started: str
    finished: str | None


class ResultsStore:
    """One SQLite results database; safe to share between processes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        blocking = nearest_existing(self.path.parent)
        if not blocking.is_dir():
            raise UsageError(f"results store {str(self.path)!r} cannot be created: {str(blocking)!r} is a regular "
                             "file, not a folder")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as connection:
                connection.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
                connection.executescript(_SCHEMA)
                columns = {row[1] for row in connection.execute("PRAGMA table_info(results)")}
                # stores from before the pass counts, the digests, and the notes
                for column, kind in (("forward_images", "INTEGER"), ("backward_images", "INTEGER"), ("digest", "TEXT"),
                                     ("notes", "TEXT")):
                    if column not in columns:
                        connection.execute(f"ALTER TABLE results ADD COLUMN {column} {kind}")
                version = connection.execute("PRAGMA user_version").fetchone()[0]
                if version == 0:
                    connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                elif version != SCHEMA_VERSION:
                    raise UsageError(f"results store {str(self.path)!r} has schema {version}, "
                                     f"this robustbench_lite reads {SCHEMA_VERSION}; use another --db")
        except sqlite3.DatabaseError as error:
            raise UsageError(f"results store {str(self.path)!r} is not a usable SQLite database: {error}") from None

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection whose ``with`` block is one transaction, closed afterwards."""
        try:
            with closing(sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_SECONDS)) as connection:
                with connection:
                    yield connection
        except sqlite3.OperationalError as error:
            if not self._for_want_of_space(error):
                raise
            raise DiskFullError(f"results store {str(self.path)!r}: disk full ({error}); the results stored so far "
                                "are kept: free some space and run the same command again to resume") from None

    def _for_want_of_space(self, error: sqlite3.OperationalError) -> bool:
        """Whether SQLite failed for want of disk space: SQLITE_FULL, or an I/O error (as when its
        shared-memory file cannot grow) on a disk with less than LOW_SPACE_BYTES free."""
        if "database or disk is full" in str(error):
            return True
        if "disk I/O error" not in str(error):
            return False
        try:
            return shutil.disk_usage(nearest_existing(self.path)).free < LOW_SPACE_BYTES
        except OSError:
            return False

    # -- results ---------------------------------------------------------------------------

    def get(self, key: dict[str, Any], num_classes: int | None = None) -> StoredResult | None:
        """The finished result stored under ``key``, or None (also for a recorded failure).

        A result that fails verification (its digest, its length, its labels against ``num_classes``
        when given) is None too, with a one-line warning: it is recomputed, never reused.
        """
        identity = key_digest(key)
        with self._connect() as connection:
            row = connection.execute(
                "SELECT predictions, n, seconds, forward_images, backward_images, digest, notes FROM results "
                "WHERE key = ? AND status = 'ok'", (identity,)
            ).fetchone()
        if row is None:
            return None
        blob, n, seconds, forward_images, backward_images, stored_digest, notes = row
        problem = _damage(identity, blob, n, stored_digest, num_classes, notes)
        if problem is not None:
            warnings.warn(f"ignoring stored result {identity[:12]} in results store {str(self.path)!r}: "
                          f"{problem}; recomputing", stacklevel=2)
            return None
        predictions = torch.from_numpy(np.frombuffer(blob, dtype="<i2").astype(np.int64))
        return StoredResult(predictions, float(seconds), forward_images, backward_images, json.loads(notes or "{}"))

    def put(self, key: dict[str, Any], predictions: torch.Tensor, seconds: float,
            forward_images: int | None = None, backward_images: int | None = None,
            notes: dict[str, int] | None = None) -> None:
        """Record a finished result (replacing an earlier failure under the same key), with its attack's warnings."""
        labels = predictions.detach().cpu().numpy()
        if len(labels) and (labels.min() < np.iinfo(np.int16).min or labels.max() > np.iinfo(np.int16).max):
            raise ValueError("predicted labels do not fit the store's 16-bit labels")
        blob = labels.astype("<i2").tobytes()
        self._insert(key, "ok", blob, len(labels), seconds, "", forward_images, backward_images,
                     _canonical(notes) if notes else None)

    def put_failure(self, key: dict[str, Any], n: int, seconds: float, error: str) -> None:
        """Record that computing ``key`` failed, and why; a later run tries again."""
        self._insert(key, "failed", None, n, seconds, error, None, None, None)

    def _insert(self, key: dict[str, Any], status: str, blob: bytes | None, n: int, seconds: float, error: str,
                forward_images: int | None, backward_images: int | None, notes: str | None) -> None:
        identity = key_digest(key)
        digest = _row_digest(identity, n, blob, notes) if blob is not None else None
        with self._connect() as connection:
            connection.execute(
                "INSERT OR REPLACE INTO results (key, key_json, status, predictions, n, seconds, error, created, "
                "forward_images, backward_images, digest, notes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (identity, _canonical(key), status, blob, n, float(seconds), error, _now(),
                 forward_images, backward_images, digest, notes),
            )

    def checkpoint(self) -> None:
        """Fold the write-ahead log into the database file and empty it, so that the file alone holds every
        result: copied without its ``-wal`` (to merge shards, say), it loses nothing. SQLite does this
        itself only when the last connection closes, which a reader left open elsewhere prevents."""
        with self._connect() as connection:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def count(self, status: str = "ok") -> int:
        with self._connect() as connection:
            return connection.execute("SELECT COUNT(*) FROM results WHERE status = ?", (status,)).fetchone()[0]

    # -- runs ------------------------------------------------------------------------------

    def start_run(self, benchmark: str, metadata: dict[str, Any]) -> int:
        with self._connect() as connection:
            cursor = connection.execute(
                "INSERT INTO runs (benchmark, started, metadata, cells) VALUES (?, ?, ?, '[]')",
                (benchmark, _now(), json.dumps(metadata, default=str)),
            )
            return int(cursor.lastrowid)

    def update_run(self, run_id: int, metadata: dict[str, Any], cells: list[dict[str, Any]], finished: bool) -> None:
        """Replace the run's metadata and rows with the current ones; ``finished`` stamps its end."""
        with self._connect() as connection:
            connection.execute(
                "UPDATE runs SET metadata = ?, cells = ?, finished = ? WHERE id = ?",
                (json.dumps(metadata, default=str), json.dumps(cells, default=str), _now() if finished else None, run_id),
            )

    def runs(self, benchmark: str | None = None) -> list[RunInfo]:
        """The recorded runs, oldest first (of one benchmark when given)."""
        query, parameters = "SELECT id, benchmark, started, finished FROM runs", ()
        if benchmark is not None:
            query, parameters = query + " WHERE benchmark = ?", (benchmark,)
        return [RunInfo(*row) for row in self._read(query + " ORDER BY id", parameters)]

    def _read(self, query: str, parameters: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """The rows of a query of the runs, or a UsageError naming the store where its tables are damaged."""
        try:
            with self._connect() as connection:
                return connection.execute(query, parameters).fetchall()
        except sqlite3.DatabaseError as error:
            raise UsageError(f"results store {str(self.path)!r} cannot be read: {error}") from None

    def load_run(
        self, run_id: int | None = None, benchmark: str | None = None
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """A run's leaderboard rows and metadata: ``run_id``, else the latest run (of ``benchmark``)."""
        runs = self.runs(benchmark)
        if run_id is not None:
            runs = [run for run in runs if run.id == run_id]
        if not runs:
            what = f"run {run_id}" if run_id is not None else f"run of benchmark {benchmark!r}" if benchmark else "run"
            known = ", ".join(f"{run.id} ({run.benchmark})" for run in self.runs()) or "none"
            raise UsageError(f"no {what} in results store {str(self.path)!r}; recorded runs: {known}")
        [(metadata_text, cells_text)] = self._read("SELECT metadata, cells FROM runs WHERE id = ?", (runs[-1].id,))
        metadata = self._parsed(runs[-1].id, "metadata", metadata_text)
        cells = self._parsed(runs[-1].id, "cells", cells_text)
        self._check_run(runs[-1].id, metadata, cells)
        metadata["store"] = {"path": str(self.path), "run": runs[-1].id, "finished": runs[-1].finished}
        return cells, metadata

    def _damaged(self, run_id: int, problem: str) -> UsageError:
        return UsageError(f"results store {str(self.path)!r}: run {run_id} is damaged: {problem}; "
                          "render another --run, or run its command again to record it anew")

    def _parsed(self, run_id: int, what: str, text: Any) -> Any:
        try:
            return json.loads(text)
        except (TypeError, ValueError) as error:
            raise self._damaged(run_id, f"its {what} column is not valid JSON ({error})") from None

    def _check_run(self, run_id: int, metadata: Any, cells: Any) -> None:
        """Refuse metadata and rows that the leaderboard could not be rendered from."""
        if not isinstance(metadata, dict):
            raise self._damaged(run_id, "its metadata is not a JSON object")
        missing = [name for name in METADATA_FIELDS if name not in metadata]
        if missing:
            raise self._damaged(run_id, f"its metadata misses {', '.join(missing)}")
        if not isinstance(cells, list) or not all(isinstance(cell, dict) for cell in cells):
            raise self._damaged(run_id, "its cells are not a list of cells")
        for cell in cells:
            missing = [name for name in CELL_FIELDS if name not in cell]
            if missing:
                raise self._damaged(run_id, f"a cell misses {', '.join(missing)}")


def merged_run(
    paths: list[Path], benchmark: str | None = None, run_id: int | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The leaderboard rows and metadata of one run, or of the shards of one run spread over several stores.

    With several stores, the latest run of ``benchmark`` (default: of the first store's latest
    run) is taken from each; rows are concatenated (a (model, defense, attack, eps) cell found
    twice is kept once) and the per-row metadata are united. The runs must share the dataset,
    the number of test points and the eps grid, or their numbers could not share a table.
    """
    if not paths:
        raise UsageError("no results store given; pass --db PATH (several to merge shards)")
    if run_id is not None and len(paths) > 1:
        raise UsageError("--run picks a run of one store; merging several stores takes each one's latest run")
    stores = [ResultsStore(path) for path in paths]
    cells, metadata = stores[0].load_run(run_id, benchmark)
    if len(stores) == 1:
        return cells, metadata
    sources = [metadata.pop("store")]
    shards = [metadata.get("shard")]
    seen = {_cell_identity(cell) for cell in cells}
    for store in stores[1:]:
        more_cells, more = store.load_run(None, metadata["benchmark"])
        for setting in ("dataset", "eps"):
            if _canonical(more.get(setting)) != _canonical(metadata.get(setting)):
                raise UsageError(f"cannot merge {str(store.path)!r}: its run has another {setting} than "
                                 f"{str(stores[0].path)!r}'s")
        sources.append(more.pop("store"))
        shards.append(more.get("shard"))
        for section in ("training", "evaluations"):
            metadata.setdefault(section, {}).update(more.get(section, {}))
        for cell in more_cells:
            if _cell_identity(cell) not in seen:
                seen.add(_cell_identity(cell))
                cells.append(cell)
    metadata.pop("shard", None)
    if any(shards):  # which shards of how many are here, so that a merge missing one is marked partial
        metadata["shards_merged"] = {"count": max(shard["count"] for shard in shards if shard),
                                     "indices": sorted({shard["index"] for shard in shards if shard})}
    metadata["merged_from"] = sources
    return cells, metadata


def _cell_identity(cell: dict[str, Any]) -> tuple[Any, ...]:
    return cell["model"], cell["defense"], cell["attack"], float(cell["eps"])
