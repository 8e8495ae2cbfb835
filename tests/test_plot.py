"""`rbl plot` and robustbench_lite.plot: the files are real PNG/SVG images, and what is drawn is the data."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.image import imread

import robustbench_lite as rbl
from robustbench_lite import plot
from robustbench_lite.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CLASSES = ["zero", "one", "two"]
GRID = [0.0, 0.1, 0.2]
# The model `rbl plot examples/confusion` trains in the CLI tests: cnn on a tiny generated image set.
TINY_IMAGES = ["--dataset", "synthetic[n_train=64,n_test=16,classes=3]", "--model", "cnn", "--defense", "none",
               "--epochs", "1", "--device", "cpu", "--quiet"]


def run_cli(capsys, *args):
    status = main(list(args))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_png(path: Path, figure_size: tuple[float, float] | None = None) -> np.ndarray:
    assert path.read_bytes()[:8] == PNG_MAGIC
    pixels = imread(path)
    if figure_size is not None:
        width, height = figure_size
        assert pixels.shape[:2] == (round(height * plot.DPI), round(width * plot.DPI))
    return pixels


@pytest.fixture(scope="module")
def moons_run(tmp_path_factory) -> pd.DataFrame:
    """A real run: mlp / none on 32 moons points, FGSM and a 3-step PGD, leaderboard written to disk."""
    folder = tmp_path_factory.mktemp("moons")
    return rbl.run(models="mlp", defenses="none", attacks="fgsm,pgd[steps=3]", eps=GRID,
                   dataset="moons[n_train=128,n_test=64]", epochs=1, n_examples=32, device="cpu",
                   cache_dir=folder / "cache", out=folder / "lb", name="tiny")


def hand_cells(rows: list[tuple[str, str]], naive: str | None = None, failed: tuple[str, str, float] | None = None):
    """Cells of one model and the given (model, defense) rows; accuracy falls with eps, one cell may fail."""
    records = []
    for number, (model, defense) in enumerate(rows):
        for attack, slope in (("fgsm", 100), ("pgd", 200), ("worst-case", 250)):
            for eps in GRID:
                broken = failed == (defense, attack, eps)
                records.append({
                    "model": model, "defense": defense, "attack": attack, "eps": eps,
                    "accuracy": None if broken else max(0.0, 90.0 - number - slope * eps),
                    "correct": None, "n": 100, "status": "failed" if broken else "ok",
                    "evaluation": "naive" if defense == naive else "standard",
                })
    return pd.DataFrame(records)


def tiny_image_model(channels: int = 1) -> torch.nn.Module:
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(channels * 8 * 8, len(CLASSES))).eval()


def tiny_images(channels: int = 1, n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(4)
    return torch.rand(n, channels, 8, 8), torch.arange(n) % len(CLASSES)


def test_accuracy_plot_draws_every_attack_of_every_row_of_a_run(moons_run, tmp_path):
    figure = plot._accuracy_figure(moons_run, None)
    assert len(figure.axes) == 1  # one (model, defense) row
    axes = figure.axes[0]
    assert axes.get_title() == "mlp / none"
    assert [line.get_label() for line in axes.lines] == ["fgsm", "pgd[steps=3]", "worst-case"]
    for line in axes.lines:
        cells = moons_run[moons_run["attack"] == line.get_label()].sort_values("eps")
        assert list(line.get_xdata()) == GRID
        assert np.allclose(line.get_ydata(), cells["accuracy"])
    worst = axes.lines[-1]
    assert worst.get_color() == "black" and worst.get_linestyle() == "--"
    assert worst.get_linewidth() > axes.lines[0].get_linewidth()
    assert axes.get_ylim() == (-3, 103)

    path = plot.accuracy_vs_eps(moons_run, tmp_path / "run.png")
    assert path == tmp_path / "run.png"
    assert_png(path, tuple(figure.get_size_inches()))


def test_failed_cells_are_gaps_and_naive_rows_are_marked():
    cells = hand_cells([("cnn", "none"), ("cnn", "jpeg")], naive="jpeg", failed=("none", "pgd", 0.1))
    figure = plot._accuracy_figure(cells, "custom title")
    plain, naive = figure.axes
    pgd = plain.lines[1].get_ydata()
    assert pgd[0] == 90.0 and math.isnan(pgd[1]) and pgd[2] == 50.0
    assert "1 failed cell" in plain.get_title() and "naive" not in plain.get_title()
    assert "naive evaluation" in naive.get_title()
    assert figure.get_suptitle() == "custom title"
    assert plain.get_ylim() == naive.get_ylim()  # one shared y axis


def test_many_rows_wrap_into_a_grid_of_three_columns_and_svg_works(tmp_path):
    rows = [("cnn", f"defense-{index}") for index in range(7)]
    figure = plot._accuracy_figure(hand_cells(rows), None)
    assert len(figure.axes) == 7  # the two empty slots of the 3 x 3 grid are removed
    assert {axes.get_subplotspec().get_geometry()[:2] for axes in figure.axes} == {(3, 3)}
    assert [axes.get_title() for axes in figure.axes] == [f"cnn / {defense}" for _, defense in rows]
    assert all(len(axes.lines) == 3 for axes in figure.axes)

    path = plot.accuracy_vs_eps(hand_cells(rows), tmp_path / "grid.svg")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<?xml") and "<svg" in text and text.rstrip().endswith("</svg>")


def test_an_unevenly_spaced_grid_is_drawn_one_grid_point_per_step():
    cells = hand_cells([("m", "none")])
    cells["eps"] = cells["eps"].map(dict(zip(GRID, [0.0, 0.001, 0.01, 0.1, 0.2, 0.3][: len(GRID)])))
    axes = plot._accuracy_figure(cells, None).axes[0]
    assert list(axes.lines[0].get_xdata()) == list(range(len(GRID)))
    assert [label.get_text() for label in axes.get_xticklabels()] == ["0", "0.001", "0.01", "0.1", "0.2", "0.3"][: len(GRID)]
    assert "not to scale" in axes.get_xlabel()
    evenly = plot._accuracy_figure(hand_cells([("m", "none")]), None).axes[0]
    assert list(evenly.lines[0].get_xdata()) == list(GRID) and "not to scale" not in evenly.get_xlabel()


def test_the_leaderboard_hook_writes_name_accuracy_png(moons_run, tmp_path):
    paths = plot.leaderboard_plots(moons_run, tmp_path, "tiny")
    assert paths == {"accuracy": tmp_path / "tiny-accuracy.png"}
    assert_png(paths["accuracy"])
    assert [path.name for path in tmp_path.iterdir()] == ["tiny-accuracy.png"]  # no temporary file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert paths["accuracy"].stat().st_mode & 0o777 == 0o666 & ~umask  # readable as any file, not private


def test_other_formats_and_missing_columns_are_usage_errors(tmp_path):
    with pytest.raises(rbl.UsageError, match=r"\.png or \.svg"):
        plot.accuracy_vs_eps(hand_cells([("cnn", "none")]), tmp_path / "plot.jpg")
    with pytest.raises(rbl.UsageError, match="accuracy"):
        plot.accuracy_vs_eps(hand_cells([("cnn", "none")]).drop(columns="accuracy"), tmp_path / "plot.png")


def test_examples_grid_titles_are_the_predicted_labels_red_when_wrong():
    model, fgsm = tiny_image_model(), rbl.get_attack("fgsm")
    x, y = tiny_images(n=3)
    eps_grid = [0.0, 0.1, 0.5]  # eps 0 is the clean column
    figure = plot._examples_figure(model, fgsm, x, y, eps_grid, CLASSES)
    assert len(figure.axes) == 3 * 5  # clean, then image and perturbation for 0.1 and 0.5
    expected = [model(inputs).argmax(1) for inputs in [x] + [fgsm.perturb(model, x, y, eps) for eps in (0.1, 0.5)]]
    for row in range(3):
        image_axes = [figure.axes[row * 5 + column] for column in (0, 1, 3)]
        for axes, predicted in zip(image_axes, expected):
            label = CLASSES[int(predicted[row])]
            assert axes.title.get_text() == f"pred {label}"
            wrong = int(predicted[row]) != int(y[row])
            assert axes.title.get_color() == ("tab:red" if wrong else "black")
        assert image_axes[0].get_ylabel() == f"true {CLASSES[int(y[row])]}"
        assert figure.axes[row * 5 + 2].title.get_text() == "δ ×5"  # FGSM moves every pixel by eps (or to a bound)
    headers = [text.get_text() for axes in figure.axes[:5] for text in axes.texts]
    assert headers == ["clean", "ε = 0.1", "perturbation", "ε = 0.5", "perturbation"]
    assert any(wrong.title.get_color() == "tab:red" for wrong in figure.axes)  # eps 0.5 fools the linear model


def test_examples_take_three_channel_images_and_refuse_feature_vectors(tmp_path):
    x, y = tiny_images(channels=3, n=2)
    path = plot.adversarial_examples(tiny_image_model(3), rbl.get_attack("fgsm"), x, y, [0.1], CLASSES,
                                     tmp_path / "rgb.png")
    assert assert_png(path).shape[2] in (3, 4)
    with pytest.raises(rbl.UsageError, match="images of 1 or 3 channels"):
        plot.adversarial_examples(tiny_image_model(), rbl.get_attack("fgsm"), torch.rand(2, 64), y, [0.1], CLASSES,
                                  tmp_path / "features.png")
    with pytest.raises(rbl.UsageError, match="eps > 0"):
        plot.adversarial_examples(tiny_image_model(3), rbl.get_attack("fgsm"), x, y, [0.0], CLASSES,
                                  tmp_path / "zero.png")


def test_confusion_matrices_count_every_point_and_the_robust_ones_on_the_diagonal(tmp_path):
    model, fgsm = tiny_image_model(), rbl.get_attack("fgsm")
    x, y = tiny_images(n=30)
    figure = plot._confusion_figure(model, fgsm, x, y, 0.1, CLASSES, batch_size=7)
    clean_matrix, attacked_matrix = (np.asarray(axes.images[0].get_array()) for axes in figure.axes[:2])
    clean, attacked = model(x).argmax(1), model(fgsm.perturb(model, x, y, 0.1)).argmax(1)
    for matrix in (clean_matrix, attacked_matrix):
        assert matrix.shape == (3, 3) and matrix.sum() == 30
        assert list(matrix.sum(axis=1)) == torch.bincount(y, minlength=3).tolist()  # rows: the true class
    assert np.trace(clean_matrix) == int((clean == y).sum())
    assert np.trace(attacked_matrix) == int(((clean == y) & (attacked == y)).sum())
    assert np.trace(attacked_matrix) < np.trace(clean_matrix)
    assert clean_matrix[0, 1] == int(((y == 0) & (clean == 1)).sum())  # row true, column predicted
    counts = sorted(int(text.get_text()) for text in figure.axes[0].texts)
    assert counts == sorted(int(count) for count in clean_matrix.flatten() if count)

    path = plot.confusion_matrices(model, fgsm, x, y, 0.1, CLASSES, tmp_path / "confusion.png")
    assert_png(path, tuple(figure.get_size_inches()))


def test_cli_plots_the_accuracy_of_a_leaderboard_json(moons_run, capsys, tmp_path):
    sidecar = moons_run.attrs["files"]["json"]
    status, out, _ = run_cli(capsys, "plot", "accuracy", str(sidecar))
    assert status == 0
    assert out.strip() == f"wrote {sidecar.with_name('tiny-accuracy.png')}"
    assert_png(sidecar.with_name("tiny-accuracy.png"))
    status, out, _ = run_cli(capsys, "plot", "accuracy", str(sidecar), "--out", str(tmp_path / "deep" / "a.svg"))
    assert status == 0 and (tmp_path / "deep" / "a.svg").read_text().startswith("<?xml")


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    ("{not json", "is not valid JSON"),
    (json.dumps({"ranking": []}), "holds no list of cells"),
    (json.dumps({"cells": [{"model": "mlp", "defense": "none", "attack": "fgsm", "eps": "abc", "accuracy": 50.0}]}),
     "cell 0 has eps 'abc', not a number"),
    (json.dumps({"cells": [{"model": "mlp", "defense": "none", "attack": "fgsm", "eps": 0.1, "accuracy": "high"}]}),
     "cell 0 has accuracy 'high', not a number"),
    (json.dumps({"cells": [{"model": "mlp", "eps": 0.1}]}), "cell 0 lacks defense, attack, accuracy"),
    (json.dumps({"cells": [3]}), "cell 0 is not an object"),
])
def test_cli_bad_leaderboard_json_is_one_line_with_status_2(capsys, tmp_path, content, message):
    path = tmp_path / "board.json"
    if content is not None:
        path.write_text(content)
    status, _, err = run_cli(capsys, "plot", "accuracy", str(path))
    assert status == 2
    assert err.startswith("rbl: error: ") and message in err and err.count("\n") == 1


def test_cli_examples_and_confusion_on_a_tiny_trained_model(capsys, tmp_path):
    cache = ["--cache-dir", str(tmp_path / "cache")]
    status, out, err = run_cli(capsys, "plot", "examples", *TINY_IMAGES, *cache, "--attack", "fgsm", "--eps", "0.1,0.2",
                               "--n", "2", "--out", str(tmp_path / "examples.png"))
    assert status == 0, err
    assert out.strip() == f"wrote {tmp_path / 'examples.png'}"
    assert_png(tmp_path / "examples.png")
    status, out, err = run_cli(capsys, "plot", "confusion", *TINY_IMAGES, *cache, "--attack", "fgsm", "--eps", "0.1",
                               "--n-examples", "8", "--out", str(tmp_path / "confusion.svg"))
    assert status == 0, err
    assert (tmp_path / "confusion.svg").read_text().startswith("<?xml")


def test_cli_plots_reach_a_model_trained_with_the_run_training_options(capsys, tmp_path):
    training = ["--cache-dir", str(tmp_path / "cache"), "--optimizer", "sgd[lr=0.05]", "--lr-schedule", "cosine"]
    status, _, err = run_cli(capsys, "run", "--dataset", "synthetic[n_train=64,n_test=16,classes=3]", "--models", "cnn",
                             "--defenses", "none", "--attacks", "fgsm", "--eps", "0,0.1", "--epochs", "1", "--quiet",
                             "--device", "cpu", "--out", str(tmp_path / "lb"), *training)
    assert status == 0, err
    checkpoints = sorted((tmp_path / "cache").iterdir())
    status, _, err = run_cli(capsys, "plot", "confusion", *TINY_IMAGES, *training, "--attack", "fgsm", "--eps", "0.1",
                             "--n-examples", "8", "--out", str(tmp_path / "confusion.png"))
    assert status == 0, err
    assert sorted((tmp_path / "cache").iterdir()) == checkpoints  # the run's weights, not a new training


@pytest.mark.parametrize("args, message", [
    (["examples", "--eps", "0"], "--eps needs a value > 0"),
    (["examples", "--eps", "2"], "must lie in [0, 1]"),
    (["confusion", "--eps", "0"], "--eps must lie in (0, 1]"),
    (["examples", "--out", "plot.gif"], ".png or .svg"),
    (["confusion", "--attack", "nope"], "unknown attack 'nope'"),
    (["examples", "--dataset", "moons", "--model", "mlp"], "images of 1 or 3 channels"),
])
def test_cli_bad_input_is_one_line_with_status_2(capsys, tmp_path, args, message):
    status, _, err = run_cli(capsys, "plot", *args, "--epochs", "1", "--quiet", "--device", "cpu",
                             "--cache-dir", str(tmp_path), "--data-dir", str(tmp_path))
    assert status == 2
    assert err.startswith("rbl: error: ") and message in err and err.count("\n") == 1


def test_plot_help_points_to_rbl_lsa_for_the_layer_chart(capsys):
    status, out, _ = run_cli(capsys, "plot", "--help")
    assert status == 0
    assert "rbl lsa" in out
    assert all(command in out for command in ("accuracy", "examples", "confusion"))


def test_the_training_eps_figure_groups_defenses_by_their_recipe_without_the_budget():
    assert plot._recipe("at-fgsm[alpha=0.0,eps=0.01]") == "at-fgsm[alpha=0.0]"
    assert plot._recipe("at-pgd[eps=0.1]") == plot._recipe("at-pgd") == "at-pgd"


def test_rbl_plot_rg_draws_the_ranking_and_never_a_failed_score_as_zero(tmp_path):
    from robustbench_lite.cli import main

    sidecar = tmp_path / "board.json"
    sidecar.write_text(json.dumps({"ranking": [
        {"rank": 1, "model": "cnn", "defense": "at-pgd", "R&G fgsm": 300.0, "R&G pgd": 250.0, "R&G worst-case": 240.0},
        {"rank": None, "model": "cnn", "defense": "jpeg", "R&G fgsm": 390.0, "R&G pgd": None, "R&G worst-case": None},
    ]}))
    assert main(["plot", "rg", str(sidecar)]) == 0
    assert (tmp_path / "board-rg.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    figure = plot._rg_figure(plot.read_ranking(sidecar), None)
    axes = figure.axes[0]
    visible = [bar.get_height() for bar in axes.patches if bar.get_visible()]
    assert sorted(visible) == [240.0, 250.0, 300.0, 390.0]  # the two failed scores drew no bar
    assert [text.get_text() for text in axes.texts] == ["failed", "failed"]
    assert "(unranked)" in axes.get_xticklabels()[1].get_text()
    (tmp_path / "cells-only.json").write_text(json.dumps({"cells": []}))
    assert main(["plot", "rg", str(tmp_path / "cells-only.json")]) == 2


def test_decision_regions_are_the_models_argmax_over_the_plane(tmp_path):
    """A linear model that says class 1 right of x1 = 0.5: half of each panel's region is class 1."""
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))
        model.bias.copy_(torch.tensor([0.5, -0.5]))
    x = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.2, 0.8], [0.9, 0.1]])
    y = torch.tensor([0, 1, 0, 1])
    path = plot.decision_boundaries([("a", model), ("b", model)], x, y, ["left", "right"], tmp_path / "b.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    figure = plot._boundary_figure([("a", model)], x, y, ["left", "right"], None)
    regions = np.asarray(figure.axes[0].collections[0].get_array()).reshape(plot.BOUNDARY_GRID, plot.BOUNDARY_GRID)
    assert regions.mean() == pytest.approx(0.5, abs=0.01) and (regions[:, :10] == 0).all() and (regions[:, -10:] == 1).all()
    with pytest.raises(rbl.UsageError, match="needs 2-D inputs"):
        plot.decision_boundaries([("a", model)], torch.zeros(3, 4), torch.zeros(3, dtype=torch.long), ["a", "b"],
                                 tmp_path / "c.png")


def test_rbl_plot_boundary_draws_one_panel_per_defense(tmp_path, capsys):
    from robustbench_lite.cli import main

    out = tmp_path / "boundary.png"
    status = main(["plot", "boundary", "--dataset", "synthetic[shape=2,classes=2,n_train=64,n_test=32]",
                   "--defenses", "none,at-fgsm", "--epochs", "1", "--device", "cpu", "--cache-dir",
                   str(tmp_path / "cache"), "--out", str(out), "--quiet"])
    assert status == 0 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2  # trained as rbl run trains them, and cached
    assert main(["plot", "boundary", "--defenses", "none,nonesuch", "--out", str(out)]) == 2
    assert "unknown defense 'nonesuch'" in capsys.readouterr().err


def small_classifier():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    return model.eval().requires_grad_(False)


def test_restart_losses_follow_each_random_start_of_the_attack():
    model = small_classifier()
    x = torch.rand(3, 4, generator=torch.Generator().manual_seed(1))
    y = model(x).argmax(1)
    torch.manual_seed(0)
    losses = plot.restart_losses(model, rbl.get_attack("pgd[steps=5]"), x, y, 0.1, restarts=7)
    assert losses.shape == (3, 7, 6)  # a loss at each of the 5 steps' iterates and at the example returned
    assert not torch.equal(losses[:, 0], losses[:, 1])  # each restart its own random start
    assert (losses[..., -1] >= losses[..., 0] - 1e-6).all()  # ascending the loss: never below where it started
    with torch.no_grad():
        start = torch.nn.functional.cross_entropy(model(x), y, reduction="none")
    assert (losses[..., 0] <= start[:, None] + 1.0).all()
    with pytest.raises(rbl.UsageError, match="took no input gradient"):
        plot.restart_losses(model, rbl.get_attack("square[queries=5]"), x, y, 0.1, restarts=2)


def test_rbl_plot_loss_curves_and_histogram_draw_a_row_per_defense(tmp_path):
    from robustbench_lite.cli import main

    common = ["--models", "mlp", "--dataset", "synthetic[shape=4,classes=3,n_train=64,n_test=16]",
              "--defenses", "none,at-fgsm", "--epochs", "1", "--eps", "0.1", "--n", "2", "--device", "cpu",
              "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    for kind, restarts in (("loss-curves", "3"), ("loss-histogram", "20")):
        out = tmp_path / f"{kind}.png"
        assert main(["plot", kind, *common, "--restarts", restarts, "--out", str(out)]) == 0
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    runs = [("a", torch.rand(2, 3, 6)), ("b", torch.rand(2, 3, 6))]
    assert len(plot._restarts_figure(runs, None, histogram=False).axes) == 4  # 2 defenses x 2 points
