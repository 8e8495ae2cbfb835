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
  same inputs differed) and no attack of the row averaged gradients over its randomness (EOT);
* ``attack-warnings``: an attack said it doubts its own result (an
  :class:`~robustbench_lite.interfaces.AttackWarning`): AutoAttack's Square breaking points its
  white-box members left robust (a sign of gradient masking), a step too short to reach eps;
* ``failed-cells``: some of the row's cells failed, so its worst case misses those attacks;
* ``constant-prediction``: the model predicts one class for (nearly) every clean test point;
* ``chance-accuracy``: the clean accuracy is no better than always answering the commonest class;
* ``probability-outputs``, ``zero-gradients``, ``gradient-in-forward``: the runner's model probe
  (:mod:`robustbench_lite.probes`) found outputs that are probabilities rather than logits, many
  points whose input gradient is exactly zero, or gradient calls inside the forward pass.

A row flagged by one of :data:`UNRANKED_CHECKS` is listed but never ranked: its numbers are not
a comparable robustness score (a worst case over fewer attacks; a degenerate classifier).

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

from .choices import WORST_CASE
from .interfaces import BLACK_BOX_FAMILIES, WHITE_BOX_FAMILIES

LARGE_EPS = 0.5  # l-inf budget from which the constant image 0.5 is in every ball
CHANCE_MARGIN = 10.0  # points above chance that check (c) tolerates at LARGE_EPS
CONSTANT_SHARE = 0.95  # share of the clean predictions in one class from which a model counts as constant
ZERO_GRADIENT_SHARE = 0.1  # share of the probed points with a zero input gradient from which a row is flagged

CHECKS: dict[str, str] = {
    "rises-with-eps": "robust accuracy rises with eps for some attack",
    "single-step-wins": "a single-step attack beats an iterative one at the same eps",
    "above-chance-at-large-eps": f"accuracy stays above chance + {CHANCE_MARGIN:g} points at l-inf eps >= {LARGE_EPS:g}",
    "black-box-wins": "a black-box attack beats every white-box one at some eps",
    "random-without-eot": "randomized model attacked without EOT",
    "attack-warnings": "an attack warned about its own result (e.g. AutoAttack's Square found what gradients missed)",
    "failed-cells": "some cells failed, so the worst case misses those attacks; not ranked",
    "constant-prediction": f"one class predicted for at least {100 * CONSTANT_SHARE:g}% of the clean inputs; not ranked",
    "chance-accuracy": "clean accuracy no better than always answering the commonest class; not ranked",
    "probability-outputs": "the model outputs probabilities, not logits (gradients of the loss vanish)",
    "zero-gradients": f"at least {100 * ZERO_GRADIENT_SHARE:g}% of the probed points have a zero input gradient",
    "gradient-in-forward": "the forward pass turns gradients on inside itself (a dynamic defense: fixed attacks may not suffice)",
}
UNRANKED_CHECKS = frozenset({"failed-cells", "constant-prediction", "chance-accuracy"})


@dataclass(frozen=True)
class Finding:
    """One failed check of one row: the check's name (a key of :data:`CHECKS`) and why it fired."""

    check: str
    reason: str


def tolerance(n: int) -> float:
    """Points by which two accuracies on ``n`` points must differ to count: max(1, 100 / sqrt(n))."""
    return max(1.0, 100.0 / math.sqrt(max(n, 1)))


def detached(cells: pd.DataFrame, metadata: Mapping[str, Any] | None) -> tuple[pd.DataFrame, Mapping[str, Any]]:
    """``cells`` without its ``attrs``, and the run's metadata (``metadata``, else ``cells.attrs["metadata"]``).

    pandas deep-copies a frame's attrs into every frame derived from it: with a run's metadata there,
    rendering a leaderboard spent most of its time copying it (0.7 s of a 4 s run).
    """
    if metadata is None:
        metadata = cells.attrs.get("metadata") or {}
    if cells.attrs:
        cells = cells.copy(deep=False)  # shares the data; copies the attrs once more, to drop them
        cells.attrs = {}
    return cells, metadata


def check(cells: pd.DataFrame, metadata: Mapping[str, Any] | None = None) -> dict[tuple[str, str], list[Finding]]:
    """The findings of every (model, defense) row of ``cells`` (an empty list where all checks pass).

    ``metadata`` is the run's (``cells.attrs["metadata"]`` by default). Without it, the checks
    that need attack families, the number of classes or the runner's probes are skipped.
    """

    cells, metadata = detached(cells, metadata)
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
            _attack_warnings(scored),
            _failed_cells(group[group["attack"] != WORST_CASE]),
            *_degenerate(group, evaluation, chance),
            *_probe_findings(evaluation),
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


def _attack_warnings(scored: pd.DataFrame) -> Finding | None:
    if "notes" not in scored:  # cells of a leaderboard from before attacks could warn
        return None
    # Read back from a CSV, a column without a single note is all NaN (float), not empty strings.
    warned = scored[scored["notes"].map(lambda notes: isinstance(notes, str) and notes != "").astype(bool)]
    return _finding("attack-warnings", [f"{attack} at eps={eps:g}: {notes}"
                                        for attack, eps, notes in zip(warned["attack"], warned["eps"], warned["notes"])])


def _failed_cells(group: pd.DataFrame) -> Finding | None:
    failed = group[group["status"] != "ok"]
    reasons = [f"{attack} at eps={', '.join(f'{eps:g}' for eps in cells['eps'])}"
               for attack, cells in failed.groupby("attack", sort=False)]
    return _finding("failed-cells", ["missing " + "; ".join(reasons)] if reasons else [])


def _degenerate(group: pd.DataFrame, evaluation: Mapping[str, Any] | None, chance: float | None) -> list[Finding | None]:
    shares = (evaluation or {}).get("clean_classes")
    clean = group[(group["eps"] == 0) & (group["status"] == "ok")]
    if not shares or not len(clean):
        return []
    share, label_share = shares["most_predicted_share"], shares["label_share_of_that_class"]
    n = int(clean["n"].iloc[0])
    constant = None
    if share >= CONSTANT_SHARE and 100 * (share - label_share) > tolerance(n):
        constant = Finding("constant-prediction", f"class {shares['most_predicted_class']} is predicted for "
                           f"{100 * share:.1f}% of the {n} clean test points but is the label of {100 * label_share:.1f}%")
    baseline = 100 * max(shares["majority_label_share"], (chance or 0.0) / 100)
    accuracy = float(clean["accuracy"].iloc[0])
    at_chance = None
    if accuracy <= baseline + tolerance(n):
        at_chance = Finding("chance-accuracy", f"clean accuracy {accuracy:.1f}% is within {tolerance(n):.1f} points "
                            f"of {baseline:.1f}%, what always answering the commonest class scores")
    return [constant, at_chance]


def _probe_findings(evaluation: Mapping[str, Any] | None) -> list[Finding | None]:
    probe = (evaluation or {}).get("model_probe")
    if not probe:
        return []
    # .get: a probe recorded by another version may lack a field; what it lacks is not checked
    n = probe.get("n", 0)
    zero = probe.get("zero_gradient_points", 0)
    calls = probe.get("grad_enabled_calls_in_forward", 0)
    return [
        Finding("probability-outputs", f"on {n} probed points every output lies in [0, 1] and sums to 1")
        if probe.get("probability_outputs") else None,
        Finding("zero-gradients", f"{zero} of {n} probed points have an input gradient of exactly zero")
        if n and zero >= ZERO_GRADIENT_SHARE * n else None,
        Finding("gradient-in-forward", f"a forward pass made without gradients ran {calls} layer call(s) with "
                "gradients enabled: the model optimises something inside itself") if calls else None,
    ]
