"""A new user's first commands: the dataset follows from the models, and errors say how to fix them."""

from __future__ import annotations

import re
import urllib.error
import urllib.request

import pytest

from robustbench_lite import UsageError, default_registry
from robustbench_lite.cli import main
from robustbench_lite.interfaces import ModelBuilder
from robustbench_lite.plan import DEFAULT_DATASET, choose_dataset


def builders(*specs: str) -> list[ModelBuilder]:
    return [default_registry().create("models", spec) for spec in specs]


@pytest.mark.parametrize("models, dataset", [
    (["vgg19"], "cifar10"), (["resnet18"], "cifar10"), (["wrn-28-10"], "cifar10"), (["lenet"], "cifar10"),
    (["cnn"], "mnist"), (["mlp"], "moons"), (["vgg19", "lenet"], "cifar10"),
])
def test_the_dataset_follows_from_the_models(models, dataset):
    assert choose_dataset(None, builders(*models)).spec == dataset


def test_a_given_dataset_wins_over_the_models():
    assert choose_dataset("mnist", builders("vgg19")).spec == "mnist"


def test_models_meant_for_nothing_in_particular_get_the_default():
    class Anything(ModelBuilder):
        name = "anything"
        description = "a third-party model that names no dataset"

        def build(self, input_shape, num_classes):
            raise NotImplementedError

    assert choose_dataset(None, [Anything()]).spec == DEFAULT_DATASET == "moons"


def test_models_meant_for_different_datasets_are_one_clear_error():
    with pytest.raises(UsageError, match=r"different datasets \(vgg19 -> cifar10, cnn -> mnist\); choose one with "
                                         r"--dataset \(cifar10 or mnist\)"):
        choose_dataset(None, builders("vgg19", "cnn"))


@pytest.fixture
def offline(monkeypatch):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_the_headline_command_asks_for_cifar10_files_when_offline(tmp_path, capsys, offline):
    status = main(["run", "--models", "vgg19", "--attacks", "fgsm,pgd", "--data-dir", str(tmp_path / "data"),
                   "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1
    assert err[0].startswith(f"rbl: error: CIFAR-10 not found in {tmp_path / 'data'}: put cifar-10-python.tar.gz")
    assert "run the same command once on a machine with internet" in err[0]
    assert not (tmp_path / "out" / "results.db").exists()  # no store opened before the input decided it


def test_a_shape_mismatch_names_the_dataset_in_use_and_the_fix(tmp_path, capsys, shared_data):
    status = main(["run", "--models", "vgg19", "--dataset", "mnist", "--data-dir", str(shared_data),
                   "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert err.endswith("that is dataset 'mnist': model 'vgg19' is meant for --dataset cifar10")


def test_eps_grids_and_budgets_take_fractions():
    from robustbench_lite.runner import parse_eps

    assert parse_eps("0,2/255, 8/255", default=()) == [0.0, 2 / 255, 8 / 255]
    assert default_registry().create("defenses", "at-fgsm[alpha=1/2]").alpha == 0.5
    with pytest.raises(UsageError, match=r"invalid epsilon '1/0': not a number; give values in \[0, 1\] such as"):
        parse_eps("1/0", default=())
    with pytest.raises(UsageError, match=r"invalid epsilon '3/2': must lie in \[0, 1\]"):
        parse_eps("3/2", default=())


def test_the_cli_takes_train_eps_as_a_fraction(tmp_path, capsys):
    import json

    status = main(["run", "--models", "mlp", "--defenses", "at-fgsm", "--attacks", "fgsm", "--eps", "0,8/255",
                   "--train-eps", "8/255", "--epochs", "1", "--n-examples", "8", "--device", "cpu", "--quiet",
                   "--out", str(tmp_path), "--cache-dir", str(tmp_path / "cache")])
    sidecar = json.loads((tmp_path / "moons.json").read_text())
    assert status == 0
    assert sidecar["training_config"]["train_eps"] == 8 / 255 and sidecar["eps"] == [0.0, 8 / 255]
    assert main(["run", "--train-eps", "a/3"]) == 2
    assert "'--train-eps': 'a/3' is not a number such as 0.03 or 8/255" in capsys.readouterr().err


def test_bare_rbl_prints_help_and_succeeds(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Usage: rbl") and "run " in out and "list " in out


def test_plain_progress_is_one_flushed_line_per_finished_task_with_elapsed_and_eta():
    import io

    from robustbench_lite.progress import JOBS_TASK, PlainProgress

    stream = io.StringIO()
    with PlainProgress(stream) as display:
        jobs = display.add_task(JOBS_TASK, total=2)
        cell = display.add_task("pgd on cnn/none eps=0.1", total=8, unit="points")
        display.advance(cell, 5)
        assert stream.getvalue() == ""  # nothing until the task is finished
        display.remove_task(cell)
        display.advance(jobs)
        display.console.print("[red]lenet/none: training failed[/red]")
    lines = stream.getvalue().splitlines()
    assert re.fullmatch(r"\[0:00:00, ETA \?\] pgd on cnn/none eps=0\.1: 5/8 points in 0\.\ds", lines[0])
    assert re.fullmatch(r"\[0:00:00, ETA 0:00:00\] jobs: 1/2 done", lines[1])
    assert lines[2].endswith("] lenet/none: training failed")  # without rich's markup


@pytest.mark.parametrize("mode, expected", [("plain", "plain"), ("none", "none"), ("rich", "rich"),
                                            (False, "none"), ("auto", "plain"), (True, "plain")])
def test_progress_is_plain_when_stderr_is_no_terminal(mode, expected):
    from robustbench_lite.progress import resolve_mode

    assert resolve_mode(mode) == expected  # pytest's captured stderr is no terminal


def test_rbl_run_redirected_to_a_file_leaves_progress_lines_in_it(tmp_path):
    import subprocess
    import sys

    log = tmp_path / "log.txt"
    with log.open("w") as stdout:
        subprocess.run([sys.executable, "-m", "robustbench_lite", "run", "--defenses", "none", "--attacks", "fgsm",
                        "--epochs", "1", "--n-examples", "16", "--eps", "0,0.1", "--device", "cpu",
                        "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")],
                       stdout=stdout, stderr=subprocess.PIPE, check=True, timeout=300)
    lines = log.read_text().splitlines()
    assert lines[0].startswith("[0:00:00] plan: dataset 'moons' (what mlp is meant for; --dataset to change), 16 of")
    assert any(re.fullmatch(r"\[0:00:\d\d, ETA \?\] train mlp/none: 8/8 batches in \d+\.\ds", line) for line in lines)
    assert any(re.fullmatch(r"\[.*\] fgsm on mlp/none eps=0\.1: \d+/\d+ points in \d+\.\ds", line) for line in lines)
    assert any(line.endswith("] jobs: 1/1 done") for line in lines)


TINY = dict(models="mlp", defenses="none,at-fgsm", attacks="fgsm,pgd", eps="0,0.1", epochs=1, n_examples=16,
            device="cpu")


def test_a_dry_run_plans_the_matrix_and_writes_nothing(tmp_path):
    from robustbench_lite import run

    frame = run(**TINY, out=tmp_path / "out", cache_dir=tmp_path / "cache", dry_run=True)
    plan = frame.attrs["plan"]
    assert frame.empty and not (tmp_path / "out" / "results.db").exists() and not (tmp_path / "cache").exists()
    assert plan.cells == 2 * 2 * 2 and [job.cached for job in plan.jobs] == [False, False]
    assert [job.stored for job in plan.jobs] == [0, 0]
    assert all(job.train_seconds > 0 and set(job.attack_seconds) == {"fgsm", "pgd"} for job in plan.jobs)
    lines = plan.lines()
    assert lines[1].startswith("matrix: 1 model(s) x 2 defense(s) x 2 attack(s) x 2 eps = 8 cells")
    assert re.fullmatch(r"  mlp/at-fgsm: train ~\d+\.\ds; 0/4 cells stored; attacks at most fgsm ~\d+\.\ds, pgd ~\d+\.\ds",
                        lines[3])


def test_a_dry_run_after_a_run_finds_the_cached_weights_and_stored_cells(tmp_path):
    from robustbench_lite import run

    settings = dict(**TINY, out=tmp_path / "out", cache_dir=tmp_path / "cache")
    run(**settings)
    plan = run(**settings, dry_run=True).attrs["plan"]
    assert [(job.cached, job.stored, job.cells) for job in plan.jobs] == [(True, 4, 4), (True, 4, 4)]
    assert plan.seconds == 0.0  # nothing left to compute, nothing timed
    # another grid is another leaderboard: other files, the same store
    other = run(**{**settings, "eps": "0,0.1,0.2", "name": "wider", "db": tmp_path / "out" / "results.db"},
                dry_run=True).attrs["plan"]
    assert [(job.cached, job.stored, job.cells) for job in other.jobs] == [(True, 4, 6), (True, 4, 6)]


def test_a_dry_run_without_the_dataset_files_plans_on_stand_in_data(tmp_path, capsys, offline):
    status = main(["run", "--models", "lenet", "--defenses", "none", "--attacks", "fgsm", "--epochs", "1",
                   "--device", "cpu", "--dry-run", "--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path)])
    out = capsys.readouterr().out.splitlines()
    assert status == 0
    assert out[0] == ("plan: dataset 'cifar10' (what lenet is meant for; --dataset to change), 10000 of 10000 test "
                      "points, eps 0, 0.01, 0.03, 0.1, 0.2, on cpu")
    assert out[2].startswith("timed on random stand-in data of the dataset's declared shapes (the cache and the store "
                             "not looked up), as its files are missing: CIFAR-10 not found in")
    assert re.fullmatch(r"  lenet/none: train ~\S+; stored cells not known before training; attacks at most fgsm ~\S+",
                        out[3])
    assert list(tmp_path.iterdir()) == [tmp_path / "nowhere"] or list(tmp_path.iterdir()) == []


def test_a_run_estimated_beyond_ten_cpu_minutes_warns_before_it_starts(tmp_path, monkeypatch):
    from robustbench_lite import estimate, run

    monkeypatch.setattr(estimate, "LONG_CPU_RUN_SECONDS", 0.0)
    with pytest.warns(UserWarning, match=r"this run is estimated at 0:00:\d\d on this CPU; --dry-run shows"):
        run(**TINY, cache_dir=tmp_path / "cache", progress="plain")


def test_the_markdown_shows_the_settings_that_produced_it(tmp_path):
    from robustbench_lite import run

    settings = dict(**TINY, out=tmp_path / "out", cache_dir=tmp_path / "cache", optimizer="sgd[lr=0.05]")
    run(**settings)
    run(**settings)  # everything reused
    markdown = (tmp_path / "out" / "moons.md").read_text()
    settings_section = markdown.split("## Settings")[1].split("## Ranking")[0]
    assert "- eps grid: 0, 0.1 (given)" in settings_section
    assert "- training: 1 epoch, batch 128, train eps 0.1, lr schedule none, early stop off" in settings_section
    assert "- cells: 0 computed in this run, 12 reused from the results store" in settings_section
    assert ("- attack `pgd` (linf, iterative): steps=10, rel_step_size=default, random_start=true, restarts=1, "
            "target=default, eot=1") in settings_section
    rows = [line for line in settings_section.splitlines() if line.startswith("| mlp")]
    assert [row.split("|")[2].strip() for row in rows] == ["none", "at-fgsm"]
    assert all("sgd[lr=0.05,momentum=0.9,weight_decay=0.0,nesterov=false]" in row and "from the weights cache" in row
               for row in rows)


def test_a_models_own_optimizer_is_shown_as_it_was_built(tmp_path):
    from robustbench_lite import run

    frame = run(**{**TINY, "defenses": "none"}, cache_dir=tmp_path / "cache")
    assert frame.attrs["metadata"]["training"]["mlp/none"]["optimizer"].startswith("adam[lr=0.001,")
    assert frame.attrs["metadata"]["eps_source"] == "given"
    default_grid = run(**{**TINY, "defenses": "none", "eps": None}, cache_dir=tmp_path / "cache")
    assert default_grid.attrs["metadata"]["eps_source"] == "the default of dataset moons"


def test_the_plan_writes_budgets_as_they_were_given(tmp_path, capsys):
    status = main(["run", "--defenses", "none", "--attacks", "fgsm", "--eps", "0,8/255,0.1", "--dry-run",
                   "--out", str(tmp_path)])
    assert status == 0
    assert "test points, eps 0, 8/255, 0.1, on " in capsys.readouterr().out.splitlines()[0]
