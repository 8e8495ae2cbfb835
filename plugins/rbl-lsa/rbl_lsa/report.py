"""The files `rbl lsa` writes: the per-layer table as CSV and Markdown, and a bar plot of CM per layer."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .analysis import most_vulnerable_layers, sustainability_statistics

MVL_COLOR = "tab:red"
OTHER_COLOR = "tab:blue"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "-", text).strip("-")


@dataclass(frozen=True)
class AnalysisSettings:
    """What an analysis was run on, for file names and the report's header."""

    model: str
    defense: str
    dataset: str
    attack: str
    eps: float
    n: int
    seed: int
    eta: float

    @property
    def stem(self) -> str:
        return "lsa-" + "-".join(_slug(part) for part in (self.model, self.defense, self.dataset))


def flag_most_vulnerable(table: pd.DataFrame, eta: float) -> pd.DataFrame:
    """The table with a boolean ``mvl`` column: the layers of Algorithm 1's MVL list at cut-off eta."""
    return table.assign(mvl=table["layer"].isin(most_vulnerable_layers(table, eta)))


def summary(table: pd.DataFrame, eta: float) -> str:
    """mu, sigma, the cut-off and the MVL list in one line."""
    mu, sigma = sustainability_statistics(table)
    layers = table.loc[table["mvl"], "layer"].tolist()
    listed = ", ".join(layers) if layers else "none (no layer's mean CM exceeds the cut-off; lower --eta)"
    return f"mu = {mu:.4f}, sigma = {sigma:.4f}, cut-off mu + {eta:g}*sigma = {mu + eta * sigma:.4f}; MVL: {listed}"


def write_report(table: pd.DataFrame, settings: AnalysisSettings, out_dir: Path) -> dict[str, Path]:
    """Write ``<stem>.csv``, ``<stem>.md`` and ``<stem>.png`` into ``out_dir``; return their paths by suffix."""
    paths = {suffix: out_dir / f"{settings.stem}.{suffix}" for suffix in ("csv", "md", "png")}
    table.to_csv(paths["csv"], index=False, float_format="%.6g")
    paths["md"].write_text(_markdown(table, settings, paths["png"].name), encoding="utf-8")
    _plot(table, settings, paths["png"])
    return paths


def _markdown(table: pd.DataFrame, settings: AnalysisSettings, image: str) -> str:
    return "\n".join(
        [
            f"# LSA: {settings.model} / {settings.defense} on {settings.dataset}",
            "",
            f"Attack **{settings.attack}** at eps {settings.eps:g} on {settings.n} test points, seed {settings.seed}. "
            "Per sample, CM_l = ||phi_l(x) - phi_l(x_adv)||_F / ||phi_l(x)||_F at the output phi_l of each Conv/Linear "
            "layer; the table gives its mean and standard deviation over the samples. mu and sigma are taken over all "
            "(sample, layer) values; the MVL list holds the layers whose mean CM exceeds mu + eta*sigma (Algorithm 1).",
            "",
            summary(table, settings.eta),
            "",
            table.to_markdown(index=False, floatfmt=".4f"),
            "",
            f"![CM per layer]({image})",
            "",
        ]
    )


def _plot(table: pd.DataFrame, settings: AnalysisSettings, path: Path) -> None:
    # Imported here: matplotlib costs every `rbl` start a second otherwise. A bare Figure draws
    # with the Agg canvas and leaves pyplot's global backend alone.
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    mu, sigma = sustainability_statistics(table)
    figure = Figure(figsize=(max(6.0, 0.7 * len(table)), 4.5), layout="constrained")
    axes = figure.subplots()
    positions = range(len(table))
    colors = [MVL_COLOR if flagged else OTHER_COLOR for flagged in table["mvl"]]
    axes.bar(positions, table["mean_cm"], yerr=table["std_cm"], color=colors, capsize=3)
    axes.set_xticks(list(positions), [f"{row.layer}\n{row.type}" for row in table.itertuples()], fontsize=8)
    cut_off = axes.axhline(mu + settings.eta * sigma, color=MVL_COLOR, linestyle="--")
    mean = axes.axhline(mu, color="gray", linestyle=":")
    axes.legend(
        [Patch(color=MVL_COLOR), Patch(color=OTHER_COLOR), cut_off, mean],
        ["MVL", "other layers", f"mu + {settings.eta:g}*sigma = {mu + settings.eta * sigma:.3g}", f"mu = {mu:.3g}"],
    )
    axes.set_ylabel("CM (relative error), mean ± std")
    axes.set_title(f"LSA of {settings.model} / {settings.defense} on {settings.dataset}: {settings.attack}, eps {settings.eps:g}")
    figure.savefig(path, dpi=120)
