"""The matrix runner end to end on tiny data: scores, worst case, caching, isolation of failures."""

import json
import re

import pandas as pd
import pytest
import torch

import robustbench_lite as rbl
from robustbench_lite.leaderboard import accuracy_table, ranking

TINY = "synthetic[n_train=256,n_test=96]"

FAILING_ATTACK = '''
from robustbench_lite import Attack, hookimpl

class Exploding(Attack):
    name = "exploding"
    description = "raises inside every cell"

    def perturb(self, model, x, y, eps):
        raise RuntimeError("boom")

class Escaping(Attack):
    name = "escaping"
    description = "leaves the eps-ball"

    def perturb(self, model, x, y, eps):
        return (x + 2 * eps).clamp(0, 1)

@hookimpl
def register_attacks(register):
    register(Exploding)
    register(Escaping)
'''


def tiny_run(tmp_path, **overrides):
    settings = dict(
        models="cnn", defenses="none", attacks="fgsm,pgd[steps=5]", eps="0,0.05,0.1", dataset=TINY,
        epochs=2, batch_size=64, seed=0, device="cpu", cache_dir=tmp_path / "cache", out=tmp_path / "out",
    )
    settings.update(overrides)
    return rbl.run(**settings)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("run"), defenses="none,at-pgd[steps=3]")


def test_every_cell_is_present_and_scored(results):
    assert set(results["status"]) == {"ok"}
    expected = {(d, a, e) for d in ("none", "at-pgd[steps=3]") for a in ("fgsm", "pgd[steps=5]", "worst-case")
                for e in (0.0, 0.05, 0.1)}
    assert set(zip(results["defense"], results["attack"], results["eps"])) == expected
    assert (results["n"] == 96).all()
    assert ((results["accuracy"] >= 0) & (results["accuracy"] <= 100)).all()


def test_clean_accuracy_is_learned_and_attacks_lower_it(results):
    none = results[results["defense"] == "none"].set_index(["attack", "eps"])["accuracy"]
    assert none[("fgsm", 0.0)] >= 90
    for attack in ("fgsm", "pgd[steps=5]", "worst-case"):
        assert none[(attack, 0.0)] >= none[(attack, 0.05)] >= none[(attack, 0.1)]
    assert none[("pgd[steps=5]", 0.1)] < none[("fgsm", 0.0)]


def test_worst_case_is_the_per_sample_minimum(results):
    for (_, eps), group in results.groupby(["defense", "eps"]):
        rows = group.set_index("attack")["accuracy"]
        assert rows["worst-case"] <= min(rows["fgsm"], rows["pgd[steps=5]"])
        assert rows["worst-case"] >= rows["fgsm"] + rows["pgd[steps=5]"] - 100


def test_rg_score_sums_accuracies_over_the_grid_including_zero(results):
    table = accuracy_table(results)
    for row in table.to_dict(orient="records"):
        cells = results[(results["defense"] == row["defense"]) & (results["attack"] == row["attack"])]
        assert len(cells) == 3
        # the sum of the accuracies as printed (two decimals): within half a hundredth per eps of the exact sum
        assert row["R&G"] == pytest.approx(sum(round(row[column], 2) for column in ("eps=0", "eps=0.05", "eps=0.1")))
        assert row["R&G"] == pytest.approx(cells["accuracy"].sum(), abs=3 * 0.005)
    ranks = ranking(results)
    assert list(ranks["rank"]) == [1, 2]
    assert ranks["R&G worst-case"].is_monotonic_decreasing


def test_leaderboard_files(results):
    files = results.attrs["files"]
    csv = pd.read_csv(files["csv"])
    assert list(csv.columns[:4]) == ["rank", "model", "defense", "attack"]
    assert {"eps=0", "eps=0.05", "eps=0.1", "R&G"} <= set(csv.columns)
    markdown = files["md"].read_text()
    assert "## Ranking" in markdown and "R&G worst-case" in markdown
    assert re.search(r"\|\s+1 \| cnn\s+\| \S+\s+\|", markdown)  # a GitHub table row, ranked
    sidecar = json.loads(files["json"].read_text())
    assert sidecar["seed"] == 0 and sidecar["eps"] == [0.0, 0.05, 0.1]
    assert sidecar["dataset"]["n_examples"] == 96 and sidecar["dataset"]["n_train"] == 256
    assert sidecar["versions"]["torch"] == torch.__version__
    assert sidecar["plugins"]["attacks"]["pgd[steps=5]"].startswith("robustbench-lite ")
    assert len(sidecar["cells"]) == len(results)
    assert all(entry["status"] == "ok" for entry in sidecar["training"].values())


def test_same_seed_same_numbers_and_cached_weights_are_reused(tmp_path):
    first = tiny_run(tmp_path)
    assert list((tmp_path / "cache").glob("*.pt"))
    second = tiny_run(tmp_path)
    assert second.attrs["metadata"]["training"]["cnn/none"]["from_cache"] is True
    assert first.attrs["metadata"]["training"]["cnn/none"]["from_cache"] is False
    pd.testing.assert_series_equal(first["accuracy"], second["accuracy"])
    fresh = tiny_run(tmp_path, use_cache=False)
    pd.testing.assert_series_equal(first["accuracy"], fresh["accuracy"])


def test_corrupt_checkpoint_is_retrained_not_loaded(tmp_path):
    first = tiny_run(tmp_path)
    (checkpoint,) = (tmp_path / "cache").glob("*.pt")
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    with pytest.warns(UserWarning, match="ignoring checkpoint"):
        second = tiny_run(tmp_path)
    assert second.attrs["metadata"]["training"]["cnn/none"]["from_cache"] is False
    pd.testing.assert_series_equal(first["accuracy"], second["accuracy"])


def test_failing_plugins_are_isolated_and_recorded(tmp_path, install_plugin):
    install_plugin("rbl-faulty", "rbl_faulty_plugin", FAILING_ATTACK)
    results = tiny_run(tmp_path, attacks="fgsm,exploding,escaping")
    by_attack = results[results["eps"] > 0].groupby("attack")["status"].agg(set)
    assert by_attack["fgsm"] == {"ok"}
    assert by_attack["exploding"] == {"failed"} and by_attack["escaping"] == {"failed"}
    assert by_attack["worst-case"] == {"incomplete"}
    errors = results.set_index(["attack", "eps"])["error"]
    assert "RuntimeError: boom" in errors[("exploding", 0.1)]
    assert "left the linf ball" in errors[("escaping", 0.1)]
    markdown = results.attrs["files"]["md"].read_text()
    assert "## Failed or incomplete cells" in markdown and "boom" in markdown
    assert pd.isna(accuracy_table(results).set_index("attack").loc["exploding", "R&G"])


FAILING_DEFENSE = '''
import torch
from robustbench_lite import Defense, hookimpl

class Diverging(Defense):
    name = "diverging"
    description = "a training loss that becomes NaN"

    def loss(self, model, x, y, eps):
        return model(x).sum() * float("nan")

@hookimpl
def register_defenses(register):
    register(Diverging)
'''


def test_training_failure_fails_only_its_group(tmp_path, install_plugin):
    install_plugin("rbl-diverging", "rbl_diverging_plugin", FAILING_DEFENSE)
    results = tiny_run(tmp_path, defenses="diverging,none", attacks="fgsm")
    status = results.groupby("defense")["status"].agg(set)
    assert status["diverging"] == {"failed"} and status["none"] == {"ok"}
    error = results[results["defense"] == "diverging"]["error"].iloc[0]
    assert "training failed: TrainingDivergedError: training loss became nan" in error
    assert results.attrs["metadata"]["training"]["cnn/diverging"]["status"] == "failed"
    assert ranking(results)["defense"].tolist() == ["none", "diverging"]


def test_trained_model_is_the_one_run_evaluates(tmp_path):
    results = tiny_run(tmp_path, attacks="fgsm")
    model, data = rbl.trained_model(model="cnn", defense="none", dataset=TINY, epochs=2, batch_size=64,
                                    device="cpu", cache_dir=tmp_path / "cache")
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        clean = (model(data.x_test).argmax(1) == data.y_test).float().mean().item() * 100
    assert clean == pytest.approx(results.set_index(["attack", "eps"]).loc[("fgsm", 0.0), "accuracy"])
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1  # loaded from the cache, not retrained


UNTARGETED_ATTACK = '''
import torch
from robustbench_lite import Attack, hookimpl

class Blur(Attack):
    name = "untargetable"
    description = "has no target option"

    def perturb(self, model, x, y, eps):
        return x

@hookimpl
def register_attacks(register):
    register(Blur)
'''


def test_targeted_mode_reports_the_success_rate(tmp_path):
    results = tiny_run(tmp_path, attacks="pgd", eps="0,0.1,0.5", target="3")
    pgd = results[results["attack"] != "worst-case"].set_index("eps")
    assert pgd["attack"].iloc[0] == "pgd[target=3]"
    success = pgd["target_success"]
    assert success[0.0] == 0.0  # clean-correct points of other classes are, by definition, not at the target
    assert success[0.5] > success[0.1] >= 0 and success[0.5] > 50
    assert results.attrs["metadata"]["target"] == {"index": 3, "name": "3"}
    markdown = results.attrs["files"]["md"].read_text()
    assert "## Targeted success rate (%), target class '3' (3)" in markdown


def test_target_by_name_and_bad_targets(tmp_path, install_plugin):
    assert rbl.runner.resolve_target("Deer", ["plane", "car", "bird", "cat", "deer"]) == 4
    assert rbl.runner.resolve_target(2, ["plane", "car", "bird"]) == 2
    with pytest.raises(rbl.UsageError, match=r"unknown target class 'dear'; valid: 0 \(plane\), 1 \(car\)"):
        rbl.runner.resolve_target("dear", ["plane", "car"])
    install_plugin("rbl-untargetable", "rbl_untargetable_plugin", UNTARGETED_ATTACK)
    with pytest.raises(rbl.UsageError, match="--target needs attacks with a targeted mode; untargetable has none"):
        tiny_run(tmp_path, attacks="pgd,untargetable", target="1")


def test_a_batch_out_of_device_memory_is_retried_in_halves():
    from robustbench_lite.evaluation import adversarial_predictions

    class MemoryHungryFGSM(type(rbl.get_attack("fgsm"))):
        """FGSM that runs out of memory on batches larger than 5, as a big model on a small GPU would."""

        batches: list[int] = []

        def perturb(self, model, x, y, eps):
            self.batches.append(len(x))
            if len(x) > 5:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return super().perturb(model, x, y, eps)

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)).eval().requires_grad_(False)
    x = torch.rand(23, 3, 2, 2)
    clean = y = model(x).argmax(1)  # every point clean-correct: all 23 are attacked
    hungry = MemoryHungryFGSM()
    with pytest.warns(UserWarning) as warned:
        predicted = adversarial_predictions(model, hungry, x, y, 0.3, clean, batch_size=16)
    assert [str(warning.message) for warning in warned] == [
        "fgsm: out of memory on a batch of 16; retrying in batches of 8",
        "fgsm: out of memory on a batch of 8; retrying in batches of 4",
    ]
    expected = adversarial_predictions(model, rbl.get_attack("fgsm"), x, y, 0.3, clean, batch_size=4)
    assert torch.equal(predicted, expected)
    candidates = int((clean == y).sum())
    assert sum(size for size in hungry.batches if size <= 5) == candidates  # every candidate attacked once
    assert max(size for size in hungry.batches if size <= 5) == 4  # 16 -> 8 -> 4, then kept

    class AlwaysOutOfMemory(MemoryHungryFGSM):
        def perturb(self, model, x, y, eps):
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    with pytest.warns(UserWarning), pytest.raises(torch.OutOfMemoryError):
        adversarial_predictions(model, AlwaysOutOfMemory(), x, y, 0.3, clean, batch_size=16)
