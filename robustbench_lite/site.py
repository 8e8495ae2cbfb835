"""A static, self-contained HTML site of leaderboards, and exports other tools read.

Built from JSON sidecars (``rbl run`` writes ``<out>/<name>.json``) or from a results store: an
index of benchmarks and one page per benchmark (ranked, sortable, filterable table; flags with
their reasons; Wilson intervals; an inline SVG accuracy-vs-eps chart per row; provenance and the
command that reproduces it). Pages load nothing from elsewhere, so they work offline from file://.

Exports: RobustBench-style ``model_info`` records per (model, defense) and a tidy long CSV (one
row per cell) for pandas users.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
from markupsafe import Markup

from .choices import SITE_FORMATS
from .errors import UsageError
from .atomic import ensure_writable
from .choices import WORST_CASE
from .leaderboard import _write_text, ranking
from .runner import cells_frame

FORMATS = SITE_FORMATS
# The attack whose accuracy RobustBench reports as autoattack_acc: AutoAttack's standard version, all defaults
# (not this project's fast ensemble, nor the bare `aa` of older leaderboards, that ensemble's former name).
AUTOATTACK = "aa[version=standard]"
# Not run metadata: what render() adds to a sidecar.
SIDECAR_SECTIONS = ("partial", "ranking", "sanity", "cells")
LONG_COLUMNS = ["benchmark", "dataset", "model", "defense", "attack", "norm", "evaluation", "eps", "accuracy",
                "ci_low", "ci_high", "correct", "n", "status", "error", "target_success", "seconds",
                "forward_images", "backward_images"]
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]

_environment = jinja2.Environment(
    loader=jinja2.PackageLoader("robustbench_lite", "templates"),
    autoescape=True,  # every label is data a plugin or user chose: never markup
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def read_sidecar(path: Path) -> dict[str, Any]:
    """The JSON sidecar ``rbl run`` writes beside a leaderboard, or a UsageError naming ``path``."""
    try:
        sidecar = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"leaderboard file {str(path)!r} does not exist; `rbl run` writes <out>/<name>.json") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UsageError(f"cannot read leaderboard file {str(path)!r}: {error}") from None
    if not isinstance(sidecar, dict) or not all(isinstance(sidecar.get(key), list) for key in ("ranking", "cells")):
        raise UsageError(f"{str(path)!r} is not a leaderboard's JSON sidecar (no 'ranking' and 'cells' lists); "
                         "give the <name>.json that `rbl run` writes")
    return _rederived(sidecar)


def _rederived(sidecar: dict[str, Any]) -> dict[str, Any]:
    """The sidecar rendered anew from its cells and run metadata: its ranks, flags and partial mark are those
    of this version's checks, never trusted from the file (an older version ranked worst cases that missed a
    failed attack). A cell that did not succeed keeps no number."""
    cells = [{**cell, "accuracy": cell.get("accuracy") if cell.get("status") == "ok" else None}
             for cell in sidecar["cells"]]
    metadata = {key: value for key, value in sidecar.items() if key not in SIDECAR_SECTIONS}
    return sidecar_of_run(cells, metadata)


def slug(name: str) -> str:
    """``name`` as a file stem: anything but letters, digits, '.', '_' and '-' becomes '-'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "benchmark"


def _unranked_reasons(sidecar: dict[str, Any]) -> dict[tuple[str, str], str]:
    """Why each unranked row is unranked, recomputed from the cells (the sidecar stores only a null rank)."""
    metadata = {key: value for key, value in sidecar.items() if key not in SIDECAR_SECTIONS}
    return ranking(cells_frame(sidecar["cells"]), metadata).attrs["unranked"]


def _norm(sidecar: dict[str, Any], attack: str) -> str:
    """The attack's norm; the worst case's is the norms of all attacks, joined by '+' when they differ."""
    attacks = sidecar.get("attacks", {})
    if attack == WORST_CASE:
        return "+".join(sorted({str(info.get("norm", "")) for info in attacks.values()} - {""}))
    return str(attacks.get(attack, {}).get("norm", ""))


def _threat_model(sidecar: dict[str, Any]) -> str:
    """RobustBench's threat model name (Linf, L2) of the run's attacks; names joined by '+' when they differ."""
    norms = _norm(sidecar, WORST_CASE).split("+")
    return "+".join({"linf": "Linf", "l2": "L2"}.get(norm, norm) for norm in norms if norm) or "unknown"


def _accuracy(cells: list[dict[str, Any]], model: str, defense: str, attack: str, eps: float) -> float | None:
    for cell in cells:
        if (cell["model"], cell["defense"], cell["attack"], cell["eps"]) == (model, defense, attack, eps):
            return cell["accuracy"]
    return None


def model_info(sidecar: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """RobustBench-style ``model_info`` per (model, defense), keyed "model/defense".

    Accuracies are strings with two decimals, as RobustBench writes them. ``eps`` is the one eps
    RobustBench reports per threat model: the training eps when the grid holds it (the budget the
    defenses were built for), else the largest eps of the grid. ``autoattack_acc`` is the accuracy
    (%) of ``aa[version=standard]`` at that eps, present only when it ran; ``worst_case_acc``
    that of the per-sample worst case. ``unreliable`` is true for a flagged or unranked row.
    """
    eps = _reported_eps(sidecar)
    autoattack = next((attack for attack in sidecar.get("attacks", {}) if attack == AUTOATTACK), None)
    reasons = _unranked_reasons(sidecar)
    records = {}
    for row in sidecar["ranking"]:
        model, defense = row["model"], row["defense"]
        worst = _accuracy(sidecar["cells"], model, defense, WORST_CASE, eps)
        info = {
            "name": f"{model} trained with {defense}", "architecture": model, "defense": defense,
            "dataset": sidecar["dataset"]["name"], "threat_model": _threat_model(sidecar), "eps": eps,
            "clean_acc": _percent(row["clean %"]), "worst_case_acc": _percent(worst),
            "number_test_points": sidecar["dataset"]["n_examples"],
            "unreliable": bool(row["flags"] or reasons.get((model, defense))),
            "footnote": _footnote(sidecar, row, reasons.get((model, defense), "")),
            "benchmark": sidecar["benchmark"], "reproduce": sidecar.get("command"),
        }
        if autoattack is not None:
            info["autoattack_acc"] = _percent(_accuracy(sidecar["cells"], model, defense, autoattack, eps))
        records[f"{model}/{defense}"] = info
    return records


def _reported_eps(sidecar: dict[str, Any]) -> float:
    train_eps = sidecar.get("training_config", {}).get("train_eps")
    return train_eps if train_eps in sidecar["eps"] else max(sidecar["eps"])


def _percent(value: float | None) -> str | None:
    return None if value is None else f"{value:.2f}"


def _footnote(sidecar: dict[str, Any], row: dict[str, Any], unranked: str) -> str:
    reasons = [f"{finding['check']}: {finding['reason']}" for finding in sidecar.get("sanity", [])
               if (finding["model"], finding["defense"]) == (row["model"], row["defense"])]
    return "; ".join(filter(None, [f"unranked ({unranked})" if unranked else "", *reasons, sidecar.get("partial")]))


def long_csv(sidecar: dict[str, Any]) -> str:
    """Every cell of the sidecar as one CSV row (tidy long format), with the benchmark, dataset and attack norm."""
    frame = pd.DataFrame(sidecar["cells"])
    frame["benchmark"] = sidecar["benchmark"]
    frame["dataset"] = sidecar["dataset"]["name"]
    frame["norm"] = [_norm(sidecar, attack) for attack in frame["attack"]]
    for column in ("correct", "n", "forward_images", "backward_images"):  # counts, null where none
        frame[column] = pd.array(frame[column], dtype="Int64")
    return frame.reindex(columns=LONG_COLUMNS).to_csv(index=False)


def render_format(sidecar: dict[str, Any], fmt: str) -> str:
    """The sidecar's leaderboard in one of :data:`FORMATS` (``html``: a standalone page)."""
    if fmt == "html":
        return page(sidecar, linked=False)
    if fmt == "robustbench":
        return json.dumps(model_info(sidecar), indent=2) + "\n"
    return long_csv(sidecar)


def sidecar_of_run(records: list[dict[str, Any]], metadata: dict[str, Any]) -> dict[str, Any]:
    """The sidecar ``rbl leaderboard`` would write for a run loaded from a results store."""
    from .leaderboard import render

    return json.loads(render(cells_frame(records), metadata, metadata["benchmark"])["json"])


def write_site(sidecars: list[dict[str, Any]], out_dir: Path, command: str) -> list[Path]:
    """Write ``index.html`` and, per benchmark, ``<name>.html``, its sidecar, model_info JSON and long CSV.

    ``command`` is the one that generated the site, shown on the index page.
    """
    stems = [slug(sidecar["benchmark"]) for sidecar in sidecars]
    repeated = sorted({stem for stem in stems if stems.count(stem) > 1})
    if repeated:
        raise UsageError(f"benchmark {repeated[0]!r} is given twice; give each benchmark's sidecar once")
    ensure_writable(out_dir)
    files = {"index.html": _environment.get_template("index.html.j2").render(
        boards=[_summary(sidecar, stem) for sidecar, stem in zip(sidecars, stems)], command=command)}
    for sidecar, stem in zip(sidecars, stems):
        files[f"{stem}.html"] = page(sidecar, linked=True)
        files[f"{stem}.json"] = json.dumps(sidecar, indent=2, default=str) + "\n"
        files[f"{stem}.model_info.json"] = render_format(sidecar, "robustbench")
        files[f"{stem}.cells.csv"] = long_csv(sidecar)
    paths = []
    for name, text in files.items():
        _write_text(out_dir / name, text)
        paths.append(out_dir / name)
    return paths


def _summary(sidecar: dict[str, Any], stem: str) -> dict[str, Any]:
    best = next((row for row in sidecar["ranking"] if row["rank"] == 1), None)
    return {"name": sidecar["benchmark"], "stem": stem, "dataset": sidecar["dataset"]["name"],
            "rows": len(sidecar["ranking"]), "best": best, "worst_key": f"R&G {WORST_CASE}",
            "partial": sidecar.get("partial"), "created": sidecar.get("created", "")}


def page(sidecar: dict[str, Any], linked: bool) -> str:
    """The HTML page of one benchmark; ``linked``: part of a site (links to its index and its files)."""
    attacks = [key[len("R&G "):] for key in sidecar["ranking"][0] if key.startswith("R&G ")] if sidecar["ranking"] else []
    reasons = _unranked_reasons(sidecar)
    rows = [_row(sidecar, row, attacks, reasons.get((row["model"], row["defense"]), "")) for row in sidecar["ranking"]]
    return _environment.get_template("benchmark.html.j2").render(
        s=sidecar, rows=rows, attacks=attacks, worst_case=WORST_CASE, linked=linked, stem=slug(sidecar["benchmark"]),
        partial=sidecar.get("partial"),
        provenance=_provenance(sidecar),
    )


def _row(sidecar: dict[str, Any], row: dict[str, Any], attacks: list[str], unranked: str) -> dict[str, Any]:
    model, defense = row["model"], row["defense"]
    cells = [cell for cell in sidecar["cells"] if (cell["model"], cell["defense"]) == (model, defense)]
    clean = next((cell for cell in cells if cell["attack"] == WORST_CASE and cell["eps"] == 0.0), None)
    findings = [finding for finding in sidecar.get("sanity", []) if (finding["model"], finding["defense"]) == (model, defense)]
    flags = [{"check": finding["check"], "reason": finding["reason"]} for finding in findings]
    if "partial-run" in row["flags"].split(", "):
        flags.append({"check": "partial-run", "reason": f"partial leaderboard: {sidecar.get('partial')}"})
    return {
        "rank": row["rank"], "unranked": unranked, "model": model, "defense": defense, "clean": row["clean %"],
        "clean_ci": (clean["ci_low"], clean["ci_high"]) if clean and clean["ci_low"] is not None else None,
        "scores": {attack: row[f"R&G {attack}"] for attack in attacks}, "flags": flags,
        "chart": accuracy_svg(cells, sidecar["eps"], attacks), "grid": _grid(cells, sidecar["eps"], attacks),
    }


def _grid(cells: list[dict[str, Any]], eps_grid: list[float], attacks: list[str]) -> list[dict[str, Any]]:
    """Per attack, each eps's cell (accuracy, Wilson interval, status, targeted success) for the expandable table."""
    by_key = {(cell["attack"], cell["eps"]): cell for cell in cells}
    return [{"attack": attack, "cells": [by_key.get((attack, eps)) for eps in eps_grid]} for attack in attacks]


def accuracy_svg(cells: list[dict[str, Any]], eps_grid: list[float], attacks: list[str],
                 plot_width: int = 130, height: int = 84) -> Markup:
    """Robust accuracy (%) vs eps of one row as inline SVG: axes, one polyline per attack, a legend on the right.

    A failed cell (accuracy null) breaks its attack's line; the worst case is black and dashed.
    """
    left, top, bottom = 24, 6, 16
    right = left + plot_width
    span = max(eps_grid) - min(eps_grid) or 1.0
    width = right + 30 + 6 * max(len(attack) for attack in attacks)  # room for the longest legend label
    height = max(height, top + 11 * len(attacks) + 4)

    def x(eps: float) -> float:
        return left + (eps - min(eps_grid)) / span * plot_width

    def y(accuracy: float) -> float:
        return top + (100 - accuracy) / 100 * (height - top - bottom)

    by_key = {(cell["attack"], cell["eps"]): cell["accuracy"] for cell in cells}
    parts = [f'<line x1="{left}" y1="{y(0):.1f}" x2="{right}" y2="{y(0):.1f}" class="axis"/>',
             f'<line x1="{left}" y1="{y(0):.1f}" x2="{left}" y2="{top}" class="axis"/>']
    for tick in (0, 50, 100):
        parts.append(f'<text x="{left - 3}" y="{y(tick) + 3:.1f}" text-anchor="end">{tick}</text>')
    for eps, anchor in ((min(eps_grid), "start"), (max(eps_grid), "end")):
        parts.append(f'<text x="{x(eps):.1f}" y="{height - 4}" text-anchor="{anchor}">ε {eps:g}</text>')
    for index, attack in enumerate(attacks):
        colour = "#000" if attack == WORST_CASE else PALETTE[index % len(PALETTE)]
        dash = ' stroke-dasharray="4 2"' if attack == WORST_CASE else ""
        for segment in _segments([(eps, by_key.get((attack, eps))) for eps in eps_grid]):
            points = " ".join(f"{x(eps):.1f},{y(accuracy):.1f}" for eps, accuracy in segment)
            parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.5"{dash}/>')
        legend_y = top + 8 + 11 * index
        parts.append(f'<line x1="{right + 8}" y1="{legend_y - 3}" x2="{right + 22}" y2="{legend_y - 3}" '
                     f'stroke="{colour}" stroke-width="2"{dash}/><text x="{right + 26}" y="{legend_y}">{_xml(attack)}</text>')
    return Markup(f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
                  f'viewBox="0 0 {width} {height}" role="img" aria-label="robust accuracy (%) vs eps per attack">'
                  f'<title>robust accuracy (%) vs ε</title>{"".join(parts)}</svg>')


def _segments(points: list[tuple[float, float | None]]) -> list[list[tuple[float, float]]]:
    """The runs of consecutive points with an accuracy: a missing one breaks the line."""
    segments: list[list[tuple[float, float]]] = [[]]
    for eps, accuracy in points:
        if accuracy is None:
            segments.append([])
        else:
            segments[-1].append((eps, accuracy))
    return [segment for segment in segments if segment]


def _xml(text: str) -> str:
    return str(Markup.escape(text))


def _provenance(sidecar: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) pairs of what produced the numbers, each value as compact text."""
    fields = ["created", "versions", "plugins", "device", "seed", "dataset", "eps", "training_config", "target",
              "eot", "deterministic", "acceleration", "executor", "timings", "work", "store", "merged_from", "protocol"]
    return [(field, sidecar[field] if isinstance(sidecar[field], str) else json.dumps(sidecar[field], default=str))
            for field in fields if field in sidecar]
