"""The results store: resumable runs, nothing lost on kill -9, concurrent writers, shards merged."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from robustbench_lite import run
from robustbench_lite.cli import main
from robustbench_lite.errors import UsageError
from robustbench_lite.leaderboard import ranking, wilson_interval
from robustbench_lite.store import ResultsStore, key_digest, merged_run

TINY = dict(dataset="synthetic[n_train=256,n_test=48]", models="cnn", defenses="none,at-fgsm", attacks="fgsm,pgd",
            eps="0,0.1,0.3", epochs=1, device="cpu")
COMPARED = ["model", "defense", "attack", "eps", "accuracy", "correct", "n", "status", "evaluation"]


def test_results_round_trip_and_failures_are_never_reused(tmp_path):
    store = ResultsStore(tmp_path / "r.db")
    key = {"model": "m", "eps": 0.1, "attack": {"name": "pgd", "options": {"steps": 10}}}
    assert store.get(key) is None
    store.put_failure(key, 3, 0.5, "RuntimeError: boom")
    assert store.get(key) is None and store.count("failed") == 1
    store.put(key, torch.tensor([3, -1, 9]), 1.25)
    reordered = {"attack": {"options": {"steps": 10}, "name": "pgd"}, "eps": 0.1, "model": "m"}
    assert key_digest(reordered) == key_digest(key)
    found = ResultsStore(tmp_path / "r.db").get(reordered)  # a second connection, as a resumed run has
    assert found.predictions.tolist() == [3, -1, 9] and found.predictions.dtype == torch.int64
    assert found.seconds == 1.25 and store.count("failed") == 0
    assert store.get({**key, "eps": 0.2}) is None


def test_a_file_that_is_not_a_store_is_refused_in_one_line(tmp_path):
    bogus = tmp_path / "bogus.db"
    bogus.write_text("not a database at all, just text" * 100)
    with pytest.raises(UsageError, match="not a usable SQLite database"):
        ResultsStore(bogus)


def test_wilson_interval_matches_the_closed_form_values():
    # Textbook values of the 95% Wilson score interval.
    assert wilson_interval(0, 10) == pytest.approx((0.0, 27.75), abs=0.01)
    assert wilson_interval(5, 10) == pytest.approx((23.66, 76.34), abs=0.01)
    assert wilson_interval(50, 100) == pytest.approx((40.38, 59.62), abs=0.01)
    low, high = wilson_interval(1000, 1000)
    assert high == 100.0 and low == pytest.approx(99.62, abs=0.01)
    with pytest.raises(ValueError):
        wilson_interval(0, 0)


def test_a_second_run_reuses_every_cell_and_gives_the_same_numbers(tmp_path):
    first = run(**TINY, cache_dir=tmp_path / "c", db=tmp_path / "r.db")
    # Per model: clean, 2 attacks x 2 eps, the large-eps probe's 2 attacks; the probe's clean
    # predictions (its 64 points are all 48 here) are the clean cell's, reused at once.
    work = first.attrs["metadata"]["work"]
    assert (work["cells_computed"], work["cells_reused"]) == (2 * (1 + 2 * 2 + 2), 2)
    second = run(**TINY, cache_dir=tmp_path / "c", db=tmp_path / "r.db")
    assert second.attrs["metadata"]["work"] == {**work, "cells_computed": 0, "cells_reused": 16}
    pd.testing.assert_frame_equal(first[COMPARED], second[COMPARED])
    # --no-cache recomputes everything, and the numbers agree again (CPU runs are deterministic).
    third = run(**TINY, cache_dir=tmp_path / "c", db=tmp_path / "r.db", use_cache=False)
    assert third.attrs["metadata"]["work"]["cells_reused"] == 0
    pd.testing.assert_frame_equal(first[COMPARED], third[COMPARED])


def test_only_missing_cells_are_computed_and_other_settings_are_not_reused(tmp_path):
    full = run(**TINY, cache_dir=tmp_path / "c", db=tmp_path / "r.db")
    with sqlite3.connect(tmp_path / "r.db") as connection:  # lose two results, as a crash would
        connection.execute("DELETE FROM results WHERE key IN (SELECT key FROM results ORDER BY rowid DESC LIMIT 2)")
    resumed = run(**TINY, cache_dir=tmp_path / "c", db=tmp_path / "r.db")
    assert resumed.attrs["metadata"]["work"]["cells_computed"] == 2
    pd.testing.assert_frame_equal(full[COMPARED], resumed[COMPARED])
    other_seed = run(**{**TINY, "defenses": "none"}, seed=1, cache_dir=tmp_path / "c", db=tmp_path / "r.db")
    work = other_seed.attrs["metadata"]["work"]
    assert (work["cells_computed"], work["cells_reused"]) == (7, 1)  # 1: the probe's clean predictions


def test_leaderboard_command_renders_a_stored_run_as_the_run_wrote_it(tmp_path, capsys):
    out = tmp_path / "lb"
    run(**TINY, cache_dir=tmp_path / "c", out=out, name="tiny")
    assert main(["leaderboard", "--db", str(out / "results.db"), "--out", str(tmp_path / "again")]) == 0
    for suffix in ("md", "csv"):
        assert (tmp_path / "again" / f"tiny.{suffix}").read_text() == (out / f"tiny.{suffix}").read_text()
    capsys.readouterr()
    assert main(["leaderboard", "--db", str(out / "results.db"), "--format", "csv"]) == 0
    assert capsys.readouterr().out == (out / "tiny.csv").read_text()
    sidecar = json.loads((out / "tiny.json").read_text())
    cell = next(c for c in sidecar["cells"] if c["attack"] == "fgsm" and c["eps"] == 0.1 and c["defense"] == "none")
    assert (cell["ci_low"], cell["ci_high"]) == pytest.approx(wilson_interval(cell["correct"], cell["n"]))
    assert "±" in (out / "tiny.md").read_text()
    status = main(["leaderboard", "--db", str(out / "results.db"), "--run", "99"])
    assert status == 2 and "no run 99" in capsys.readouterr().err


def test_shards_merge_into_the_unsharded_leaderboard(tmp_path, capsys):
    settings = {**TINY, "defenses": "none,at-fgsm,at-pgd", "cache_dir": tmp_path / "c"}
    whole = run(**settings, out=tmp_path / "whole", name="tiny")
    shards = [run(**settings, shard=f"{index}/2", db=tmp_path / f"shard{index}.db", name="tiny") for index in (1, 2)]
    assert sorted(set(shards[0]["defense"])) == ["at-pgd", "none"] and set(shards[1]["defense"]) == {"at-fgsm"}
    status = main(["leaderboard", "--db", str(tmp_path / "shard1.db"), "--db", str(tmp_path / "shard2.db"),
                   "--out", str(tmp_path / "merged")])
    assert status == 0
    assert (tmp_path / "merged" / "tiny.csv").read_text() == (tmp_path / "whole" / "tiny.csv").read_text()
    merged_cells, metadata = merged_run([tmp_path / "shard1.db", tmp_path / "shard2.db"])
    assert len(merged_cells) == len(whole) and len(metadata["merged_from"]) == 2
    # one shard alone, or a merge missing one, is partial: flagged, and refused without --allow-partial
    assert "partial-run" in ranking(shards[0])["flags"].iloc[0]
    assert main(["leaderboard", "--db", str(tmp_path / "shard1.db")]) == 2
    assert "shard 1 of 2, which holds only its share of the trained models" in capsys.readouterr().err
    assert main(["leaderboard", "--db", str(tmp_path / "shard1.db"), "--db", str(tmp_path / "shard1.db")]) == 2
    assert "merged without shard(s) 2 of 2" in capsys.readouterr().err
    with pytest.raises(UsageError, match="invalid shard"):
        run(**settings, shard="3/2")
    with pytest.raises(UsageError, match="--shard 4/4 gets no work: this run has only 3 trained model"):
        run(**settings, shard="4/4", db=tmp_path / "empty.db")
    assert not (tmp_path / "empty.db").exists()


def test_concurrent_writers_do_not_corrupt_the_store(tmp_path):
    script = """
import sys, torch
from robustbench_lite.store import ResultsStore
store = ResultsStore(sys.argv[1])
run = store.start_run("w" + sys.argv[2], {})
for index in range(150):
    store.put({"writer": sys.argv[2], "index": index}, torch.arange(100) % 7, 0.01)
    store.update_run(run, {"step": index}, [{"index": index}], finished=index == 149)
"""
    writers = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "r.db"), str(w)]) for w in range(3)]
    assert [writer.wait(timeout=300) for writer in writers] == [0, 0, 0]
    store = ResultsStore(tmp_path / "r.db")
    assert store.count() == 450
    assert all(store.get({"writer": str(w), "index": i}) is not None for w in range(3) for i in (0, 149))
    assert [run.finished is not None for run in store.runs()] == [True] * 3
    with sqlite3.connect(tmp_path / "r.db") as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def _rbl(cwd: Path, args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RBL_CACHE_DIR": str(cwd / "cache")}
    cwd.mkdir(exist_ok=True)
    return subprocess.Popen([sys.executable, "-m", "robustbench_lite", *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _stored(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as connection:
            return connection.execute("SELECT COUNT(*) FROM results WHERE status = 'ok'").fetchone()[0]
    except sqlite3.Error:  # not created yet
        return 0


def _numbers_and_settings(markdown: list[str]) -> list[str]:
    """A leaderboard's Markdown less what says how this run got there: the cells it reused and the
    last column of the settings table (weights loaded from the cache or trained in this run)."""
    table = markdown.index("## Settings") + 1
    while not markdown[table].startswith("|"):
        table += 1
    kept = []
    for index, line in enumerate(markdown):
        if line.startswith("- cells: "):
            continue
        in_settings_table = index >= table and all(row.startswith("|") for row in markdown[table:index + 1])
        kept.append(line.rsplit("|", 2)[0] if in_settings_table else line)
    return kept


def test_kill_9_mid_matrix_then_the_same_command_resumes_and_equals_an_uninterrupted_run(tmp_path):
    # Slow enough cells (PGD-200 on all 1000 moons points) that the kill lands mid-matrix.
    args = ["run", "--epochs", "2", "--quiet", "--device", "cpu", "--defenses", "none,at-fgsm,at-pgd",
            "--attacks", "fgsm,pgd[steps=200]", "--out", "lb"]
    total = 3 * (1 + 2 * 5)  # per model: clean + 2 attacks x eps 0.1..0.5

    killed = _rbl(tmp_path / "killed", args)
    deadline = time.monotonic() + 600
    while _stored(tmp_path / "killed" / "lb" / "results.db") < 3:
        assert killed.poll() is None, "the run ended before it could be killed: " + killed.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    done_before = _stored(tmp_path / "killed" / "lb" / "results.db")
    assert 3 <= done_before < total

    resumed = _rbl(tmp_path / "killed", args)
    whole = _rbl(tmp_path / "whole", args)
    assert resumed.wait(timeout=900) == 0, resumed.stderr.read().decode()
    assert whole.wait(timeout=900) == 0, whole.stderr.read().decode()
    work = json.loads((tmp_path / "killed" / "lb" / "moons.json").read_text())["work"]
    assert work["cells_reused"] >= done_before and work["cells_computed"] + work["cells_reused"] == total
    assert (tmp_path / "killed" / "lb" / "moons.csv").read_text() == (tmp_path / "whole" / "lb" / "moons.csv").read_text()
    resumed_md, whole_md = ((tmp_path / run / "lb" / "moons.md").read_text().splitlines() for run in ("killed", "whole"))
    assert _numbers_and_settings(resumed_md) == _numbers_and_settings(whole_md)
    assert f"- cells: {work['cells_computed']} computed in this run, {work['cells_reused']} reused" in "\n".join(resumed_md)


def test_the_same_data_read_from_another_path_reuses_weights_and_results(tmp_path, monkeypatch):
    import numpy as np

    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (64, 20, 20, 1), dtype=np.uint8), "y_train": rng.integers(0, 3, 64),
              "x_test": rng.integers(0, 256, (16, 20, 20, 1), dtype=np.uint8), "y_test": rng.integers(0, 3, 16)}
    (tmp_path / "data").mkdir()
    np.savez(tmp_path / "data" / "tiny.npz", **arrays)
    settings = dict(models="cnn", defenses="none", attacks="fgsm", eps="0,0.1", epochs=1, device="cpu",
                    cache_dir=tmp_path / "c", db=tmp_path / "r.db")
    first = run(dataset=f"npz[path={tmp_path / 'data' / 'tiny.npz'}]", **settings)
    monkeypatch.chdir(tmp_path / "c")
    second = run(dataset="npz[path=../data/./tiny.npz]", **settings)
    assert second.attrs["metadata"]["training"]["cnn/none"]["from_cache"]
    assert second.attrs["metadata"]["work"]["cells_computed"] == 0
    pd.testing.assert_frame_equal(first[COMPARED], second[COMPARED])


def test_each_cell_counts_its_model_passes_and_reused_cells_keep_them(tmp_path):
    settings = dict(TINY, defenses="none", attacks="fgsm,pgd[steps=7,restarts=2]", cache_dir=tmp_path / "c",
                    db=tmp_path / "r.db")
    frame = run(**settings)
    candidates = int(frame.query("attack == 'fgsm' and eps == 0")["correct"].iloc[0])  # clean-correct points
    cell = {(row.attack, row.eps): row for row in frame.itertuples()}
    assert (cell["fgsm", 0.0].forward_images, cell["fgsm", 0.0].backward_images) == (48, 0)
    # FGSM: one gradient per clean-correct point, then the scoring pass.
    assert (cell["fgsm", 0.1].forward_images, cell["fgsm", 0.1].backward_images) == (2 * candidates, candidates)
    # PGD-7 with 2 restarts: 7 gradients per restart, one pass to pick the better restart each, scoring;
    # at eps = 0.3 only on the points it left correct at 0.1.
    pgd = "pgd[steps=7,restarts=2]"
    assert cell[pgd, 0.1].backward_images == 14 * candidates
    assert cell[pgd, 0.1].forward_images == (14 + 2 + 1) * candidates
    assert 0 < cell[pgd, 0.1].correct < candidates
    assert cell[pgd, 0.3].backward_images == 14 * cell[pgd, 0.1].correct
    assert cell["worst-case", 0.1].backward_images is None  # computed from the others, no passes of its own
    again = run(**settings)
    assert again.attrs["metadata"]["work"]["cells_computed"] == 0
    assert list(again["backward_images"]) == list(frame["backward_images"])
    assert again.attrs["metadata"]["work"]["backward_images"] == frame.attrs["metadata"]["work"]["backward_images"]


def test_a_store_from_before_the_pass_counts_and_digests_is_upgraded_in_place(tmp_path):
    with sqlite3.connect(tmp_path / "old.db") as connection:
        connection.executescript(
            "CREATE TABLE results (key TEXT PRIMARY KEY, key_json TEXT NOT NULL, status TEXT NOT NULL, "
            "predictions BLOB, n INTEGER NOT NULL, seconds REAL NOT NULL, error TEXT NOT NULL DEFAULT '', "
            "created TEXT NOT NULL); PRAGMA user_version=1;"
        )
        connection.execute("INSERT INTO results VALUES (?, '{}', 'ok', ?, 2, 0.5, '', 'then')",
                           (key_digest({"a": 1}), torch.tensor([4, 2]).numpy().astype("<i2").tobytes()))
    store = ResultsStore(tmp_path / "old.db")
    with pytest.warns(UserWarning, match="stored without a digest"):
        assert store.get({"a": 1}) is None  # unverified: recomputed (and then stored with a digest), never reused
    store.put({"a": 1}, torch.tensor([4, 2]), 0.5)
    assert store.get({"a": 1}).predictions.tolist() == [4, 2]
    store.put({"a": 2}, torch.tensor([1]), 0.1, forward_images=3, backward_images=2)
    assert store.get({"a": 2}).backward_images == 2


def test_pass_totals_are_unknown_when_a_reused_result_was_stored_without_counts(tmp_path):
    settings = dict(TINY, defenses="none", attacks="fgsm", cache_dir=tmp_path / "c", db=tmp_path / "r.db")
    assert run(**settings).attrs["metadata"]["work"]["backward_images"] > 0
    with sqlite3.connect(tmp_path / "r.db") as connection:  # as a store written before passes were counted
        connection.execute("UPDATE results SET forward_images = NULL, backward_images = NULL WHERE rowid = 2")
    work = run(**settings).attrs["metadata"]["work"]
    assert work["cells_computed"] == 0 and work["forward_images"] is None and work["backward_images"] is None
