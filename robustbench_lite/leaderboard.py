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
from pathlib import Path
from typing import Any

import pandas as pd

from . import plot, sanity
from .atomic import atomic_target, temporary_path
from .choices import LEADERBOARD_FORMATS, WORST_CASE
from .errors import UsageError

FORMATS = LEADERBOARD_FORMATS
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


# What makes two runs the same benchmark: the sidecar fields that decide its rows and numbers.
IDENTITY_FIELDS = ("eps", "seed", "training_config", "target", "shard", "eot", "acceleration", "deterministic")


def run_identity(metadata: dict[str, Any]) -> dict[str, Any]:
    """The settings of the run that ``metadata`` describes which decide its leaderboard (plugin versions aside),
    the device type included: CPU and CUDA numbers differ."""
    plugins = {kind: sorted(labels) for kind, labels in metadata.get("plugins", {}).items()}
    data = metadata.get("dataset", {})
    return {"plugins": plugins, "test_points": data.get("n_examples"), "device": metadata.get("device", {}).get("type"),
            **{field: metadata.get(field) for field in IDENTITY_FIELDS}}


def refuse_another_run(out_dir: Path, name: str, metadata: dict[str, Any]) -> None:
    """Raise a UsageError if ``<out_dir>/<name>.json`` holds the leaderboard of a run with other settings.

    The same command again (a resumed or repeated run) may rewrite its own files; another would
    silently replace a leaderboard its files no longer describe.
    """
    path = out_dir / f"{name}.json"
    if not path.exists():
        return
    try:
        recorded = run_identity(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError, TypeError):
        recorded = None
    ours = json.loads(json.dumps(run_identity(metadata), default=str))  # as it would read back from the file
    if recorded == ours:
        return
    differ = "unreadable" if recorded is None else ", ".join(key for key in ours if recorded.get(key) != ours[key])
    raise UsageError(f"{str(path)!r} holds the leaderboard of another run (differs in: {differ}); "
                     "give this run another --name or --out, or remove that file to replace it")


def partial_reason(metadata: dict[str, Any]) -> str | None:
    """Why the leaderboard of ``metadata``'s run is not final, or None when the run finished."""
    pending = metadata.get("partial")
    if isinstance(pending, str):  # a sidecar read back: the reason as it was written
        return pending
    if pending:
        return (f"{pending['jobs_finished']} of {pending['jobs']} trained models evaluated; "
                f"missing: {', '.join(pending['missing'])}")
    shard = metadata.get("shard")
    if shard:
        return (f"shard {shard['index']} of {shard['count']}, which holds only its share of the trained models; "
                "merge the shards' stores with rbl leaderboard --db A --db B ...")
    merged = metadata.get("shards_merged")
    if merged and merged["indices"] != list(range(1, merged["count"] + 1)):
        missing = sorted(set(range(1, merged["count"] + 1)) - set(merged["indices"]))
        return f"merged without shard(s) {', '.join(map(str, missing))} of {merged['count']}"
    stores = metadata.get("merged_from") or ([metadata["store"]] if "store" in metadata else [])
    unfinished = [str(store.get("run")) for store in stores if "finished" in store and not store["finished"]]
    if unfinished:
        return f"run {', '.join(unfinished)} in the results store has not finished: interrupted, or still running"
    return None


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


ROW = ["model", "defense", "attack"]


def _per_eps(cells: pd.DataFrame, values: str) -> pd.DataFrame:
    """``values`` of each (model, defense, attack) that ``cells`` holds, in their order, one column per eps.

    Only rows that were evaluated: a pivot would also invent every (model, defense) pair of other rows' labels.
    """
    grid = sorted(cells["eps"].unique())
    present = pd.MultiIndex.from_frame(cells[ROW].drop_duplicates())
    table = cells.groupby([*ROW, "eps"], sort=False)[values].first().unstack("eps")
    table = table.reindex(index=present, columns=grid)
    table.columns = [eps_column(eps) for eps in grid]
    return table


def accuracy_table(cells: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, defense, attack): accuracy (%) at each eps, then the R&G score.

    R&G is missing (NaN) where a cell of the row failed: a partial sum would not be comparable. It sums
    the accuracies as every format prints them (two decimals), so it always equals the row a reader sees.
    """
    table = _per_eps(cells, "accuracy")
    printed = table.map(lambda accuracy: float(f"{accuracy:.2f}") if pd.notna(accuracy) else accuracy)
    table["R&G"] = printed.sum(axis=1, skipna=False)
    failed = cells[cells["status"] != "ok"].groupby(["model", "defense", "attack"], sort=False).size()
    table["failed cells"] = failed.reindex(table.index).fillna(0).astype(int)
    return table.reset_index()


def matched_table(cells: pd.DataFrame, metadata: dict[str, Any]) -> pd.DataFrame | None:
    """Each trained (model, defense) at its own training budget: its training eps, its clean accuracy,
    and each attack's accuracy (%) at that eps (NaN where the grid lacks it): the "natural vs
    perturbed images" view of a run whose defenses train at different budgets. None for a run whose
    defenses all train at one budget (the usual table shows it all)."""
    budgets = {key: entry["train_eps"] for key, entry in metadata.get("training", {}).items() if "train_eps" in entry}
    if len(set(budgets.values())) < 2:
        return None
    table = accuracy_table(cells)
    grid = {float(eps): eps_column(eps) for eps in metadata.get("eps", [])}
    rows = []
    for (model, defense), group in table.groupby(["model", "defense"], sort=False):
        budget = budgets.get(f"{model}/{defense}")
        if budget is None:  # an adaptive row of an inference-time defense, or a failed training
            continue
        column = next((name for eps, name in grid.items() if math.isclose(eps, budget, abs_tol=1e-9)), None)
        row = {"model": model, "defense": defense, "train eps": budget,
               "clean %": group[eps_column(0.0)].iloc[0] if eps_column(0.0) in group else math.nan}
        for attack, accuracy in zip(group["attack"], group[column] if column else [math.nan] * len(group)):
            row[f"{attack} at train eps %"] = accuracy
        rows.append(row)
    return pd.DataFrame(rows)


def success_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Targeted runs: one row per (model, defense, attack) with the targeted success rate (%) at each eps."""
    return _per_eps(cells, "target_success").reset_index()


def ranking(
    cells: pd.DataFrame,
    metadata: dict[str, Any] | None = None,
    findings: dict[tuple[str, str], list[sanity.Finding]] | None = None,
) -> pd.DataFrame:
    """One row per (model, defense): clean accuracy, the R&G score of each attack and the worst case, and ``flags``.

    Ranked by worst-case R&G. Unranked (rank <NA>, listed last): naive evaluations of defended
    models, rows without a worst-case R&G (a failed cell), and rows flagged by one of
    :data:`~robustbench_lite.sanity.UNRANKED_CHECKS` (degenerate models).

    ``flags`` names the sanity checks the row fails ("" if none), computed with the run's
    ``metadata`` (``cells.attrs["metadata"]`` by default) unless their ``findings`` are given.
    """
    cells, metadata = sanity.detached(cells, metadata)
    table = accuracy_table(cells)
    present = pd.MultiIndex.from_frame(table[["model", "defense"]].drop_duplicates())
    wide = table.set_index(["model", "defense", "attack"])["R&G"].unstack("attack").reindex(index=present)
    attacks = [attack for attack in table["attack"].unique() if attack != WORST_CASE] + [WORST_CASE]
    wide = wide.reindex(columns=attacks)
    wide.columns = [f"R&G {attack}" for attack in attacks]
    clean = table[table["attack"] == WORST_CASE].set_index(["model", "defense"])[eps_column(0.0)]
    wide.insert(0, "clean %", clean)
    wide = wide.reset_index()
    findings = sanity.check(cells, metadata) if findings is None else findings
    partial = partial_reason(metadata)
    wide["flags"] = [", ".join(filter(None, [sanity.flags(findings, model, defense), "partial-run" if partial else ""]))
                     for model, defense in zip(wide["model"], wide["defense"])]
    naive_rows = set(map(tuple, cells.loc[cells["evaluation"] == "naive", ["model", "defense"]].values))
    wide["_unranked"] = [
        _unranked_reason((model, defense) in naive_rows, findings.get((model, defense), []), worst)
        for model, defense, worst in zip(wide["model"], wide["defense"], wide[f"R&G {WORST_CASE}"])
    ]
    wide["_listed"] = wide["_unranked"].ne("")
    wide = wide.sort_values(["_listed", f"R&G {WORST_CASE}"], ascending=[True, False], na_position="last", kind="stable")
    ranked = int((~wide["_listed"]).sum())
    wide.insert(0, "rank", pd.array(list(range(1, ranked + 1)) + [None] * (len(wide) - ranked), dtype="Int64"))
    wide.attrs["unranked"] = dict(zip(zip(wide["model"], wide["defense"]), wide["_unranked"]))
    return wide.drop(columns=["_unranked", "_listed"]).reset_index(drop=True)


def _unranked_reason(naive: bool, findings: list[sanity.Finding], worst_case_rg: float) -> str:
    """Why a ranking row is listed but not ranked ("naive", "failed", "degenerate"), or "" when it is ranked."""
    if naive:  # a naive evaluation measures the attacks' blindness, not the defense
        return "naive"
    checks = {finding.check for finding in findings}
    if "failed-cells" in checks or pd.isna(worst_case_rg):
        return "failed"
    return "degenerate" if checks & sanity.UNRANKED_CHECKS else ""


def write(
    cells: pd.DataFrame, metadata: dict[str, Any], out_dir: Path, name: str, plots: bool = True
) -> dict[str, Path]:
    """Write ``<name>.csv``, ``<name>.md``, ``<name>.json`` and the plots the Markdown links into ``out_dir``.

    Returns the paths by format, plus ``accuracy`` for the accuracy-vs-eps plot. With ``plots`` false
    the plots are not drawn (a run draws them once, at its end): the Markdown links them all the same.
    """
    cells, _ = sanity.detached(cells, metadata)
    matched = matched_table(cells, metadata)
    drawn = plot.leaderboard_plots(cells, out_dir, name, matched) if plots else {}
    names = plot.leaderboard_plot_names(name, matched is not None)
    paths = {}
    for suffix, text in _texts(cells, metadata, name, names, matched).items():
        paths[suffix] = out_dir / f"{name}.{suffix}"
        _write_text(paths[suffix], text)
    return {**paths, **drawn}


def render(cells: pd.DataFrame, metadata: dict[str, Any], name: str, plots: dict[str, str] | None = None) -> dict[str, str]:
    """The leaderboard as the text of each format in :data:`FORMATS`; the Markdown links ``plots`` (kind: file name)."""
    cells, _ = sanity.detached(cells, metadata)
    return _texts(cells, metadata, name, plots or {}, matched_table(cells, metadata))


def _texts(cells: pd.DataFrame, metadata: dict[str, Any], name: str, plots: dict[str, str],
           matched: pd.DataFrame | None) -> dict[str, str]:
    """:func:`render`'s texts, from cells without attrs and the run's :func:`matched_table`."""
    table = accuracy_table(cells)
    findings = sanity.check(cells, metadata)
    ranks = ranking(cells, metadata, findings)
    table = table.merge(ranks[["model", "defense", "rank", "flags"]], on=["model", "defense"])
    table["_worst_last"] = table["attack"].eq(WORST_CASE)
    table = table.sort_values(["rank", "_worst_last"], kind="stable").drop(columns="_worst_last")
    table = table[["rank"] + [column for column in table.columns if column != "rank"]]
    sidecar = {
        **metadata, "partial": partial_reason(metadata), "ranking": _records(ranks),
        "sanity": [
            {"model": model, "defense": defense, "check": finding.check, "reason": finding.reason}
            for (model, defense), row in findings.items() for finding in row
        ],
        "cells": _records(with_intervals(cells)),
    }
    if matched is not None:
        sidecar["matched"] = _records(matched)
    return {
        "md": _markdown(name, ranks, table, cells, metadata, findings, plots, matched),
        "csv": table.to_csv(index=False, float_format="%.2f"),
        "json": json.dumps(sidecar, indent=2, default=str) + "\n",
    }


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts, with NaN written as null."""
    return [
        {key: (None if isinstance(value, float) and math.isnan(value) else value) for key, value in row.items()}
        for row in frame.to_dict(orient="records")
    ]


def _unranked_as_reason(frame: pd.DataFrame, unranked: dict[tuple[str, str], str]) -> pd.DataFrame:
    """The frame with the rank of each unranked row written as why ("naive", "failed", "degenerate")."""
    reasons = [unranked.get((model, defense), "") for model, defense in zip(frame["model"], frame["defense"])]
    return frame.assign(rank=[reason if reason else str(rank) for rank, reason in zip(frame["rank"], reasons)])


def _markdown(
    name: str,
    ranks: pd.DataFrame,
    table: pd.DataFrame,
    cells: pd.DataFrame,
    metadata: dict[str, Any],
    findings: dict[tuple[str, str], list[sanity.Finding]],
    plots: dict[str, str],
    matched: pd.DataFrame | None,
) -> str:
    data = metadata["dataset"]
    partial = partial_reason(metadata)
    lines = [
        f"# Leaderboard: {name}",
        "",
        *([f"> **Partial leaderboard, not final**: {partial}. Every row is flagged `partial-run`.", ""]
          if partial else []),
        f"Dataset **{data['name']}** ({data['n_examples']} test points of {data['n_test']}, "
        f"trained on {data['n_train']}), eps grid {', '.join(f'{eps:g}' for eps in metadata['eps'])}, "
        f"seed {metadata['seed']}, device {metadata['device']['type']}, "
        f"robustbench_lite {metadata['versions']['robustbench_lite']}, torch {metadata['versions']['torch']}.",
        "",
        "Robust accuracy counts a point only if it is classified correctly both clean and attacked; "
        "eps = 0 is clean accuracy. **R&G** = sum of the accuracies (%) over the eps grid, eps = 0 included. "
        f"Ranked by the R&G of the per-sample **{WORST_CASE}** over all attacks. Listed last, unranked: "
        "naive evaluations of defended models (`naive`), rows with a failed cell, whose worst case would miss "
        "an attack (`failed`), and degenerate models (`degenerate`, see the sanity checks).",
        "",
        *_settings_section(metadata),
        "## Ranking",
        "",
        _markdown_table(_unranked_as_reason(ranks, ranks.attrs["unranked"])),
        "",
        *([f"![Robust accuracy vs eps per attack, one panel per model and defense]({plots['accuracy']})", ""]
          if "accuracy" in plots else []),
        *_evaluations_section(cells, metadata),
        *_matched_section(matched, metadata, plots.get("train-eps")),
        *_sanity_section(findings),
        "## Robust accuracy (%) per attack and eps",
        "",
        f"Each accuracy ± the half-width of its 95% Wilson interval on {data['n_examples']} points "
        "(the exact bounds are `ci_low` and `ci_high` in the JSON sidecar): two accuracies whose intervals overlap "
        "are not shown to differ by this table.",
        "",
        _markdown_table(_unranked_as_reason(_plus_minus(table.drop(columns=["failed cells", "flags"]), cells),
                                            ranks.attrs["unranked"])),
        "",
    ]
    if "target" in metadata:
        target = metadata["target"]
        lines += [
            f"## Targeted success rate (%), target class {target['name']!r} ({target['index']})",
            "",
            "Among the clean-correct test points of other classes, the share classified as the target after the attack.",
            "",
            _markdown_table(success_table(cells)),
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


def _markdown_table(frame: pd.DataFrame) -> str:
    """``frame`` as a GitHub table; a number that could not be computed (NaN or None) reads "failed"."""
    return frame.astype(object).where(frame.notna(), None).to_markdown(index=False, floatfmt=".2f", missingval="failed")


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


def _settings_section(metadata: dict[str, Any]) -> list[str]:
    """What produced the numbers: the eps grid and its source, the training of every row, every
    attack's options, and how many cells were computed or reused from the results store."""
    training = metadata.get("training_config", {})
    source = f" ({metadata['eps_source']})" if "eps_source" in metadata else ""
    lines = [
        "## Settings",
        "",
        f"- eps grid: {', '.join(f'{eps:g}' for eps in metadata['eps'])}{source}",
        f"- training: {_count(training.get('epochs', '?'), 'epoch')}, batch {training.get('batch_size', '?')}, "
        f"train eps {training.get('train_eps', '?')}, lr schedule {training.get('lr_schedule', 'none')}, "
        f"early stop {training.get('early_stop') or 'off'}",
    ]
    work = metadata.get("work", {})
    if "cells_reused" in work:
        lines.append(f"- cells: {work['cells_computed']} computed in this run, {work['cells_reused']} reused from "
                     "the results store (same settings and plugin code)")
    for label, attack in metadata.get("attacks", {}).items():
        options = ", ".join(f"{key}={'default' if value == 'None' else value}"
                            for key, value in attack.get("options", {}).items())
        lines.append(f"- attack `{label}` ({attack.get('norm')}, {attack.get('family')}): {options or 'no options'}")
    rows = [
        {"model": key.partition("/")[0], "defense": key.partition("/")[2], "trained as": info.get("trained_as", ""),
         "optimizer": info.get("optimizer", "?"), "weights": _weights(info)}
        for key, info in metadata.get("training", {}).items()
    ]
    if rows:
        lines += ["", _markdown_table(pd.DataFrame(rows))]
    return lines + ["", "Options at `default` follow the rule `rbl list NAME` gives for them.", ""]


def _count(n: Any, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _weights(training: dict[str, Any]) -> str:
    if training.get("status") != "ok":
        return f"failed: {training.get('error', '')}"
    return "from the weights cache" if training.get("from_cache") else "trained in this run"  # seconds: the sidecar


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


def _matched_section(matched: pd.DataFrame | None, metadata: dict[str, Any], figure: str | None) -> list[str]:
    """Each defense on natural inputs and under attack at its own training budget; nothing when all share one."""
    if matched is None:
        return []
    grid = [float(eps) for eps in metadata.get("eps", [])]
    off_grid = [not any(math.isclose(budget, eps, abs_tol=1e-9) for eps in grid) for budget in matched["train eps"]]
    shown = matched.astype(object)
    shown["train eps"] = [f"{budget:g}" for budget in matched["train eps"]]  # 0.001 is not 0.00
    accuracies = [column for column in shown.columns if column.endswith(" %")]
    shown[accuracies] = matched[accuracies].map(lambda value: "failed" if pd.isna(value) else f"{value:.2f}")
    shown.loc[off_grid, [column for column in accuracies if column != "clean %"]] = "not on the eps grid"
    return [
        "## Each defense at its own training budget",
        "",
        "The defenses of this run train at different budgets (`train eps`): each one's clean accuracy and its "
        "robust accuracy (%) under each attack at the eps it trained for (the natural vs perturbed view).",
        "",
        shown.to_markdown(index=False, disable_numparse=True),
        "",
        *([f"![Clean accuracy and accuracy under attack at each defense's own training eps]({figure})", ""]
          if figure else []),
    ]


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
