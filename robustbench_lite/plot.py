"""Plots as PNG or SVG (the file's suffix chooses): robust accuracy against eps per attack and defense,
adversarial examples beside their perturbations, and confusion matrices clean vs attacked.

The per-layer bar chart of the layer sustainability analysis is not here: ``rbl lsa`` (plugin
rbl-lsa) writes it.

matplotlib is imported inside the functions, because importing it costs every ``rbl`` start a
second. Figures are bare ``matplotlib.figure.Figure`` objects drawn with the Agg canvas, so
pyplot's global state (backend, current figure) is never touched.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from torch import nn

# The module, not its names: leaderboard.write calls leaderboard_plots, and the import cycle must resolve.
from .atomic import atomic_target, ensure_writable
from .choices import WORST_CASE
from .attack_utils import frozen, in_mode_of
from .errors import UsageError
from .evaluation import adversarial_predictions, guarded_perturb, model_unchanged, predict
from .interfaces import Attack
from .options import PluginSpec

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FORMATS = (".png", ".svg")
DPI = 120
MAX_COLUMNS = 3  # accuracy subplots side by side; more (model, defense) rows wrap onto further lines
CELL_COLUMNS = ("model", "defense", "attack", "eps", "accuracy")
WRONG_COLOR = "tab:red"
ANNOTATE_UP_TO = 12  # classes: in larger confusion matrices the counts no longer fit their squares
LABEL_TICKS_UP_TO = 20  # classes: beyond, the class names on the axes would overlap


def check_output(path: Path) -> None:
    """Raise UsageError unless ``path`` ends in .png or .svg and its folder is writable (created if missing)."""
    if path.suffix.lower() not in FORMATS:
        raise UsageError(f"plot file {str(path)!r} must end in .png or .svg (the suffix chooses the format)")
    ensure_writable(path.parent)


def read_cells(path: Path) -> pd.DataFrame:
    """The ``cells`` of a leaderboard's JSON sidecar (``rbl run`` writes ``<out>/<name>.json``), one row per cell."""
    sidecar = _read_sidecar(path)
    cells = sidecar.get("cells") if isinstance(sidecar, dict) else None
    if not isinstance(cells, list) or not cells:
        raise UsageError(
            f"{str(path)!r} holds no list of cells; give the JSON sidecar that `rbl run` writes beside its leaderboard"
        )
    for index, cell in enumerate(cells):
        problem = _cell_problem(cell)
        if problem:
            raise UsageError(f"{str(path)!r}: cell {index} {problem}; give the JSON sidecar that rbl run writes")
    return pd.DataFrame(cells)


def read_ranking(path: Path) -> pd.DataFrame:
    """The ``ranking`` of a leaderboard's JSON sidecar: one row per (model, defense), its rank (None:
    unranked), flags and the R&G of every attack and of the worst case, as the leaderboard printed them."""
    sidecar = _read_sidecar(path)
    ranking = sidecar.get("ranking") if isinstance(sidecar, dict) else None
    if not isinstance(ranking, list) or not ranking or not all(
            isinstance(row, dict) and {"model", "defense", f"R&G {WORST_CASE}"} <= row.keys() for row in ranking):
        raise UsageError(f"{str(path)!r} holds no ranking with R&G scores; give the JSON sidecar that `rbl run` writes")
    return pd.DataFrame(ranking)


def _read_sidecar(path: Path) -> object:
    try:
        sidecar = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"leaderboard file {str(path)!r} does not exist; `rbl run` writes <out>/<name>.json") from None
    except json.JSONDecodeError as error:
        raise UsageError(f"leaderboard file {str(path)!r} is not valid JSON: {error}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read leaderboard file {str(path)!r}: {error}") from None
    return sidecar


def _cell_problem(cell: object) -> str | None:
    """What keeps one sidecar cell from being plotted, or None."""
    if not isinstance(cell, dict):
        return "is not an object"
    missing = [column for column in CELL_COLUMNS if column not in cell]
    if missing:
        return f"lacks {', '.join(missing)}"
    for column in ("eps", "accuracy"):
        value = cell[column]
        if value is None and column == "accuracy":  # a failed cell: a gap in its line
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"has {column} {value!r}, not a number"
    return None


def accuracy_vs_eps(cells: pd.DataFrame, path: Path, title: str | None = None) -> Path:
    """Plot robust accuracy (%) against eps: one subplot per (model, defense), one line per attack.

    ``cells`` is what :func:`robustbench_lite.run` returns (or the ``cells`` of a leaderboard's JSON
    sidecar, see :func:`read_cells`). The per-sample worst case is the thick dashed black line; failed
    cells (accuracy NaN) are gaps in their line; naive evaluations are marked in their subplot's
    title. Subplots share the 0-100 % y axis and wrap onto several lines beyond three. Returns ``path``.
    """
    check_output(path)
    return _save(_accuracy_figure(cells, title), path)


def adversarial_examples(
    model: nn.Module,
    attack: Attack,
    x: torch.Tensor,
    y: torch.Tensor,
    eps_grid: Sequence[float],
    classes: Sequence[str],
    path: Path,
) -> Path:
    """Plot a grid: one row per image, the clean image, then per eps the adversarial image and its perturbation.

    ``x`` holds images (N x C x H x W, C 1 or 3) in [0, 1] on the model's device, ``y`` their labels;
    each image's title is the predicted class, red where it is wrong. Every point is attacked (the
    leaderboard attacks only clean-correct ones). eps = 0 in ``eps_grid`` is skipped: the clean
    column shows it. The caller seeds randomised attacks (``torch.manual_seed``). Returns ``path``.
    """
    check_output(path)
    return _save(_examples_figure(model, attack, x, y, eps_grid, classes), path)


def confusion_matrices(
    model: nn.Module,
    attack: Attack,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    classes: Sequence[str],
    path: Path,
    batch_size: int = 128,
) -> Path:
    """Plot two confusion matrices side by side, clean and attacked at ``eps`` (rows: true class, columns: predicted).

    As in the leaderboard, only the clean-correct points are attacked, so the attacked matrix's
    diagonal is the number of robust points. Counts are written into the squares for up to
    twelve classes. Returns ``path``.
    """
    check_output(path)
    return _save(_confusion_figure(model, attack, x, y, eps, classes, batch_size), path)


def accuracy_vs_training_eps(matched: pd.DataFrame, path: Path, title: str | None = None) -> Path:
    """Plot accuracy (%) against each defense's training budget: one subplot per model, per training
    recipe (the defense without its ``eps``) its clean accuracy (dashed) and its accuracy under PGD at
    its own budget (the worst case over the attacks where the run has no ``pgd``). ``matched`` is
    :func:`robustbench_lite.leaderboard.matched_table`'s. Returns ``path``."""
    check_output(path)
    return _save(_training_eps_figure(matched, title), path)


def rg_scores(ranking: pd.DataFrame, path: Path, title: str | None = None) -> Path:
    """Bar chart of the R&G score (sum of accuracies over the eps grid) per (model, defense), one bar per
    attack and one for the per-sample worst case, rows in rank order; an unranked row (naive, failed,
    degenerate) is hatched and says so. ``ranking`` is :func:`read_ranking`'s. Returns ``path``."""
    check_output(path)
    return _save(_rg_figure(ranking, title), path)


class _LossRecorder(nn.Module):
    """The model, recording each input's cross-entropy at every forward pass an input gradient is taken through."""

    def __init__(self, model: nn.Module, y: torch.Tensor) -> None:
        super().__init__()
        self.model, self.y, self.losses = model, y, []
        in_mode_of(self, model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        if torch.is_grad_enabled() and x.requires_grad:
            self.losses.append(torch.nn.functional.cross_entropy(logits.detach(), self.y, reduction="none"))
        return logits


def restart_losses(model: nn.Module, attack: Attack, x: torch.Tensor, y: torch.Tensor, eps: float,
                   restarts: int) -> torch.Tensor:
    """The cross-entropy along ``attack``'s iterations from ``restarts`` random starts on each point of
    ``x``: shape (points, restarts, passes + 1), the last column the loss of the example it returned.
    ``attack`` is run once on ``restarts`` copies of each point (a PGD with its random start draws a
    start per copy); the caller seeds it."""
    copies, labels = x.repeat_interleave(restarts, dim=0), y.repeat_interleave(restarts)
    recorder = _LossRecorder(model, labels)
    with model_unchanged(model, f"attack {attack.label!r}"):
        x_adv = guarded_perturb(recorder, attack, copies, labels, eps)
        with torch.no_grad():
            final = torch.nn.functional.cross_entropy(model(x_adv), labels, reduction="none")
    if not recorder.losses:
        raise UsageError(f"attack {attack.label!r} took no input gradient: there is no loss along its iterations to plot")
    return torch.stack([*recorder.losses, final], dim=1).view(len(x), restarts, -1).cpu()


def loss_curves(runs: Sequence[tuple[str, torch.Tensor]], path: Path, title: str | None = None) -> Path:
    """Madry et al.'s Fig. 1: the loss over the iterations of each random restart, one row per
    (label, :func:`restart_losses`) run, one column per point. Returns ``path``."""
    check_output(path)
    return _save(_restarts_figure(runs, title, histogram=False), path)


def loss_histograms(runs: Sequence[tuple[str, torch.Tensor]], path: Path, title: str | None = None) -> Path:
    """Madry et al.'s Fig. 2: the histogram of the final losses of the random restarts, one row per
    (label, :func:`restart_losses`) run, one column per point, shared x axis per column. Returns ``path``."""
    check_output(path)
    return _save(_restarts_figure(runs, title, histogram=True), path)


BOUNDARY_GRID = 200  # points per side of the grid the decision regions are drawn from


def decision_boundaries(models: Sequence[tuple[str, nn.Module]], x: torch.Tensor, y: torch.Tensor,
                        classes: Sequence[str], path: Path, title: str | None = None) -> Path:
    """Plot each model's decision regions over a 2-D input space, with the points ``x`` (N x 2, on the
    models' device) coloured by their label ``y``: one subplot per (label, model), as the
    layer-sustainability paper draws model A under each training loss. The regions cover the points'
    range with a 5 % margin. Returns ``path``."""
    check_output(path)
    if x.dim() != 2 or x.shape[1] != 2:
        raise UsageError(f"a decision-boundary plot needs 2-D inputs (e.g. moons); these have shape {tuple(x.shape[1:])}")
    return _save(_boundary_figure(models, x, y, classes, title), path)


def leaderboard_plot_names(name: str, matched: bool = False) -> dict[str, str]:
    """The file names of the plots the leaderboard ``name`` links, by kind; ``matched``: its defenses
    train at several budgets, so it also links the accuracy-vs-training-eps plot."""
    return {"accuracy": accuracy_file_name(name), **({"train-eps": f"{name}-train-eps.png"} if matched else {})}


def leaderboard_plots(cells: pd.DataFrame, out_dir: Path, name: str,
                      matched: pd.DataFrame | None = None) -> dict[str, Path]:
    """Draw the plots a leaderboard links into ``out_dir``; returns their paths by kind (``{"accuracy": path}``,
    and ``"train-eps"`` for a run whose defenses train at several budgets, ``matched`` their table)."""
    names = leaderboard_plot_names(name, matched is not None)
    drawn = {"accuracy": accuracy_vs_eps(cells, out_dir / names["accuracy"], title=f"{name}: robust accuracy vs ε")}
    if matched is not None:
        drawn["train-eps"] = accuracy_vs_training_eps(matched, out_dir / names["train-eps"],
                                                      title=f"{name}: accuracy vs training ε")
    return drawn


def accuracy_file_name(name: str) -> str:
    """The file name of the leaderboard ``name``'s accuracy-vs-eps plot."""
    return f"{name}-accuracy.png"


def _accuracy_figure(cells: pd.DataFrame, title: str | None) -> Figure:
    from matplotlib.figure import Figure

    missing = [column for column in CELL_COLUMNS if column not in cells.columns]
    if missing:
        raise UsageError(f"the cells lack the column(s) {', '.join(missing)}; expected those of robustbench_lite.run()")
    if not len(cells):
        raise UsageError("no cells to plot")
    # JSON sidecars write a failed cell's accuracy as null: a column that is all null is not numeric by itself.
    cells = cells.assign(accuracy=pd.to_numeric(cells["accuracy"], errors="coerce"), eps=pd.to_numeric(cells["eps"]))
    grid = sorted(cells["eps"].unique())
    # A grid such as 0, 0.001, 0.01, 0.1 would crowd its small values into one tick: unevenly
    # spaced grids are drawn one grid point per step, labelled with their eps.
    steps = np.diff(grid)
    to_scale = len(grid) < 3 or bool(np.allclose(steps, steps[0]))
    positions = grid if to_scale else list(range(len(grid)))
    eps_label = "ε" if to_scale else "ε (grid points, not to scale)"
    rows = list(cells[["model", "defense"]].drop_duplicates().itertuples(index=False, name=None))
    worst = WORST_CASE
    attacks = [attack for attack in cells["attack"].unique() if attack != worst]
    colors = {attack: f"C{index % 10}" for index, attack in enumerate(attacks)}

    columns = min(len(rows), MAX_COLUMNS)
    lines = math.ceil(len(rows) / columns)
    # At least 6.4 inches wide: the legend and title must fit beside a single subplot.
    figure = Figure(figsize=(max(4.2 * columns, 6.4), 3.3 * lines + 1.0), layout="constrained")
    grid_axes = figure.subplots(lines, columns, sharex=True, sharey=True, squeeze=False)
    legend: dict[str, object] = {}
    for axes, (model, defense) in zip(grid_axes.flat, rows):
        row = cells[(cells["model"] == model) & (cells["defense"] == defense)]
        for attack in [a for a in attacks if a in set(row["attack"])] + [worst]:
            points = row[row["attack"] == attack]
            if not len(points):
                continue
            accuracy = points.set_index("eps")["accuracy"].reindex(grid)  # eps missing from this row: a gap too
            if attack == worst:
                style = {"color": "black", "linestyle": "--", "linewidth": 2.6, "zorder": 3}
            else:
                style = {"color": colors[attack], "linewidth": 1.5}
            (line,) = axes.plot(positions, accuracy.to_numpy(), marker="o", markersize=4, label=attack, **style)
            legend.setdefault(attack, line)
        failed = int(row["accuracy"].isna().sum())
        naive = "evaluation" in row and bool((row["evaluation"] == "naive").any())
        heading = f"{model} / {defense}"
        if naive:
            heading += "\nnaive evaluation (overestimates robustness)"
        if failed:
            heading += f"\n{failed} failed cell{'s' if failed > 1 else ''} (gaps)"
        axes.set_title(heading, fontsize=10, color=WRONG_COLOR if naive else "black")
        axes.grid(alpha=0.3)
    for axes in grid_axes[:, 0]:
        axes.set_ylabel("robust accuracy (%)")
    grid_axes[0, 0].set_ylim(-3, 103)  # shared: a line at 0 or 100 % stays visible
    grid_axes[0, 0].set_yticks(range(0, 101, 20))
    if len(grid) <= 8 or not to_scale:
        grid_axes[0, 0].set_xticks(positions, [f"{eps:g}" for eps in grid])
    for index, axes in enumerate(grid_axes.flat):
        if index >= len(rows):
            figure.delaxes(axes)
            # The subplot above the empty slot is now the lowest of its column: it needs the eps axis.
            above = grid_axes.flat[index - columns]
            above.xaxis.set_tick_params(labelbottom=True)
            above.set_xlabel(eps_label)
    for axes in grid_axes[-1, : len(rows) - (lines - 1) * columns]:
        axes.set_xlabel(eps_label)
    labels = [f"{worst} (per sample, over all attacks)" if label == worst else label for label in legend]
    columns_of_legend = min(len(labels), 4 if columns > 1 else 2)
    figure.legend(list(legend.values()), labels, loc="outside lower center", ncols=columns_of_legend)
    figure.suptitle(title or "Robust accuracy vs ε", fontsize=13)
    return figure


def _check_images(x: torch.Tensor) -> None:
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise UsageError(
            f"adversarial examples need images of 1 or 3 channels (N x C x H x W); got inputs of shape {tuple(x.shape)}"
        )


def _image(pixels: torch.Tensor) -> np.ndarray:
    """A C x H x W tensor as what ``imshow`` takes: H x W (one channel, drawn in grey) or H x W x 3."""
    pixels = pixels.detach().float().cpu().clamp(0.0, 1.0)
    return pixels[0].numpy() if pixels.shape[0] == 1 else pixels.permute(1, 2, 0).numpy()


def _show(axes, pixels: torch.Tensor) -> None:
    axes.imshow(_image(pixels), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    axes.set_xticks([])
    axes.set_yticks([])


def _examples_figure(
    model: nn.Module,
    attack: Attack,
    x: torch.Tensor,
    y: torch.Tensor,
    eps_grid: Sequence[float],
    classes: Sequence[str],
) -> Figure:
    from matplotlib.figure import Figure

    _check_images(x)
    budgets = [float(eps) for eps in eps_grid if eps > 0]
    if not budgets:
        raise UsageError("adversarial examples need an eps > 0; the clean column already shows eps = 0")
    with frozen(model), model_unchanged(model, f"attack {attack.label!r}"):
        with torch.no_grad():
            clean = model(x.clone()).argmax(dim=1)
        attacked = []
        for eps in budgets:
            # never picture an example the leaderboard would reject
            x_adv = guarded_perturb(model, attack, x, y, eps).detach()
            with torch.no_grad():
                attacked.append((eps, x_adv, model(x_adv).argmax(dim=1)))

    headers = ["clean"] + [header for eps in budgets for header in (f"ε = {eps:g}", "perturbation")]
    # At least 7 inches wide: the explanation in the title must fit above a single eps.
    figure = Figure(figsize=(max(1.65 * len(headers), 7.0), 1.8 * len(x) + 1.6), layout="constrained")
    grid_axes = figure.subplots(len(x), len(headers), squeeze=False)
    for index, row in enumerate(grid_axes):
        truth = int(y[index])
        images = [(x[index], int(clean[index]))]
        images += [(x_adv[index], int(predicted[index])) for _, x_adv, predicted in attacked]
        # Columns: clean, then per eps the adversarial image and its perturbation.
        for axes, (pixels, predicted) in zip([row[0], *row[1::2]], images):
            _show(axes, pixels)
            color = "black" if predicted == truth else WRONG_COLOR
            axes.set_title(f"pred {classes[predicted]}", fontsize=10, color=color)
        row[0].set_ylabel(f"true {classes[truth]}", fontsize=10)
        for axes, (_, x_adv, _) in zip(row[2::2], attacked):
            delta = x_adv[index] - x[index]
            largest = float(delta.abs().max())
            # Stretched so that the largest change reaches black or white: at their true scale most are invisible.
            gain = 0.5 / largest if largest > 0 else 0.0
            _show(axes, 0.5 + gain * delta)
            axes.set_title(f"δ ×{gain:.3g}" if largest > 0 else "δ = 0", fontsize=10)
    for axes, header in zip(grid_axes[0], headers):
        # Above the title rather than in it: the title turns red with a wrong prediction, the header must not.
        axes.annotate(header, xy=(0.5, 1.0), xycoords="axes fraction", xytext=(0, 20), textcoords="offset points",
                      ha="center", va="bottom", fontsize=10, fontweight="bold")
    figure.suptitle(
        f"{attack.label}: adversarial examples (titles: predicted class, red when wrong)\n"
        "perturbation δ = x_adv − x drawn as 0.5 + k·δ with k per panel (δ ×k):\n"
        "mid-grey = unchanged, black or white = the largest change",
        fontsize=11,
    )
    return figure


def _confusion(y: torch.Tensor, predicted: torch.Tensor, num_classes: int) -> np.ndarray:
    """Counts: rows the true class, columns the predicted one."""
    pairs = (y * num_classes + predicted).cpu()
    return torch.bincount(pairs, minlength=num_classes * num_classes).reshape(num_classes, num_classes).numpy()


def _confusion_figure(
    model: nn.Module,
    attack: Attack,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    classes: Sequence[str],
    batch_size: int,
) -> Figure:
    from matplotlib.figure import Figure

    if not 0.0 < eps <= 1.0:  # NaN fails too
        raise UsageError(f"eps must lie in (0, 1] (inputs are images in [0, 1]), got {eps}")
    with frozen(model), model_unchanged(model, f"attack {attack.label!r}"):
        clean = predict(model, x, batch_size)
        attacked = adversarial_predictions(model, attack, x, y, eps, clean, batch_size)
    n, num_classes = len(y), len(classes)
    panels = [
        (_confusion(y, clean, num_classes), "clean: accuracy"),
        (_confusion(y, attacked, num_classes), f"{attack.label}, ε = {eps:g}: robust accuracy"),
    ]
    largest = max(int(matrix.max()) for matrix, _ in panels) or 1
    side = max(4.0, 0.42 * num_classes + 1.6)
    figure = Figure(figsize=(2 * side + 1.4, side + 0.8), layout="constrained")
    both = figure.subplots(1, 2)
    for axes, (matrix, heading) in zip(both, panels):
        image = axes.imshow(matrix, cmap="Blues", vmin=0, vmax=largest)
        correct = int(np.trace(matrix))
        axes.set_title(f"{heading} {100.0 * correct / n:.1f} % ({correct}/{n})", fontsize=11)
        axes.set_xlabel("predicted class")
        axes.set_ylabel("true class")
        if num_classes <= LABEL_TICKS_UP_TO:
            names = [str(name) for name in classes]
            slanted = num_classes * max(map(len, names)) > 30  # upright, they would run into each other
            axes.set_xticks(range(num_classes), names, rotation=45 if slanted else 0,
                            ha="right" if slanted else "center")
            axes.set_yticks(range(num_classes), names)
        if num_classes <= ANNOTATE_UP_TO:
            for (true, predicted), count in np.ndenumerate(matrix):
                if count:  # zeros left blank: the few non-zero squares stand out
                    axes.text(predicted, true, str(count), ha="center", va="center", fontsize=9,
                              color="white" if count > largest / 2 else "black")
    figure.colorbar(image, ax=list(both), label="test points", shrink=0.8)
    figure.suptitle(
        f"Confusion matrices on {n} test points (rows: true class, columns: predicted)\n"
        "only clean-correct points are attacked, as in the leaderboard",
        fontsize=11,
    )
    return figure


def _rg_figure(ranking: pd.DataFrame, title: str | None) -> Figure:
    from matplotlib.figure import Figure

    scores = [column for column in ranking.columns if column.startswith("R&G ")]
    scores = [column for column in scores if column != f"R&G {WORST_CASE}"] + [f"R&G {WORST_CASE}"]
    frame = ranking.reset_index(drop=True)
    unranked = frame["rank"].isna() if "rank" in frame else pd.Series(False, index=frame.index)
    figure = Figure(figsize=(max(5.0, 1.1 * len(frame) * (len(scores) + 1) / 3), 4.5), layout="constrained")
    axes = figure.subplots()
    width = 0.8 / len(scores)
    for index, column in enumerate(scores):
        values = pd.to_numeric(frame[column], errors="coerce")
        positions = np.arange(len(frame)) + (index - (len(scores) - 1) / 2) * width
        bars = axes.bar(positions, values.fillna(0.0), width,
                        color="black" if column.endswith(WORST_CASE) else f"C{index % 10}", label=column[4:])
        for bar, position, value, hatch in zip(bars, positions, values, unranked):
            if pd.isna(value):  # a failed cell: no score, and no bar that could read as a score of 0
                bar.set_visible(False)
                axes.text(position, 2, "failed", rotation=90, ha="center", va="bottom", fontsize="x-small")
            elif hatch:
                bar.set_hatch("//")
                bar.set_alpha(0.5)
    labels = [f"{model}/{defense}" + ("\n(unranked)" if listed else "")
              for model, defense, listed in zip(frame["model"], frame["defense"], unranked)]
    axes.set_xticks(np.arange(len(frame)), labels, rotation=30, ha="right", fontsize="small")
    axes.set(ylabel="R&G (sum of accuracies over the ε grid, %)")
    axes.grid(axis="y", alpha=0.3)
    axes.legend(fontsize="small")
    if title:
        figure.suptitle(title)
    return figure


def _boundary_figure(models: Sequence[tuple[str, nn.Module]], x: torch.Tensor, y: torch.Tensor,
                     classes: Sequence[str], title: str | None) -> Figure:
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    low, high = x.min(dim=0).values, x.max(dim=0).values
    margin = 0.05 * (high - low)
    axis = [torch.linspace(float(low[k] - margin[k]), float(high[k] + margin[k]), BOUNDARY_GRID) for k in range(2)]
    grid_x, grid_y = torch.meshgrid(*axis, indexing="xy")
    grid = torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=1).to(x.device)
    colors = ListedColormap([f"C{k % 10}" for k in range(len(classes))])
    figure = Figure(figsize=(4.2 * len(models), 4.2), layout="constrained")
    points, labels = x.cpu().numpy(), y.cpu().numpy()
    for axes, (label, model) in zip(figure.subplots(1, len(models), squeeze=False)[0], models):
        with torch.no_grad(), frozen(model):
            regions = torch.cat([model(grid[start:start + 4096]).argmax(dim=1) for start in range(0, len(grid), 4096)])
        axes.pcolormesh(grid_x.numpy(), grid_y.numpy(), regions.view(BOUNDARY_GRID, BOUNDARY_GRID).cpu().numpy(),
                        cmap=colors, vmin=-0.5, vmax=len(classes) - 0.5, alpha=0.25, shading="auto")
        axes.scatter(points[:, 0], points[:, 1], c=labels, cmap=colors, vmin=-0.5, vmax=len(classes) - 0.5,
                     s=8, edgecolors="none")
        axes.set(title=label, xlabel="x1", ylabel="x2")
    if title:
        figure.suptitle(title)
    return figure


def _restarts_figure(runs: Sequence[tuple[str, torch.Tensor]], title: str | None, histogram: bool) -> Figure:
    from matplotlib.figure import Figure

    points = runs[0][1].shape[0]
    figure = Figure(figsize=(3.2 * points, 2.6 * len(runs)), layout="constrained")
    grid = figure.subplots(len(runs), points, squeeze=False, sharex="col" if histogram else True)
    for row, (label, losses) in zip(grid, runs):
        for column, (axes, point) in enumerate(zip(row, losses)):
            if histogram:
                axes.hist(point[:, -1].numpy(), bins=40, color="C0")
                axes.set(xlabel="final cross-entropy", ylabel="restarts")
            else:
                for trajectory in point:
                    axes.plot(trajectory.numpy(), color="C0", alpha=0.4, linewidth=0.8)
                axes.set(xlabel="iteration", ylabel="cross-entropy")
            axes.set_title(f"{label}, point {column + 1}", fontsize="small")
    if title:
        figure.suptitle(title)
    return figure


def _recipe(defense: str) -> str:
    """A defense's label without its training budget: at-fgsm[alpha=0.0,eps=0.01] -> at-fgsm[alpha=0.0]."""
    spec = PluginSpec.parse(defense)
    options = ",".join(f"{key}={value}" for key, value in spec.options.items() if key != "eps")
    return f"{spec.name}[{options}]" if options else spec.name


def _training_eps_figure(matched: pd.DataFrame, title: str | None) -> Figure:
    from matplotlib.figure import Figure

    attack = "pgd" if "pgd at train eps %" in matched.columns else WORST_CASE
    models = list(dict.fromkeys(matched["model"]))
    figure = Figure(figsize=(5.5 * len(models), 4.2), layout="constrained")
    for axes, model in zip(figure.subplots(1, len(models), squeeze=False)[0], models):
        rows = matched[matched["model"] == model].assign(recipe=lambda frame: frame["defense"].map(_recipe))
        for index, (recipe, group) in enumerate(rows.groupby("recipe", sort=False)):
            group = group.sort_values("train eps")
            color = f"C{index % 10}"
            axes.plot(group["train eps"], group["clean %"], "--", color=color, marker="o", label=f"{recipe}: clean")
            axes.plot(group["train eps"], group[f"{attack} at train eps %"], "-", color=color, marker="s",
                      label=f"{recipe}: {attack} at its training ε")
        axes.set(title=model, xlabel="training ε", ylabel="accuracy (%)", ylim=(0, 100))
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    if title:
        figure.suptitle(title)
    return figure


def _save(figure: Figure, path: Path) -> Path:
    """Write the figure atomically: the leaderboard rewrites its plot after every job."""
    with atomic_target(path) as temporary:
        figure.savefig(temporary, format=path.suffix[1:].lower(), dpi=DPI)
    return path
