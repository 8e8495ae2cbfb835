"""Leaderboard tables from matrix results, written as CSV, Markdown and a JSON sidecar.

The R&G score of a row is the sum of its accuracies (in %) over the whole eps grid, eps = 0
included (Khalooei et al.). (model, defense) pairs are ranked by the R&G of their per-sample
worst case over all attacks, the number an honest comparison rests on. Each row carries the
``flags`` of the sanity checks it fails (see :mod:`robustbench_lite.sanity`), and inference-time
defenses appear twice: naive, and adaptive (defense label ``+bpda`` / ``+eot``).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from . import plot, sanity
from .atomic import atomic_target, temporary_path
from .errors import UsageError

WORST_CASE = "worst-case"
FORMATS = ("md", "csv", "json")
DEFAULT_NAME_MAX = 255  # bytes per file name where the file system does not say (ext4, APFS, NTFS)
WILSON_Z = 1.959964  # the standard normal quantile of a two-sided 95% interval


def wilson_interval(correct: int, n: int, z: float = WILSON_Z) -> tuple[float, float]:
    """The Wilson score interval of ``correct`` successes in ``n`` trials, in percent (95% by default).

    Unlike the normal approximation it stays inside [0, 100] and is honest at 0% and 100%, where
    robust accuracies often sit.
    """
    if n <= 0:
        raise ValueError(f"a confidence interval needs n > 0 trials, got {n}")
    share = correct / n
    scale = 1 + z * z / n
    centre = (share + z * z / (2 * n)) / scale
    half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / scale
    return 100 * max(0.0, centre - half), 100 * min(1.0, centre + half)


def with_intervals(cells: pd.DataFrame) -> pd.DataFrame:
    """``cells`` with ``ci_low`` and ``ci_high``, the 95% Wilson interval of each accuracy (%), NaN where none."""
    bounds = [
        wilson_interval(int(correct), int(n)) if pd.notna(correct) and n else (math.nan, math.nan)
        for correct, n in zip(cells["correct"], cells["n"])
    ]
    return cells.assign(ci_low=[low for low, _ in bounds], ci_high=[high for _, high in bounds])


def ensure_writable(out_dir: Path) -> None:
    """Create ``out_dir`` or raise a UsageError naming it, before any work is done."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as error:
        raise UsageError(f"output folder {str(out_dir)!r} is not writable: {error.strerror or error}") from None


def check_name(out_dir: Path, name: str) -> None:
    """Refuse a benchmark name whose files in ``out_dir`` the file system could not name (found only at the end else)."""
    longest = temporary_path(out_dir / plot.accuracy_file_name(name)).name  # the longest name ever written
    try:
        limit = os.pathconf(out_dir, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = DEFAULT_NAME_MAX
    if len(os.fsencode(longest)) > limit:
        extra = len(os.fsencode(longest)) - len(os.fsencode(name))
        shown = name if len(name) <= 20 else f"{name[:20]}..."
        raise UsageError(
            f"benchmark name {shown!r} ({len(name)} characters) is too long: the file system allows file names of "
            f"{limit} bytes and the longest file the leaderboard writes (the temporary of <name>-accuracy.png) "
            f"adds {extra}; give --name of at most {limit - extra} characters"
        )


def eps_column(eps: float) -> str:
    """The leaderboard's column name of an eps value."""
    return f"eps={eps:g}"


def accuracy_table(cells: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, defense, attack): accuracy (%) at each eps, then the R&G score.

    R&G is missing (NaN) where a cell of the row failed: a partial sum would not be comparable.
    """
    grid = sorted(cells["eps"].unique())
    table = cells.pivot_table(
        index=["model", "defense", "attack"], columns="eps", values="accuracy", aggfunc="first", dropna=False, sort=False
    ).reindex(columns=grid)
    table.columns = [eps_column(eps) for eps in grid]
    table["R&G"] = table.sum(axis=1, skipna=False)
    failed = cells[cells["status"] != "ok"].groupby(["model", "defense", "attack"], sort=False).size()
    table["failed cells"] = failed.reindex(table.index).fillna(0).astype(int)
    return table.reset_index()


def success_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Targeted runs: one row per (model, defense, attack) with the targeted success rate (%) at each eps."""
    grid = sorted(cells["eps"].unique())
    table = cells.pivot_table(
        index=["model", "defense", "attack"], columns="eps", values="target_success", aggfunc="first",
        dropna=False, sort=False,
    ).reindex(columns=grid)
    table.columns = [eps_column(eps) for eps in grid]
    return table.reset_index()


def ranking(cells: pd.DataFrame, metadata: dict[str, Any] | None = None) -> pd.DataFrame:
    """One row per (model, defense): clean accuracy, the R&G score of each attack and the worst case, and ``flags``.

    Ranked by worst-case R&G; naive evaluations of defended models come last, unranked (rank <NA>).

    ``flags`` names the sanity checks the row fails ("" if none), computed with the run's
    ``metadata`` (``cells.attrs["metadata"]`` by default).
    """
    table = accuracy_table(cells)
    wide = table.pivot_table(index=["model", "defense"], columns="attack", values="R&G", sort=False, dropna=False)
    attacks = [attack for attack in table["attack"].unique() if attack != WORST_CASE] + [WORST_CASE]
    wide = wide.reindex(columns=attacks)
    wide.columns = [f"R&G {attack}" for attack in attacks]
    clean = table[table["attack"] == WORST_CASE].set_index(["model", "defense"])[eps_column(0.0)]
    wide.insert(0, "clean %", clean)
    wide = wide.reset_index()
    # A naive evaluation measures the attacks' blindness, not the defense: it is listed, never ranked.
    naive_rows = set(map(tuple, cells.loc[cells.get("evaluation", pd.Series(dtype=str)) == "naive", ["model", "defense"]].values))
    wide["_naive"] = [(model, defense) in naive_rows for model, defense in zip(wide["model"], wide["defense"])]
    wide = wide.sort_values(["_naive", f"R&G {WORST_CASE}"], ascending=[True, False], na_position="last", kind="stable")
    ranked = (~wide["_naive"]).sum()
    wide.insert(0, "rank", pd.array(list(range(1, ranked + 1)) + [None] * (len(wide) - ranked), dtype="Int64"))
    wide = wide.drop(columns="_naive")
    findings = sanity.check(cells, metadata)
    wide["flags"] = [sanity.flags(findings, model, defense) for model, defense in zip(wide["model"], wide["defense"])]
    return wide.reset_index(drop=True)


def write(cells: pd.DataFrame, metadata: dict[str, Any], out_dir: Path, name: str) -> dict[str, Path]:
    """Write ``<name>.csv``, ``<name>.md``, ``<name>.json`` and the plots the Markdown links into ``out_dir``.

    Returns the paths by format, plus ``accuracy`` for the accuracy-vs-eps plot.
    """
    plots = plot.leaderboard_plots(cells, out_dir, name)
    paths = {}
    for suffix, text in render(cells, metadata, name, {kind: path.name for kind, path in plots.items()}).items():
        paths[suffix] = out_dir / f"{name}.{suffix}"
        _write_text(paths[suffix], text)
    return {**paths, **plots}


def render(cells: pd.DataFrame, metadata: dict[str, Any], name: str, plots: dict[str, str] | None = None) -> dict[str, str]:
    """The leaderboard as the text of each format in :data:`FORMATS`; the Markdown links ``plots`` (kind: file name)."""
    table = accuracy_table(cells)
    ranks = ranking(cells, metadata)
    table = table.merge(ranks[["model", "defense", "rank", "flags"]], on=["model", "defense"])
    table["_worst_last"] = table["attack"].eq(WORST_CASE)
    table = table.sort_values(["rank", "_worst_last"], kind="stable").drop(columns="_worst_last")
    table = table[["rank"] + [column for column in table.columns if column != "rank"]]
    findings = sanity.check(cells, metadata)
    sidecar = {
        **metadata, "ranking": _records(ranks),
        "sanity": [
            {"model": model, "defense": defense, "check": finding.check, "reason": finding.reason}
            for (model, defense), row in findings.items() for finding in row
        ],
        "cells": _records(with_intervals(cells)),
    }
    return {
        "md": _markdown(name, ranks, table, cells, metadata, findings, plots or {}),
        "csv": table.to_csv(index=False, float_format="%.2f"),
        "json": json.dumps(sidecar, indent=2, default=str) + "\n",
    }


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts, with NaN written as null."""
    return [
        {key: (None if isinstance(value, float) and math.isnan(value) else value) for key, value in row.items()}
        for row in frame.to_dict(orient="records")
    ]


def _unranked_as_naive(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with the rank of unranked (naive) rows written as "naive" rather than read as a failure."""
    return frame.assign(rank=frame["rank"].astype("string").fillna("naive"))


def _markdown(
    name: str,
    ranks: pd.DataFrame,
    table: pd.DataFrame,
    cells: pd.DataFrame,
    metadata: dict[str, Any],
    findings: dict[tuple[str, str], list[sanity.Finding]],
    plots: dict[str, str],
) -> str:
    data = metadata["dataset"]
    lines = [
        f"# Leaderboard: {name}",
        "",
        f"Dataset **{data['name']}** ({data['n_examples']} test points of {data['n_test']}, "
        f"trained on {data['n_train']}), eps grid {', '.join(f'{eps:g}' for eps in metadata['eps'])}, "
        f"seed {metadata['seed']}, device {metadata['device']['type']}, "
        f"robustbench_lite {metadata['versions']['robustbench_lite']}, torch {metadata['versions']['torch']}.",
        "",
        "Robust accuracy counts a point only if it is classified correctly both clean and attacked; "
        "eps = 0 is clean accuracy. **R&G** = sum of the accuracies (%) over the eps grid, eps = 0 included. "
        f"Ranked by the R&G of the per-sample **{WORST_CASE}** over all attacks; naive evaluations of "
        "defended models are listed last, unranked.",
        "",
        "## Ranking",
        "",
        _unranked_as_naive(ranks).to_markdown(index=False, floatfmt=".2f", missingval="failed"),
        "",
        *([f"![Robust accuracy vs eps per attack, one panel per model and defense]({plots['accuracy']})", ""]
          if "accuracy" in plots else []),
        *_evaluations_section(cells, metadata),
        *_sanity_section(findings),
        "## Robust accuracy (%) per attack and eps",
        "",
        f"Each accuracy ± the half-width of its 95% Wilson interval on {data['n_examples']} points "
        "(the exact bounds are `ci_low` and `ci_high` in the JSON sidecar): two accuracies whose intervals overlap "
        "are not shown to differ by this table.",
        "",
        _unranked_as_naive(_plus_minus(table.drop(columns=["failed cells", "flags"]), cells)).to_markdown(
            index=False, floatfmt=".2f", missingval="failed"
        ),
        "",
    ]
    if "target" in metadata:
        target = metadata["target"]
        lines += [
            f"## Targeted success rate (%), target class {target['name']!r} ({target['index']})",
            "",
            "Among the clean-correct test points of other classes, the share classified as the target after the attack.",
            "",
            success_table(cells).to_markdown(index=False, floatfmt=".2f", missingval="failed"),
            "",
        ]
    failures = cells[cells["status"] != "ok"]
    if len(failures):
        lines += ["## Failed or incomplete cells", ""]
        lines += [
            f"- {row.model} / {row.defense} / {row.attack} / eps={row.eps:g}: {row.status}: {row.error}"
            for row in failures.itertuples()
        ]
        lines.append("")
    if metadata.get("command"):
        lines += ["Reproduce with:", "", "```", metadata["command"], "```", ""]
    return "\n".join(lines)


def _plus_minus(table: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """``table`` with each eps column's accuracy written as "accuracy ±half-width of its Wilson interval"."""
    text = {}
    for cell in with_intervals(cells).itertuples():
        if pd.notna(cell.accuracy):
            text[(cell.model, cell.defense, cell.attack, eps_column(cell.eps))] = (
                f"{cell.accuracy:.2f} ±{(cell.ci_high - cell.ci_low) / 2:.2f}"
            )
    table = table.copy()
    for column in [column for column in table.columns if column.startswith("eps=")]:
        table[column] = [text.get((model, defense, attack, column))
                         for model, defense, attack in zip(table["model"], table["defense"], table["attack"])]
    return table


def _evaluations_section(cells: pd.DataFrame, metadata: dict[str, Any]) -> list[str]:
    """Which rows are naive and which adaptive evaluations; nothing when every row is standard."""
    rows = cells.drop_duplicates(["model", "defense"])
    rows = rows[rows["evaluation"] != "standard"]
    if not len(rows):
        return []
    details = metadata.get("evaluations", {})
    lines = [
        "## Naive and adaptive evaluations",
        "",
        "Inference-time defenses (and models found to be random) are evaluated twice. **Naive**: the attacks "
        "see the defended model as it is, so a non-differentiable preprocessing gives them a zero gradient and "
        "a random one a single sample: such numbers overestimate robustness. **Adaptive** (Athalye et al. 2018): "
        "`+bpda` rows differentiate through the preprocessing as if it were the identity (BPDA) while its forward "
        f"pass stays real; `+eot` rows average each gradient over {metadata.get('eot', '?')} samples (EOT) in every "
        "attack with an `eot` option. A differentiable, deterministic preprocessing is attacked through its exact "
        "gradient, which is already adaptive, so it has a single row. Only the adaptive rows measure the defense.",
        "",
    ]
    for row in rows.itertuples():
        info = details.get(f"{row.model}/{row.defense}", {})
        how = {"zero": "zero gradient through the preprocessing", "identity": "BPDA",
               "exact": "exact gradient"}.get(info.get("gradient", ""), "")
        eot = f", EOT {info['eot']}" if info.get("eot", 1) > 1 else ""
        random = ", randomized model" if info.get("randomized") else ""
        lines.append(f"- {row.model} / {row.defense}: **{row.evaluation}** ({how}{eot}{random})")
    return lines + [""]


def _sanity_section(findings: dict[tuple[str, str], list[sanity.Finding]]) -> list[str]:
    lines = [
        "## Sanity checks",
        "",
        "Signs that the attacks, not the defense, failed (Athalye et al. 2018; Carlini et al. 2019): "
        + "; ".join(f"`{name}`: {meaning}" for name, meaning in sanity.CHECKS.items())
        + ". A flagged row's numbers are not to be trusted as they stand.",
        "",
    ]
    flagged = [(row, finding) for row, row_findings in findings.items() for finding in row_findings]
    if not flagged:
        return lines + ["No row is flagged.", ""]
    lines += [f"- {model} / {defense}: `{finding.check}`: {finding.reason}" for (model, defense), finding in flagged]
    return lines + [""]


def _write_text(path: Path, text: str) -> None:
    with atomic_target(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
