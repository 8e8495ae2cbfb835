"""`rbl lsa` end to end, and its bad input: one line on stderr and exit status 2."""

import pandas as pd
import pytest

from robustbench_lite.cli import main

pytest.importorskip("rbl_lsa", reason="rbl-lsa is not installed: pip install -e plugins/rbl-lsa")

TINY = ["--dataset", "synthetic[n_train=256,n_test=64]", "--model", "cnn", "--epochs", "1", "--device", "cpu", "--quiet"]


def run_cli(capsys, *args):
    status = main(list(args))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_lsa_writes_the_table_report_and_plot_and_names_the_mvl_layers(tmp_path, capsys):
    status, out, err = run_cli(capsys, "lsa", *TINY, "--cache-dir", str(tmp_path / "cache"), "--out",
                               str(tmp_path / "out"), "--eta", "0")
    assert status == 0, err
    stem = tmp_path / "out" / "lsa-cnn-none-synthetic"
    table = pd.read_csv(f"{stem}.csv")
    assert list(table.columns) == ["layer", "type", "mean_cm", "std_cm", "mvl"]
    assert table["layer"].tolist() == ["net.0", "net.2", "net.5", "net.9", "net.11"]
    assert (table["mean_cm"] > 0).all() and (table["std_cm"] >= 0).all()
    mvl = table.loc[table["mvl"], "layer"].tolist()
    assert mvl, "eta = 0 flags at least the layer furthest above the mean"
    assert f"MVL: {', '.join(mvl)}" in out
    report = stem.with_suffix(".md").read_text()
    assert f"MVL: {', '.join(mvl)}" in report and "| net.11" in report and "pgd" in report
    assert stem.with_suffix(".png").read_bytes().startswith(b"\x89PNG")
    for suffix in ("csv", "md", "png"):
        assert f"wrote {stem}.{suffix}" in out


def test_lsa_help_lists_its_options(capsys):
    status, out, _ = run_cli(capsys, "lsa", "--help")
    assert status == 0
    for option in ("--model", "--defense", "--attack", "--eps", "--dataset", "--data-dir", "--n-examples",
                   "--epochs", "--lr-schedule", "--early-stop", "--optimizer", "--seed", "--device", "--cache-dir",
                   "--eta", "--out"):
        assert option in out


def test_lsa_analyses_the_model_rbl_run_trained_with_a_schedule_and_an_optimizer(tmp_path, capsys):
    """The same training options as rbl run (one declaration), so the same cached weights: nothing is retrained."""
    training = ["--epochs", "2", "--lr-schedule", "cosine", "--optimizer", "sgd[lr=0.05]", "--device", "cpu",
                "--cache-dir", str(tmp_path / "cache")]
    data = ["--dataset", "synthetic[n_train=256,n_test=64]", "--models", "cnn", "--defenses", "none"]
    assert main(["run", *data, "--attacks", "fgsm", "--eps", "0,0.1", *training, "--quiet",
                 "--out", str(tmp_path / "lb")]) == 0
    checkpoints = sorted((tmp_path / "cache").rglob("*.pt"))
    assert len(checkpoints) == 1
    stamp = checkpoints[0].stat().st_mtime_ns
    status, _, err = run_cli(capsys, "lsa", *data, *training, "--quiet", "--out", str(tmp_path / "out"))
    assert status == 0, err
    assert sorted((tmp_path / "cache").rglob("*.pt")) == checkpoints and checkpoints[0].stat().st_mtime_ns == stamp


@pytest.mark.parametrize("extra, message", [
    (["--eps", "1.5"], "--eps must lie in (0, 1]"),
    (["--eps", "0"], "--eps must lie in (0, 1]"),
    (["--attack", "pgdd"], "unknown attack 'pgdd' (did you mean 'pgd'?)"),
    (["--defense", "at-pgd-lr[reg=l9]"], "must be one of l0, l1, l2"),
    (["--n-examples", "0"], "--n-examples must be a positive"),
    (["--eta", "nan"], "--eta must be a finite number"),
    (["--model", "mlp"], "model 'mlp' takes flat feature vectors"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, extra, message):
    status, _, err = run_cli(capsys, "lsa", *TINY, "--out", str(tmp_path), "--cache-dir", str(tmp_path), *extra)
    assert status == 2
    assert err.startswith("rbl: error: ") and message in err and err.count("\n") == 1
