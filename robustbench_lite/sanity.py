"""Sanity checks on a benchmark's results: signs that an evaluation, not a defense, is what failed.

After Athalye, Carlini & Wagner (2018) and Carlini et al. (2019), "On Evaluating Adversarial
Robustness": each (model, defense) row of a run is checked for

* ``rises-with-eps`` (a): some attack leaves more points robust at a larger eps than at a smaller one;
* ``single-step-wins`` (b): a single-step attack (FGSM) beats an iterative one (PGD, BIM, APGD, ...)
  of the same norm at the same eps;
* ``above-chance-at-large-eps`` (c): at l-inf eps >= 0.5 the best l-inf attack leaves accuracy
  above chance + 10 points. At that budget the all-0.5 image lies in the ball of every input in
  [0, 1], so every input can be moved onto one image and no classifier can be right on more
  than its largest class; the grid's cells are used where the grid reaches 0.5, else the
  runner's probe at eps = 0.5 on a few test points. Not checked in targeted runs;
* ``black-box-wins`` (d): a black-box attack (score- or decision-based) beats every white-box one
  of the same norm at some eps;
* ``random-without-eot`` (e): the model is randomized (it says so, or two forward passes on the
  same inputs differed) and no attack of the row averaged gradients over its randomness (EOT).

Comparisons (a), (b), (d) allow for sampling noise: a difference counts when it exceeds
``tolerance(n) = max(1, 100 / sqrt(n))`` points, about two binomial standard errors at 50 %
(4.5 points on 500 test points, 1 point on 10,000). Attack families and norms, the number of
classes, and what the runner found about each row come from the run's metadata.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from .interfaces import BLACK_BOX_FAMILIES, WHITE_BOX_FAMILIES

LARGE_EPS = 0.5  # l-inf budget from which the constant image 0.5 is in every ball
CHANCE_MARGIN = 10.0  # points above chance that check (c) tolerates at LARGE_EPS

CHECKS: dict[str, str] = {
    "rises-with-eps": "robust accuracy rises with eps for some attack",
    "single-step-wins": "a single-step attack beats an iterative one at the same eps",
    "above-chance-at-large-eps": f"accuracy stays above chance + {CHANCE_MARGIN:g} points at l-inf eps >= {LARGE_EPS:g}",
    "black-box-wins": "a black-box attack beats every white-box one at some eps",
    "random-without-eot": "randomized model attacked without EOT",
}


@dataclass(frozen=True)
class Finding:
    """One failed check of one row: the check's name (a key of :data:`CHECKS`) and why it fired."""

    check: str
    reason: str


def tolerance(n: int) -> float:
    """Points by which two accuracies on ``n`` points must differ to count: max(1, 100 / sqrt(n))."""
    return max(1.0, 100.0 / math.sqrt(max(n, 1)))


def check(cells: pd.DataFrame, metadata: Mapping[str, Any] | None = None) -> dict[tuple[str, str], list[Finding]]:
    """The findings of every (model, defense) row of ``cells`` (an empty list where all checks pass).

    ``metadata`` is the run's (``cells.attrs["metadata"]`` by default). Without it, the checks
    that need attack families, the number of classes or the runner's probes are skipped.
    """
    from .leaderboard import WORST_CASE  # here, not at the top: the leaderboard imports this module

    if metadata is None:
        metadata = cells.attrs.get("metadata") or {}
    attacks: Mapping[str, Mapping[str, str]] = metadata.get("attacks", {})
    classes = metadata.get("dataset", {}).get("classes")
    chance = 100.0 / len(classes) if classes else None
    targeted = "target" in metadata
    evaluations: Mapping[str, Mapping[str, Any]] = metadata.get("evaluations", {})
    findings: dict[tuple[str, str], list[Finding]] = {}
    for (model, defense), group in cells.groupby(["model", "defense"], sort=False):
        scored = group[(group["status"] == "ok") & (group["attack"] != WORST_CASE)]
        evaluation = evaluations.get(f"{model}/{defense}")  # what the runner found about this row
        row_findings = [
            _rises_with_eps(scored),
            _single_step_wins(scored, attacks),
            None if targeted or chance is None else _above_chance(scored, attacks, chance, evaluation),
            _black_box_wins(scored, attacks),
            _random_without_eot(evaluation),
        ]
        findings[(model, defense)] = [finding for finding in row_findings if finding is not None]
    return findings


def flags(findings: Mapping[tuple[str, str], list[Finding]], model: str, defense: str) -> str:
    """The comma-separated names of a row's findings ("" when it passes every check)."""
    return ", ".join(finding.check for finding in findings.get((model, defense), []))


def _finding(check_name: str, reasons: list[str]) -> Finding | None:
    return Finding(check_name, "; ".join(reasons)) if reasons else None


def _family(attacks: Mapping[str, Mapping[str, str]], label: str) -> tuple[str, str]:
    info = attacks.get(label, {})
    return info.get("family", "unspecified"), info.get("norm", "linf")


def _rises_with_eps(scored: pd.DataFrame) -> Finding | None:
    reasons = []
    for attack, cells in scored.groupby("attack", sort=False):
        cells = cells.sort_values("eps")
        lowest: tuple[float, float] | None = None  # (accuracy, eps) of the least robust smaller eps so far
        for eps, accuracy, n in zip(cells["eps"], cells["accuracy"], cells["n"]):
            if lowest is not None and accuracy > lowest[0] + tolerance(n):
                reasons.append(f"{attack}: {accuracy:.1f}% at eps={eps:g} > {lowest[0]:.1f}% at eps={lowest[1]:g}")
                break
            if lowest is None or accuracy < lowest[0]:
                lowest = (accuracy, eps)
    return _finding("rises-with-eps", reasons)


def _single_step_wins(scored: pd.DataFrame, attacks: Mapping[str, Mapping[str, str]]) -> Finding | None:
    reasons = []
    for eps, cells in scored[scored["eps"] > 0].groupby("eps"):
        rows = [(label, *_family(attacks, label), accuracy, n)
                for label, accuracy, n in zip(cells["attack"], cells["accuracy"], cells["n"])]
        for single, s_family, s_norm, s_accuracy, n in rows:
            if s_family != "single-step":
                continue
            for iterative, i_family, i_norm, i_accuracy, _ in rows:
                if i_family == "iterative" and i_norm == s_norm and i_accuracy > s_accuracy + tolerance(n):
                    reasons.append(f"{iterative} {i_accuracy:.1f}% > {single} {s_accuracy:.1f}% at eps={eps:g}")
    return _finding("single-step-wins", reasons)


def _above_chance(
    scored: pd.DataFrame,
    attacks: Mapping[str, Mapping[str, str]],
    chance: float,
    evaluation: Mapping[str, Any] | None,
) -> Finding | None:
    limit = chance + CHANCE_MARGIN
    linf = scored[scored["attack"].map(lambda label: _family(attacks, label)[1] == "linf").astype(bool)]
    large = linf[linf["eps"] >= LARGE_EPS]
    if len(large):
        at_largest = large[large["eps"] == large["eps"].max()]
        best = at_largest.loc[at_largest["accuracy"].idxmin()]
        accuracy, label, eps, where = best["accuracy"], best["attack"], best["eps"], "in the grid"
    else:
        probe = (evaluation or {}).get("large_eps_probe")
        measured = {k: v for k, v in (probe or {}).get("accuracy", {}).items() if v is not None}
        if not measured:
            return None
        label = min(measured, key=measured.get)
        accuracy, eps, where = measured[label], probe["eps"], f"in the probe on {probe['n']} test points"
    if accuracy <= limit:
        return None
    return Finding(
        "above-chance-at-large-eps",
        f"the strongest l-inf attack ({label}) leaves {accuracy:.1f}% at eps={eps:g} ({where}); "
        f"chance is {chance:.1f}% and no classifier can keep more than its largest class at eps >= {LARGE_EPS:g}",
    )


def _black_box_wins(scored: pd.DataFrame, attacks: Mapping[str, Mapping[str, str]]) -> Finding | None:
    reasons = []
    for eps, cells in scored[scored["eps"] > 0].groupby("eps"):
        rows = [(label, *_family(attacks, label), accuracy, n)
                for label, accuracy, n in zip(cells["attack"], cells["accuracy"], cells["n"])]
        for norm in sorted({norm for _, _, norm, _, _ in rows}):
            same_norm = [(accuracy, label, family) for label, family, nrm, accuracy, _ in rows if nrm == norm]
            white = [(accuracy, label) for accuracy, label, family in same_norm if family in WHITE_BOX_FAMILIES]
            black = [(accuracy, label) for accuracy, label, family in same_norm if family in BLACK_BOX_FAMILIES]
            if not white or not black:
                continue
            (w_accuracy, w_label), (b_accuracy, b_label) = min(white), min(black)
            if b_accuracy < w_accuracy - tolerance(int(cells["n"].iloc[0])):
                reasons.append(f"{b_label} {b_accuracy:.1f}% < best white-box {w_label} {w_accuracy:.1f}% at eps={eps:g}")
    return _finding("black-box-wins", reasons)


def _random_without_eot(evaluation: Mapping[str, Any] | None) -> Finding | None:
    if not evaluation or not evaluation.get("randomized") or evaluation.get("eot", 1) > 1:
        return None
    how = "two forward passes on the same inputs differed" if evaluation.get("randomized_detected") else (
        "its defense declares it randomized"
    )
    see = f"; the adaptive row {evaluation['adaptive_row']} uses EOT" if evaluation.get("adaptive_row") else ""
    return Finding("random-without-eot", f"the model is randomized ({how}) and no attack averaged gradients over it{see}")
