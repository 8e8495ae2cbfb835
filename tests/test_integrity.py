"""Bit rot and damaged storage: checkpoints and stored results are verified on load, never reused unverified;
the store's write-ahead log is folded into results.db; full disks and damaged stores give one clear line."""

from __future__ import annotations

import dataclasses
import errno
import functools
import os
import re
import shutil
import sqlite3
import struct
import time
import zipfile
from contextlib import closing
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from robustbench_lite.cli import main
from robustbench_lite.errors import RblError
from robustbench_lite.runner import Cell
from robustbench_lite.store import CELL_FIELDS, ResultsStore

FAST = ["run", "--dataset", "moons", "--models", "mlp", "--defenses", "none", "--attacks", "fgsm", "--eps", "0,0.1",
        "--epochs", "1", "--n-examples", "64", "--device", "cpu", "--quiet"]


def run_fast(tmp_path: Path, capsys, *extra: str) -> tuple[int, str, list[str]]:
    """``rbl run`` on moons (mlp, 1 epoch) with its own cache and out folder; (exit status, stdout, stderr lines)."""
    status = main([*FAST, "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out"), *extra])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return status, captured.out, captured.err.splitlines()


def leaderboard(tmp_path: Path) -> str:
    return (tmp_path / "out" / "moons.csv").read_text()


def flip_weight_byte(checkpoint: Path) -> None:
    """Flip one byte in the middle of the largest tensor's data: the zip's CRC is not checked, so torch loads it."""
    with zipfile.ZipFile(checkpoint) as archive:
        member = max((info for info in archive.infolist() if "/data/" in info.filename), key=lambda i: i.file_size)
    raw = bytearray(checkpoint.read_bytes())
    name_length, extra_length = struct.unpack("<HH", raw[member.header_offset + 26 : member.header_offset + 30])
    raw[member.header_offset + 30 + name_length + extra_length + member.file_size // 2] ^= 0xFF
    checkpoint.write_bytes(bytes(raw))
    torch.load(checkpoint, weights_only=True)  # still loads: only a digest tells


def test_a_flipped_byte_in_a_checkpoint_is_warned_about_and_retrained_to_the_same_numbers(tmp_path, capsys):
    assert run_fast(tmp_path, capsys)[0] == 0
    first = leaderboard(tmp_path)
    (checkpoint,) = (tmp_path / "cache").glob("*.pt")
    flip_weight_byte(checkpoint)
    (tmp_path / "out" / "results.db").unlink()  # the cells would be reused from the store otherwise

    status, _, err = run_fast(tmp_path, capsys)
    assert status == 0
    (line,) = err
    assert line.startswith(f"rbl: warning: ignoring checkpoint {checkpoint}: it does not match its digest")
    assert line.endswith("; retraining")
    assert leaderboard(tmp_path) == first
    assert run_fast(tmp_path, capsys)[2] == []  # the retrained weights replaced the damaged file


def test_a_checkpoint_without_a_digest_is_unverified_and_retrained(tmp_path, capsys):
    assert run_fast(tmp_path, capsys)[0] == 0
    (checkpoint,) = (tmp_path / "cache").glob("*.pt")
    saved = torch.load(checkpoint, weights_only=True)
    del saved["sha256"]  # as robustbench_lite wrote checkpoints before it verified them
    torch.save(saved, checkpoint)
    status, _, err = run_fast(tmp_path, capsys)
    assert status == 0
    (line,) = err
    assert line.startswith(f"rbl: warning: ignoring checkpoint {checkpoint}: it was written without a digest")
    assert line.endswith("; retraining")


def test_a_full_disk_when_caching_weights_keeps_the_trained_model_and_evaluates_it(tmp_path, capsys, monkeypatch):
    assert run_fast(tmp_path / "reference", capsys)[0] == 0

    real_save = torch.save

    def full_disk(payload, file):  # as torch.save fails on a full disk: a RuntimeError while handling the OSError
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError:
            real_save(payload, file)
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from None

    monkeypatch.setattr(torch, "save", full_disk)
    status, _, err = run_fast(tmp_path, capsys)
    assert status == 0
    (line,) = err
    assert line.startswith(f"rbl: warning: could not cache the trained weights in {tmp_path / 'cache'}/mlp-moons-none-")
    assert line.endswith(": OSError: [Errno 28] No space left on device; evaluating them uncached")
    assert list((tmp_path / "cache").iterdir()) == []  # no temporary file left behind
    assert leaderboard(tmp_path) == leaderboard(tmp_path / "reference")


def damage_blob(db: Path, damage) -> None:
    """Rewrite the blob of the first stored clean result (eps 0) with ``damage(bytearray)``."""
    with sqlite3.connect(db) as connection:
        key, blob = connection.execute(
            "SELECT key, predictions FROM results WHERE status = 'ok' AND json_extract(key_json, '$.eps') = 0"
        ).fetchone()
        damaged = bytearray(blob)
        damage(damaged)
        connection.execute("UPDATE results SET predictions = ? WHERE key = ?", (bytes(damaged), key))
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"  # SQLite sees nothing wrong


def flip_a_byte(blob: bytearray) -> None:
    blob[len(blob) // 2 + 1] ^= 0x01  # the high byte of a label: from 0 or 1 to 256 or 257


def flip_a_label(blob: bytearray) -> None:
    blob[0] ^= 0x01  # a label 0 <-> 1: still in range, only the digest tells


def shorten(blob: bytearray) -> None:
    del blob[-2:]


@pytest.mark.parametrize("damage, problem", [
    (flip_a_byte, "do not match their digest"),
    (flip_a_label, "do not match their digest"),
    (shorten, "hold 63 labels, not 64"),
], ids=["byte flipped", "label flipped", "truncated"])
def test_a_damaged_stored_result_is_warned_about_and_recomputed_to_the_same_numbers(tmp_path, capsys, damage, problem):
    assert run_fast(tmp_path, capsys)[0] == 0
    first = leaderboard(tmp_path)
    damage_blob(tmp_path / "out" / "results.db", damage)

    status, _, err = run_fast(tmp_path, capsys)
    assert status == 0
    (line,) = err
    assert line.startswith("rbl: warning: ignoring stored result ") and problem in line
    assert line.endswith("; recomputing")
    assert leaderboard(tmp_path) == first
    assert run_fast(tmp_path, capsys)[2] == []  # the recomputed result replaced the damaged one


def test_stored_labels_outside_the_classes_are_not_reused(tmp_path):
    store = ResultsStore(tmp_path / "r.db")
    store.put({"a": 1}, torch.tensor([0, 1, 2]), 0.5)
    assert store.get({"a": 1}, num_classes=3).predictions.tolist() == [0, 1, 2]
    with pytest.warns(UserWarning, match=r"ignoring stored result .*: its labels 0\.\.2 are not all classes "
                                         r"0\.\.1 of this dataset; recomputing"):
        assert store.get({"a": 1}, num_classes=2) is None


def test_a_result_stored_without_a_digest_is_unverified_and_recomputed(tmp_path):
    store = ResultsStore(tmp_path / "r.db")
    store.put({"a": 1}, torch.tensor([0, 1]), 0.5)
    with sqlite3.connect(tmp_path / "r.db") as connection:  # as stores from before digests hold their results
        connection.execute("UPDATE results SET digest = NULL")
    with pytest.warns(UserWarning, match="stored without a digest"):
        assert store.get({"a": 1}, num_classes=2) is None


def test_results_db_alone_holds_every_cell_after_a_run(tmp_path, capsys):
    db = tmp_path / "out" / "results.db"
    (tmp_path / "out").mkdir()
    ResultsStore(db)
    # A reader left open (a monitoring script, a second run) keeps SQLite from folding the log in on its own.
    with closing(sqlite3.connect(db)) as reader:
        reader.execute("SELECT COUNT(*) FROM results").fetchall()
        assert run_fast(tmp_path, capsys)[0] == 0
        copied = tmp_path / "copy" / "results.db"
        copied.parent.mkdir()
        shutil.copy(db, copied)  # results.db only, as when merging shards
        with sqlite3.connect(copied) as connection:
            stored = connection.execute("SELECT COUNT(*) FROM results WHERE status = 'ok'").fetchone()[0]
        assert stored == ResultsStore(db).count() > 0
    assert main(["leaderboard", "--db", str(copied), "--format", "csv"]) == 0
    assert capsys.readouterr().out == leaderboard(tmp_path)


class _FullAfter(sqlite3.Connection):
    """A connection whose writes of results fail as SQLite's do on a full disk, once ``room`` results are stored."""

    room = 0

    def execute(self, sql: str, *parameters):  # type: ignore[override]
        if sql.startswith("INSERT OR REPLACE INTO results"):
            if _FullAfter.room <= 0:
                raise sqlite3.OperationalError("database or disk is full")
            _FullAfter.room -= 1
        return super().execute(sql, *parameters)


def test_a_disk_filling_mid_run_says_disk_full_and_keeps_what_is_stored(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(_FullAfter, "room", 1)  # the clean cell goes in, the attack's cell does not
    monkeypatch.setattr(sqlite3, "connect", functools.partial(sqlite3.connect, factory=_FullAfter))
    status, out, err = run_fast(tmp_path, capsys)
    db = tmp_path / "out" / "results.db"
    assert status == 2
    assert err == [f"rbl: error: results store {str(db)!r}: disk full (database or disk is full); the results "
                   "stored so far are kept: free some space and run the same command again to resume"]
    monkeypatch.undo()
    assert ResultsStore(db).count() == 1
    assert run_fast(tmp_path, capsys)[0] == 0


class _IOError(sqlite3.Connection):
    """A connection that fails as SQLite does when its shared-memory file cannot grow on a full disk."""

    def execute(self, sql: str, *parameters):  # type: ignore[override]
        raise sqlite3.OperationalError("disk I/O error")


@pytest.mark.parametrize("free, error", [
    (4096, "disk full (disk I/O error); the results stored so far are kept"),
    (10 << 30, "is not a usable SQLite database: disk I/O error"),  # plenty of space: an I/O error is no full disk
], ids=["almost no space", "plenty of space"])
def test_an_io_error_of_sqlite_on_a_full_disk_says_disk_full(tmp_path, monkeypatch, free, error):
    monkeypatch.setattr(sqlite3, "connect", functools.partial(sqlite3.connect, factory=_IOError))
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(free=free))
    with pytest.raises(RblError, match=re.escape(f"results store {str(tmp_path / 'r.db')!r}")) as raised:
        ResultsStore(tmp_path / "r.db")
    assert error in str(raised.value)


def test_a_disk_full_when_writing_the_leaderboard_is_one_error_line(tmp_path, capsys, monkeypatch):
    def full_disk(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as a write to a full disk fails: naming no file

    monkeypatch.setattr(Path, "write_text", full_disk)
    status, _, err = run_fast(tmp_path, capsys)
    assert status == 2
    assert err == [f"rbl: error: disk full writing '{tmp_path / 'out' / 'moons.md'}' (No space left on device); what "
                   "was written before is kept: free some space and run the same command again to resume"]
    assert not list((tmp_path / "out").glob(".*.tmp"))  # the temporary file is removed
    monkeypatch.undo()
    assert ResultsStore(tmp_path / "out" / "results.db").count() == 3  # every cell of the run, before its leaderboard


@pytest.mark.parametrize("damage, problem", [
    ("UPDATE runs SET cells = '[{\"model\": \"mlp\"'", "its cells column is not valid JSON (Expecting"),
    ("UPDATE runs SET metadata = 'not json'", "its metadata column is not valid JSON (Expecting value"),
    ("UPDATE runs SET cells = '[{\"model\": \"mlp\", \"defense\": \"none\"}]'",
     "a cell misses attack, eps, accuracy, correct, n, seconds, status"),
    ("UPDATE runs SET cells = '{}'", "its cells are not a list of cells"),
    ("UPDATE runs SET metadata = '{\"benchmark\": \"moons\"}'", "its metadata misses dataset, eps, seed, device, versions"),
    ("ALTER TABLE runs DROP COLUMN cells", "no such column: cells"),
], ids=["cells bad JSON", "metadata bad JSON", "cells miss columns", "cells not a list", "metadata miss fields",
        "table misses a column"])
def test_leaderboard_of_a_damaged_store_is_one_error_line(tmp_path, capsys, damage, problem):
    assert run_fast(tmp_path, capsys)[0] == 0
    db = tmp_path / "out" / "results.db"
    with sqlite3.connect(db) as connection:
        connection.execute(damage)
    status = main(["leaderboard", "--db", str(db)])
    captured = capsys.readouterr()
    assert status == 2 and "Traceback" not in captured.err
    (line,) = captured.err.splitlines()
    assert line.startswith(f"rbl: error: results store {str(db)!r}") and problem in line


def test_the_fields_a_stored_cell_must_hold_are_those_of_a_cell_without_a_default():
    required = [item.name for item in dataclasses.fields(Cell) if item.default is dataclasses.MISSING]
    assert list(CELL_FIELDS) == required


def test_stale_temporary_files_of_killed_runs_are_removed_on_the_next_start(tmp_path, capsys):
    (tmp_path / "cache").mkdir()
    (tmp_path / "out").mkdir()
    two_hours_ago = time.time() - 2 * 3600
    stale = [tmp_path / "cache" / f".mlp-moons-none-0123456789abcdef.pt.{'a' * 32}.tmp",
             tmp_path / "out" / f".moons.csv.{'b' * 32}.tmp"]
    kept = [tmp_path / "out" / f".moons.md.{'c' * 32}.tmp",  # fresh: maybe a concurrent run's, in flight
            tmp_path / "out" / ".notes.tmp", tmp_path / "cache" / "notes.txt.tmp"]  # not ours
    for path in stale + kept:
        path.write_text("half written")
    for path in stale + kept[1:]:
        os.utime(path, (two_hours_ago, two_hours_ago))
    assert run_fast(tmp_path, capsys)[0] == 0
    assert not [path for path in stale if path.exists()]
    assert all(path.exists() for path in kept)
