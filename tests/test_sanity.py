"""The sanity checks: each flag fires on a constructed case and stays silent on a clean one."""

import json

import pandas as pd
import pytest

from robustbench_lite import sanity
from robustbench_lite.choices import WORST_CASE
from robustbench_lite.leaderboard import ranking, write

EPS = (0.0, 0.1, 0.2, 0.3)
ATTACKS = {
    "fgsm": {"family": "single-step", "norm": "linf"},
    "pgd": {"family": "iterative", "norm": "linf"},
    "square": {"family": "score-based", "norm": "linf"},
    "hsja": {"family": "decision-based", "norm": "linf"},
    "pgd-l2": {"family": "iterative", "norm": "l2"},
    "plugin-attack": {"family": "unspecified", "norm": "linf"},
}


def cells(rows, eps=EPS, n=1000, model="cnn", defense="none"):
    """A cells frame from {attack: accuracy per eps}; the worst case is the minimum (as if per sample)."""
    records = []
    for attack, accuracies in {**rows, WORST_CASE: [min(values) for values in zip(*rows.values())]}.items():
        for e, accuracy in zip(eps, accuracies):
            records.append(dict(model=model, defense=defense, attack=attack, eps=e, accuracy=accuracy,
                                correct=round(accuracy * n / 100), n=n, seconds=0.0, status="ok", error="",
                                target_success=None, evaluation="standard"))
    return pd.DataFrame(records)


def metadata(classes=10, evaluations=None, **extra):
    return {"attacks": ATTACKS, "dataset": {"classes": [str(k) for k in range(classes)]},
            "evaluations": evaluations or {}, **extra}


def checks(frame, meta=None):
    (findings,) = sanity.check(frame, meta if meta is not None else metadata()).values()
    return {finding.check: finding.reason for finding in findings}


# A clean, plausible evaluation: PGD beats FGSM, accuracy falls with eps, white-box beats black-box.
CLEAN = {"fgsm": [99.0, 80.0, 50.0, 30.0], "pgd": [99.0, 70.0, 30.0, 5.0], "square": [99.0, 85.0, 60.0, 35.0]}


def test_a_clean_evaluation_raises_no_flag():
    assert checks(cells(CLEAN)) == {}


def test_rises_with_eps():
    found = checks(cells({**CLEAN, "fgsm": [99.0, 75.0, 80.0, 30.0]}))
    assert set(found) == {"rises-with-eps"}
    assert found["rises-with-eps"] == "fgsm: 80.0% at eps=0.2 > 75.0% at eps=0.1"
    # a rise smaller than the sampling noise of 1000 points (100 / sqrt(1000) = 3.2 points) is no flag
    assert checks(cells({**CLEAN, "fgsm": [99.0, 75.0, 77.0, 30.0]})) == {}
    # each eps is compared with the least robust smaller eps, not only its neighbour
    assert checks(cells({**CLEAN, "fgsm": [99.0, 72.0, 75.0, 77.0]}))["rises-with-eps"] == (
        "fgsm: 77.0% at eps=0.3 > 72.0% at eps=0.1"
    )


def test_single_step_beats_iterative():
    found = checks(cells({**CLEAN, "pgd": [99.0, 90.0, 60.0, 5.0]}))
    assert set(found) == {"single-step-wins"}
    assert found["single-step-wins"] == "pgd 90.0% > fgsm 80.0% at eps=0.1; pgd 60.0% > fgsm 50.0% at eps=0.2"
    # attacks of another norm, or of an undeclared family, are not compared
    assert checks(cells({**CLEAN, "pgd-l2": [99.0, 95.0, 90.0, 85.0], "plugin-attack": [99.0, 99.0, 99.0, 5.0]})) == {}


def test_above_chance_at_large_eps_from_the_grid():
    grid = (0.0, 0.25, 0.5)
    found = checks(cells({"fgsm": [99.0, 90.0, 85.0], "pgd": [99.0, 60.0, 40.0]}, eps=grid))
    assert set(found) == {"above-chance-at-large-eps"}
    assert found["above-chance-at-large-eps"].startswith("the strongest l-inf attack (pgd) leaves 40.0% at eps=0.5 (in the grid)")
    assert checks(cells({"fgsm": [99.0, 90.0, 85.0], "pgd": [99.0, 60.0, 15.0]}, eps=grid)) == {}
    # two classes: chance is 50 %, so 55 % is within chance + 10 points
    assert checks(cells({"fgsm": [99.0, 90.0, 85.0], "pgd": [99.0, 60.0, 55.0]}, eps=grid), metadata(classes=2)) == {}
    # an l2 attack at eps 0.5 proves nothing about the l-inf bound
    assert checks(cells({"pgd-l2": [99.0, 95.0, 90.0]}, eps=grid)) == {}


def test_above_chance_at_large_eps_from_the_runners_probe():
    def probe(accuracy):
        return {"cnn/none": {"randomized": False, "eot": 1,
                             "large_eps_probe": {"eps": 0.5, "n": 64, "accuracy": accuracy}}}

    found = checks(cells(CLEAN), metadata(evaluations=probe({"fgsm": 97.0, "pgd": 95.3, WORST_CASE: 95.3})))
    assert set(found) == {"above-chance-at-large-eps"}
    assert "leaves 95.3% at eps=0.5 (in the probe on 64 test points); chance is 10.0%" in found["above-chance-at-large-eps"]
    assert checks(cells(CLEAN), metadata(evaluations=probe({"fgsm": 40.0, "pgd": 3.1, WORST_CASE: 3.1}))) == {}
    # targeted runs are not held to the untargeted bound
    assert checks(cells(CLEAN), metadata(evaluations=probe({"pgd": 95.3}), target={"index": 1, "name": "1"})) == {}


def test_black_box_beats_white_box():
    found = checks(cells({**CLEAN, "hsja": [99.0, 50.0, 20.0, 1.0]}))
    assert set(found) == {"black-box-wins"}
    assert found["black-box-wins"].startswith("hsja 50.0% < best white-box pgd 70.0% at eps=0.1")
    # a black-box attack as strong as the best white-box one is expected
    assert checks(cells({**CLEAN, "hsja": [99.0, 69.0, 30.0, 5.0]})) == {}


def test_randomized_without_eot():
    def row(randomized, eot, detected=True):
        return {"cnn/none": {"randomized": randomized, "randomized_detected": detected, "eot": eot,
                             "adaptive_row": "none+eot"}}

    found = checks(cells(CLEAN), metadata(evaluations=row(True, 1)))
    assert set(found) == {"random-without-eot"}
    assert found["random-without-eot"] == (
        "the model is randomized (two forward passes on the same inputs differed) and no attack averaged "
        "gradients over it; the adaptive row none+eot uses EOT"
    )
    assert "declares it randomized" in checks(cells(CLEAN), metadata(evaluations=row(True, 1, detected=False)))[
        "random-without-eot"]
    assert checks(cells(CLEAN), metadata(evaluations=row(True, 8))) == {}
    assert checks(cells(CLEAN), metadata(evaluations=row(False, 1))) == {}


def test_failed_cells_are_left_out_of_comparisons_but_flag_the_row():
    frame = cells({**CLEAN, "pgd": [99.0, 90.0, 60.0, 5.0]})
    assert checks(frame, {}) == {}  # families unknown: nothing to compare
    frame.loc[(frame["attack"] == "pgd") & (frame["eps"] > 0), ["accuracy", "status"]] = [None, "failed"]
    assert checks(frame) == {"failed-cells": "missing pgd at eps=0.1, 0.2, 0.3"}


def test_tolerance():
    assert sanity.tolerance(10_000) == 1.0
    assert sanity.tolerance(500) == pytest.approx(4.47, abs=0.01)
    assert sanity.tolerance(0) == 100.0


def test_leaderboard_shows_flags_and_reasons(tmp_path):
    frame = pd.concat([cells(CLEAN, defense="none"), cells({**CLEAN, "pgd": [99.0, 90.0, 60.0, 5.0]}, defense="odd")])
    meta = metadata(dataset={"classes": list("0123456789"), "name": "toy", "n_examples": 1000, "n_test": 1000,
                             "n_train": 10}, eps=list(EPS), seed=0, device={"type": "cpu"},
                    versions={"robustbench_lite": "0", "torch": "0"})
    ranks = ranking(frame, meta).set_index("defense")
    assert ranks.loc["none", "flags"] == "" and ranks.loc["odd", "flags"] == "single-step-wins"
    files = write(frame, meta, tmp_path, "toy")
    csv = pd.read_csv(files["csv"], keep_default_na=False).drop_duplicates("defense").set_index("defense")
    assert csv.loc["odd", "flags"] == "single-step-wins" and csv.loc["none", "flags"] == ""
    markdown = files["md"].read_text()
    assert "## Sanity checks" in markdown
    assert "- cnn / odd: `single-step-wins`: pgd 90.0% > fgsm 80.0% at eps=0.1" in markdown
    sidecar = json.loads(files["json"].read_text())
    assert sidecar["sanity"] == [{"model": "cnn", "defense": "odd", "check": "single-step-wins",
                                  "reason": "pgd 90.0% > fgsm 80.0% at eps=0.1; pgd 60.0% > fgsm 50.0% at eps=0.2"}]
    assert {row["defense"]: row["flags"] for row in sidecar["ranking"]} == {"none": "", "odd": "single-step-wins"}


def test_the_run_metadata_in_attrs_is_used_but_not_carried_into_every_derived_frame():
    """ranking reads the metadata from attrs as if it were given, and works on a frame without them
    (pandas deep-copies attrs into every derived frame); the caller's frame keeps its attrs."""
    frame = cells({**CLEAN, "pgd": [99.0, 70.0, 30.0, 20.0]}, n=1000)
    meta = metadata(classes=10)
    frame.attrs["metadata"] = meta
    bare, found = sanity.detached(frame, None)
    assert bare.attrs == {} and found is meta and frame.attrs["metadata"] is meta
    assert bare.equals(frame)
    with_attrs, given = ranking(frame), ranking(pd.DataFrame(frame.to_dict("records")), meta)
    pd.testing.assert_frame_equal(with_attrs, given)
    assert with_attrs.attrs == {"unranked": with_attrs.attrs["unranked"]}  # the metadata is not carried along
