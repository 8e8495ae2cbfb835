"""An attack's doubts about its own result (:class:`~robustbench_lite.AttackWarning`) reach every format.

The channel AutoAttack's Square check uses: the core records the warning with the cell, keeps it in
the results store with the predictions, and flags the row ``attack-warnings`` with the message and
the points it concerns; other warnings are shown as usual and flag nothing.
"""

from __future__ import annotations

import json
import re
import sqlite3
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

import robustbench_lite as rbl
from robustbench_lite import AttackWarning
from robustbench_lite.leaderboard import ranking
from robustbench_lite.plugins.attacks.aa import AutoAttack
from robustbench_lite.store import ResultsStore

DOUBTFUL = '''
import warnings

from robustbench_lite import Attack, AttackWarning, hookimpl


class Doubtful(Attack):
    name = "doubtful"
    description = "returns its inputs unperturbed and says it found nothing"
    family = "iterative"

    def perturb(self, model, x, y, eps):
        warnings.warn(AttackWarning("doubtful: its search never left the clean input", points=len(x)))
        warnings.warn("doubtful: an ordinary warning")
        return x.clone()


@hookimpl
def register_attacks(register):
    register(Doubtful)
'''
MESSAGE = "doubtful: its search never left the clean input"


@pytest.fixture
def doubtful(install_plugin):
    install_plugin("rbl-doubtful", "rbl_doubtful", DOUBTFUL)


def run(tmp_path: Path, **overrides) -> pd.DataFrame:
    settings = dict(models="cnn", defenses="none", attacks="fgsm,doubtful", eps="0,0.05,0.1",
                    dataset="synthetic[n_train=256,n_test=64]", epochs=1, batch_size=16, seed=0, device="cpu",
                    cache_dir=tmp_path / "cache", out=tmp_path / "out", db=tmp_path / "results.db")
    settings.update(overrides)
    return rbl.run(**settings)


def test_an_attack_warning_flags_its_row_in_every_format(tmp_path, doubtful):
    with pytest.warns(UserWarning, match="an ordinary warning"):  # other warnings still show
        results = run(tmp_path)
    cells = results[(results["attack"] == "doubtful") & (results["eps"] > 0)]
    clean_correct = int(results[(results["attack"] == "doubtful") & (results["eps"] == 0)]["correct"].iloc[0])
    # every clean-correct point is attacked at 0.05 (nothing is carried: the attack never succeeds), in 16s
    assert cells["notes"].tolist() == [f"{MESSAGE} ({clean_correct} points)"] * 2
    assert set(results[results["attack"] != "doubtful"]["notes"]) == {""}
    ranks = ranking(results)
    assert ranks["flags"].tolist() == ["attack-warnings"]
    assert ranks["rank"].tolist() == [1]  # a doubt is shown, not a reason to unrank
    files = results.attrs["files"]
    assert set(pd.read_csv(files["csv"])["flags"]) == {"attack-warnings"}
    sidecar = json.loads(files["json"].read_text())
    reason = f"doubtful at eps=0.05: {MESSAGE} ({clean_correct} points); doubtful at eps=0.1: {MESSAGE}"
    assert [entry["check"] for entry in sidecar["sanity"]] == ["attack-warnings"]
    assert sidecar["sanity"][0]["reason"].startswith(reason)
    assert f"`attack-warnings`: {reason}" in files["md"].read_text()


@pytest.mark.filterwarnings("ignore:doubtful. an ordinary warning")
def test_a_reused_cell_keeps_its_warning(tmp_path, doubtful):
    first = run(tmp_path)
    again = run(tmp_path, out=tmp_path / "again")
    assert again.attrs["metadata"]["work"]["cells_computed"] == 0  # nothing recomputed: the notes come from the store
    assert again["notes"].tolist() == first["notes"].tolist()
    assert ranking(again)["flags"].tolist() == ["attack-warnings"]


def test_a_warning_altered_in_the_store_is_recomputed(tmp_path):
    store = ResultsStore(tmp_path / "results.db")
    store.put({"a": 1}, torch.tensor([0, 1]), 0.5, notes={MESSAGE: 2})
    assert store.get({"a": 1}).notes == {MESSAGE: 2}
    with sqlite3.connect(tmp_path / "results.db") as connection:
        connection.execute("UPDATE results SET notes = '{}'")
    with pytest.warns(UserWarning, match="do not match their digest"):
        assert store.get({"a": 1}) is None


class _MaskedGradient(nn.Module):
    """Four classes, class 0 unless the mean shift of the input reaches half of 0.1; a zero input gradient.

    Only a vertex-like perturbation (most features at +eps) changes the class: the uniform random
    starts of APGD and FAB never get there and their gradient steps are zero, but Square, which
    follows the (continuous) margin by queries alone, does.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shift = (x.detach() - 0.5).flatten(1).mean(dim=1)
        score = 1.0 - 20.0 * shift
        zeros = torch.zeros_like(score)
        return torch.stack([score, zeros, zeros, zeros], dim=1) + 0.0 * x.flatten(1).sum(dim=1, keepdim=True)


def test_autoattack_warns_when_square_breaks_what_the_white_box_members_left():
    x, y = torch.full((6, 1, 4, 4), 0.5), torch.zeros(6, dtype=torch.long)
    attack = AutoAttack(steps=5, queries=300)
    with pytest.warns(AttackWarning) as caught:
        x_adv = attack.perturb(_MaskedGradient(), x, y, 0.1)
    assert (_MaskedGradient()(x_adv).argmax(dim=1) != 0).all()
    (warning,) = [w.message for w in caught if isinstance(w.message, AttackWarning)]
    assert str(warning).startswith("aa[version=standard,steps=5,queries=300]: Square broke points that apgd-ce, apgd-dlr and fab left")
    assert warning.points == 6


def test_autoattack_does_not_warn_when_square_finds_nothing_more():
    """On a linear model the gradient is the exact worst-case direction, so the white-box members break
    every point that can be broken and Square, run after them, has nothing left to find."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4)).eval().requires_grad_(False)
    x = torch.rand(32, 1, 4, 4)
    y = model(x).argmax(dim=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AttackWarning)
        x_adv = AutoAttack(steps=10, queries=100, targets=2).perturb(model, x, y, 0.05)
    robust = int((model(x_adv).argmax(dim=1) == y).sum())
    assert 0 < robust < len(x)  # some points broken, some left: the check had something to judge


@pytest.mark.parametrize("name", ["pgd", "bim", "mifgsm", "pgd-l2"])
def test_a_set_step_too_short_to_reach_eps_warns(name, conv_model_and_batch):
    model, x, y = conv_model_and_batch
    attack = rbl.get_attack(name, steps=2, rel_step_size=0.1)
    with pytest.warns(AttackWarning, match="^" + re.escape(attack.label) + r": 2 step\(s\) of 0.1 eps travel 0.2 eps at most"):
        attack.perturb(model, x[:4], y[:4], 0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AttackWarning)
        for enough in (rbl.get_attack(name, steps=2), rbl.get_attack(name, steps=2, rel_step_size=0.5)):
            enough.perturb(model, x[:4], y[:4], 0.1)
