"""What a hostile or broken plugin can no longer do to the numbers (see docs/trust.md).

The plugins are those of ``tests/hostile/rbl_hostile.py``, installed like a third-party distribution.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

import robustbench_lite as rbl
from robustbench_lite.evaluation import ModelChangedError, guarded_perturb, model_unchanged
from robustbench_lite.attack_utils import AttackBoundsError
from robustbench_lite.choices import WORST_CASE
from robustbench_lite.leaderboard import accuracy_table, partial_reason, ranking

HOSTILE = (Path(__file__).parent / "hostile" / "rbl_hostile.py").read_text()
DATA = "synthetic[n_train=256,n_test=96]"


@pytest.fixture
def hostile(install_plugin):
    install_plugin("rbl-hostile", "rbl_hostile", HOSTILE)


def run(tmp_path: Path, folder: str = "out", **overrides) -> pd.DataFrame:
    settings = dict(models="cnn", defenses="none", attacks="fgsm,pgd[steps=5]", eps="0,0.05,0.1", dataset=DATA,
                    epochs=2, batch_size=64, seed=0, device="cpu", cache_dir=tmp_path / "cache", out=tmp_path / folder)
    settings.update(overrides)
    return rbl.run(**settings)


def cells_of(results: pd.DataFrame, defense: str, attack: str) -> pd.DataFrame:
    chosen = results[(results["defense"] == defense) & (results["attack"] == attack)]
    return chosen[["eps", "accuracy", "correct", "status"]].astype({"correct": float}).reset_index(drop=True)


@pytest.mark.parametrize("attack, reason", [
    ("crashing", "RuntimeError: hostile attack crashed"),
    ("nan-attack", "NaN or infinite inputs"),
    ("in-place", "left the linf ball"),
    ("weight-zeroing", "changed the model"),
])
def test_a_hostile_attack_fails_its_cells_and_leaves_the_others_unchanged(tmp_path, hostile, attack, reason):
    reference = run(tmp_path, "reference")
    # The hostile attack runs first, so that whatever it corrupts would show in the cells after it.
    results = run(tmp_path, attacks=f"{attack},fgsm,pgd[steps=5]")
    for honest in ("fgsm", "pgd[steps=5]"):
        pd.testing.assert_frame_equal(cells_of(results, "none", honest), cells_of(reference, "none", honest))
    hostile_cells = results[(results["attack"] == attack) & (results["eps"] > 0)]
    assert set(hostile_cells["status"]) == {"failed"}
    assert all(reason in error for error in hostile_cells["error"])
    worst = results[(results["attack"] == WORST_CASE) & (results["eps"] > 0)]
    assert set(worst["status"]) == {"incomplete"} and worst["accuracy"].isna().all()


def test_a_worst_case_missing_an_attack_is_unranked_and_flagged_in_every_format(tmp_path, hostile):
    results = run(tmp_path, defenses="none,at-fgsm", attacks="fgsm,crashing")
    ranks = ranking(results)
    assert ranks["rank"].isna().all()
    assert all("failed-cells" in flags for flags in ranks["flags"])
    files = results.attrs["files"]
    csv = pd.read_csv(files["csv"])
    assert csv["rank"].isna().all() and csv["flags"].str.contains("failed-cells").all()
    sidecar = json.loads(files["json"].read_text())
    assert all(row["rank"] is None and "failed-cells" in row["flags"] for row in sidecar["ranking"])
    assert any(entry["check"] == "failed-cells" and "missing crashing at eps=0.05, 0.1" in entry["reason"]
               for entry in sidecar["sanity"])
    markdown = files["md"].read_text()
    assert "| failed | cnn     | none" in markdown.replace("|  failed", "| failed")
    assert "`failed-cells`: missing crashing at eps=0.05, 0.1" in markdown


def test_a_per_attack_target_stays_in_the_worst_case(tmp_path):
    results = run(tmp_path, attacks="fgsm[],pgd[steps=5,target=1]".replace("[]", ""))
    for eps, group in results[results["eps"] > 0].groupby("eps"):
        accuracy = group.set_index("attack")["accuracy"]
        assert accuracy[WORST_CASE] <= min(accuracy["fgsm"], accuracy["pgd[steps=5,target=1]"])
        assert accuracy[WORST_CASE] >= accuracy["fgsm"] + accuracy["pgd[steps=5,target=1]"] - 100
        assert group.set_index("attack")["status"][WORST_CASE] == "ok"


def test_an_in_place_preprocessing_cannot_change_the_other_rows(tmp_path, hostile):
    reference = run(tmp_path, "reference")
    results = run(tmp_path, defenses="in-place-shift,none")
    for attack in ("fgsm", "pgd[steps=5]", WORST_CASE):
        pd.testing.assert_frame_equal(cells_of(results, "none", attack), cells_of(reference, "none", attack))


def test_only_evaluated_pairs_get_rows():
    def row(model, defense, eps, accuracy):
        return dict(model=model, defense=defense, attack="fgsm", eps=eps, accuracy=accuracy, correct=int(accuracy),
                    n=100, seconds=0.0, status="ok", error="", target_success=None, evaluation="standard")

    cells = pd.DataFrame([row(model, defense, eps, 90.0 - 50 * eps) for model, defense in (("a", "x"), ("b", "y"))
                          for eps in (0.0, 0.1)])
    cells = pd.concat([cells, cells.assign(attack=WORST_CASE)], ignore_index=True)
    assert accuracy_table(cells)[["model", "defense"]].drop_duplicates().values.tolist() == [["a", "x"], ["b", "y"]]
    ranks = ranking(cells, {})
    assert ranks[["model", "defense"]].values.tolist() == [["a", "x"], ["b", "y"]]
    assert ranks["rank"].tolist() == [1, 2]


def test_degenerate_models_are_flagged_and_unranked(tmp_path, hostile):
    results = run(tmp_path, models="cnn,constant,softmax-mlp")
    ranks = ranking(results).set_index("model")
    assert {"constant-prediction", "chance-accuracy", "zero-gradients"} <= set(ranks.loc["constant", "flags"].split(", "))
    assert pd.isna(ranks.loc["constant", "rank"])
    assert "probability-outputs" in ranks.loc["softmax-mlp", "flags"]
    assert ranks.loc["cnn", "rank"] == 1 and ranks.loc["cnn", "flags"] == ""


def test_gradient_calls_inside_the_forward_pass_are_found():
    from robustbench_lite import probes

    class Purifying(torch.nn.Module):
        """A dynamic defense: one gradient step on its input before classifying."""

        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(4, 2)

        def forward(self, x):
            with torch.enable_grad():
                z = x.detach().requires_grad_(True)
                (step,) = torch.autograd.grad(self.linear(z).logsumexp(1).sum(), z)
            return self.linear(x - 0.1 * step)

    x, y = torch.rand(8, 4), torch.zeros(8, dtype=torch.long)
    assert probes.model_probe(Purifying(), x, y, "exact")["grad_enabled_calls_in_forward"] == 1
    assert probes.model_probe(torch.nn.Linear(4, 2), x, y, "exact") == {
        "n": 8, "probability_outputs": False, "grad_enabled_calls_in_forward": 0, "zero_gradient_points": 0}


def test_guarded_perturb_checks_against_its_own_copy_of_the_inputs():
    model = torch.nn.Linear(4, 2)
    x, y = torch.full((3, 4), 0.5), torch.zeros(3, dtype=torch.long)

    class EditsInPlace(rbl.Attack):
        name = "edits"
        description = "moves x in place and returns it"

        def perturb(self, model, x, y, eps):
            return x.add_(0.25)

    with pytest.raises(AttackBoundsError, match="left the linf ball: perturbation 0.25"):
        guarded_perturb(model, EditsInPlace(), x, y, 0.1)
    assert torch.equal(x, torch.full((3, 4), 0.5))


def test_model_unchanged_fails_and_restores_a_changed_model():
    model = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.BatchNorm1d(2)).eval()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with pytest.raises(ModelChangedError, match=r"changed the model \(0.weight"):
        with model_unchanged(model, "attack 'x'"):
            with torch.no_grad():
                model[0].weight.zero_()
            model[1].running_mean += 1
            model.train()
            model.register_forward_hook(lambda *args: None)
    assert all(torch.equal(model.state_dict()[name], tensor) for name, tensor in before.items())
    assert not model.training and not model._forward_hooks
    with model_unchanged(model):  # an honest block passes
        model(torch.rand(2, 4))


def test_a_leaderboard_written_before_the_run_ended_is_marked_partial(tmp_path, hostile, capsys):
    from robustbench_lite.cli import main

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, defenses="none,interrupting", attacks="fgsm")
    out = tmp_path / "out"
    name = "synthetic"
    assert "**Partial leaderboard, not final**: 1 of 2 trained models evaluated; missing: cnn/interrupting" in (
        out / f"{name}.md").read_text()
    assert pd.read_csv(out / f"{name}.csv")["flags"].str.contains("partial-run").all()
    sidecar = json.loads((out / f"{name}.json").read_text())
    assert "missing: cnn/interrupting" in sidecar["partial"]
    assert partial_reason(sidecar) == sidecar["partial"]  # a sidecar read back still says it is partial

    capsys.readouterr()
    assert main(["leaderboard", "--db", str(out / "results.db")]) == 2
    assert "rbl: error: the run is partial: 1 of 2 trained models evaluated; missing: cnn/interrupting;" in (
        capsys.readouterr().err)
    assert main(["leaderboard", "--db", str(out / "results.db"), "--allow-partial"]) == 0
    assert "**Partial leaderboard, not final**" in capsys.readouterr().out

    finished = run(tmp_path, defenses="none", attacks="fgsm", name="complete")
    assert json.loads(finished.attrs["files"]["json"].read_text())["partial"] is None
    assert "Partial" not in finished.attrs["files"]["md"].read_text()
    assert "partial-run" not in ",".join(ranking(finished)["flags"])


def test_another_run_cannot_overwrite_a_leaderboard(tmp_path):
    first = run(tmp_path, attacks="fgsm")
    with pytest.raises(rbl.UsageError, match=r"holds the leaderboard of another run \(differs in: plugins\)"):
        run(tmp_path, attacks="pgd[steps=5]")
    with pytest.raises(rbl.UsageError, match=r"differs in: eps"):
        run(tmp_path, attacks="fgsm", eps="0,0.1")
    again = run(tmp_path, attacks="fgsm")  # the same run may rewrite its own files
    pd.testing.assert_series_equal(first["accuracy"], again["accuracy"])
    run(tmp_path, attacks="pgd[steps=5]", name="other")  # or another run under another name


def test_hostile_plugins_next_to_an_honest_model(tmp_path, hostile):
    """The issue's scripted check: the honest row ranked first and unchanged, every hostile row unranked with its reason."""
    reference = run(tmp_path, "reference")
    results = run(tmp_path, models="constant,nan-model,cnn,softmax-mlp", defenses="in-place-shift,none")
    for attack in ("fgsm", "pgd[steps=5]", WORST_CASE):  # the honest row, after hostile rows ran and edited inputs
        pd.testing.assert_frame_equal(cells_of(results[results["model"] == "cnn"], "none", attack),
                                      cells_of(reference, "none", attack))
    ranks = ranking(results).set_index(["model", "defense"])
    assert ranks.loc[("cnn", "none"), "rank"] == 1 and ranks.loc[("cnn", "none"), "flags"] == ""
    for defense in ("none", "in-place-shift"):
        assert pd.isna(ranks.loc[("constant", defense), "rank"])
        assert "constant-prediction" in ranks.loc[("constant", defense), "flags"]
        assert pd.isna(ranks.loc[("nan-model", defense), "rank"])
        assert "failed-cells" in ranks.loc[("nan-model", defense), "flags"]
        assert "probability-outputs" in ranks.loc[("softmax-mlp", defense), "flags"]
    markdown = results.attrs["files"]["md"].read_text()
    assert "- constant / none: `constant-prediction`: class 0 is predicted for 100.0% of the 96 clean test points" in markdown


def test_the_pass_counter_keeps_the_models_mode():
    """torchattacks restores the mode it found on the model it is given: a counter in train mode around an eval-mode
    model made it put the model in train mode (now a ModelChangedError, before a silent change)."""
    from robustbench_lite.evaluation import PassCounter

    model = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.Dropout(0.5)).eval()
    counter = PassCounter(model)
    was = counter.training
    counter.eval()
    counter.train(was)  # what such an attack does on leaving
    assert not model.training


@pytest.mark.parametrize("attack, error", [("in-place", AttackBoundsError), ("weight-zeroing", ModelChangedError)])
def test_bench_and_plots_refuse_what_the_leaderboard_would(tmp_path, hostile, attack, error):
    from robustbench_lite import bench, plot
    from robustbench_lite.registry import default_registry

    threat = default_registry().create("attacks", attack)
    workload = bench.make_workload("cnn@1x28x28", batch_size=8)
    weights = {name: tensor.clone() for name, tensor in workload.model.state_dict().items()}
    with pytest.raises(error):
        bench.measure(threat, workload, repeats=1, torchattacks=False)
    assert all(torch.equal(workload.model.state_dict()[name], tensor) for name, tensor in weights.items())
    x = workload.x.clone()
    with pytest.raises(error):
        plot.adversarial_examples(workload.model, threat, workload.x, workload.y, [0.1], list("0123456789"),
                                  tmp_path / "examples.png")
    with pytest.raises(error):
        plot.confusion_matrices(workload.model, threat, workload.x, workload.y, 0.1, list("0123456789"),
                                tmp_path / "confusion.png")
    assert torch.equal(workload.x, x) and not (tmp_path / "examples.png").exists()


def test_rg_is_the_sum_of_the_accuracies_as_printed():
    """On 7 points an accuracy is 100/7 = 14.2857...: three of them print 14.29 each, so the row shown sums to
    42.87, while the unrounded sum would print 42.86."""
    cells = pd.DataFrame([dict(model="m", defense="d", attack=attack, eps=eps, accuracy=100 / 7, correct=1, n=7,
                               seconds=0.0, status="ok", error="", target_success=None, evaluation="standard")
                          for attack in ("fgsm", WORST_CASE) for eps in (0.0, 0.1, 0.2)])
    table = accuracy_table(cells)
    printed = table[["eps=0", "eps=0.1", "eps=0.2"]].map(lambda value: float(f"{value:.2f}"))
    assert [f"{value:.2f}" for value in table["R&G"]] == [f"{value:.2f}" for value in printed.sum(axis=1)] == [
        "42.87", "42.87"]


def test_a_model_probe_from_another_version_is_read_as_far_as_it_goes():
    from robustbench_lite import sanity

    cells = pd.DataFrame([dict(model="m", defense="d", attack=attack, eps=eps, accuracy=90.0, correct=90, n=100,
                               seconds=0.0, status="ok", error="", target_success=None, evaluation="standard")
                          for attack in ("fgsm", WORST_CASE) for eps in (0.0, 0.1)])
    metadata = {"evaluations": {"m/d": {"model_probe": {"n": 64, "probability_outputs": True}}}}
    assert [finding.check for finding in sanity.check(cells, metadata)[("m", "d")]] == ["probability-outputs"]


def test_the_model_check_keeps_every_submodules_mode_and_undoes_structural_changes():
    from robustbench_lite.evaluation import PassCounter, defended
    from robustbench_lite.registry import default_registry

    class McDropout(torch.nn.Module):  # a randomized model: its dropout stays on at test time
        def __init__(self):
            super().__init__()
            self.linear, self.dropout = torch.nn.Linear(4, 2), torch.nn.Dropout(0.5)
            self.register_buffer("unused", torch.full((2,), float("nan")))  # NaN is not a change

        def forward(self, x):
            return self.dropout(self.linear(x))

    model = McDropout().eval()
    model.dropout.train()
    wrapped = defended(model, default_registry().create("defenses", "bit-depth"))
    with model_unchanged(wrapped):
        PassCounter(wrapped)(torch.rand(3, 4))
    assert [module.training for module in model.modules()] == [False, False, True]

    plain = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.ReLU()).eval()
    x = torch.rand(3, 4)
    expected = plain(x)
    with pytest.raises(ModelChangedError):
        with model_unchanged(plain):
            plain[1] = torch.nn.Sigmoid().eval()  # a swapped layer, same mode, no parameters
            plain.add_module("extra", torch.nn.Linear(2, 2))
            plain[0].register_forward_hook(lambda module, args, out: out * 0)
    assert torch.equal(plain(x), expected) and len(plain) == 2 and not plain[0]._forward_hooks
