"""An edited plugin is recomputed: results and trained weights are keyed by a digest of its code."""

from __future__ import annotations

import importlib
import sys
import textwrap

from pathlib import Path

import pytest

from robustbench_lite.plugin_code import code_digest
from robustbench_lite.registry import default_registry

NOISE_ATTACK = '''
import torch
from robustbench_lite import Attack, hookimpl

class Noise(Attack):
    name = "noise"
    description = "random sign noise of size eps"

    def perturb(self, model, x, y, eps):
        generator = torch.Generator().manual_seed(0)
        noise = torch.randn(x.shape, generator=generator).sign()
        return torch.clamp(x + {scale} * eps * noise, 0, 1)

@hookimpl
def register_attacks(register):
    register(Noise)
'''


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A plugin package ``pkg`` with an attack module, a helper it imports and a module it does not."""
    root = tmp_path / "pkg"
    root.mkdir()
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(name: str, source: str) -> None:
        (root / f"{name}.py").write_text(textwrap.dedent(source))

    write("__init__", "")
    write("helper", "STEP = 1\n")
    write("unrelated", "X = 1\n")
    write("attack", "from .helper import STEP\n\nclass Attack:\n    step = STEP\n")
    yield write
    for name in [name for name in sys.modules if name == "pkg" or name.startswith("pkg.")]:
        del sys.modules[name]


def digest_of_attack() -> str:
    return code_digest(importlib.import_module("pkg.attack").Attack)


def test_the_digest_follows_the_module_and_what_it_imports_from_its_own_package(package):
    first = digest_of_attack()
    assert digest_of_attack() == first
    package("unrelated", "X = 2\n")
    assert digest_of_attack() == first
    package("helper", "STEP = 2\n")
    changed_helper = digest_of_attack()
    assert changed_helper != first
    package("attack", "from .helper import STEP\n\nclass Attack:\n    step = 2 * STEP\n")
    assert digest_of_attack() not in (first, changed_helper)


def test_a_builtin_plugins_digest_covers_the_core_modules_it_imports():
    from robustbench_lite.plugin_code import _own_imports

    imported = _own_imports("robustbench_lite.plugins.attacks.pgd")
    assert "robustbench_lite.attack_utils" in imported
    assert "robustbench_lite.runner" not in imported  # direct imports only


def test_an_edited_attack_is_recomputed_not_served_from_the_store(install_plugin, tmp_path):
    from robustbench_lite import run

    settings = dict(models="mlp", defenses="none", attacks="noise", eps="0,0.3", epochs=1, n_examples=32,
                    device="cpu", out=tmp_path / "out", cache_dir=tmp_path / "cache")
    install_plugin("rbl-noise", "rbl_noise_plugin", NOISE_ATTACK.format(scale=1))
    first = run(**settings)
    again = run(**settings)
    cells = len(first)
    assert again.attrs["metadata"]["work"]["cells_reused"] == cells
    assert again.attrs["metadata"]["work"]["cells_computed"] == 0
    plugin = Path(sys.modules.pop("rbl_noise_plugin").__file__)
    plugin.write_text(NOISE_ATTACK.format(scale=0))  # an edit in place: the same version 1.2.3, other code
    default_registry.cache_clear()
    edited = run(**settings)
    work = edited.attrs["metadata"]["work"]
    # eps = 0 runs no attack: those cells stay reused; the attack's and the worst case's at 0.3 are new
    assert (work["cells_computed"], work["cells_reused"]) == (2, 2)
    # the model was not edited: its weights come from the cache, not from training again
    assert edited.attrs["metadata"]["training"]["mlp/none"]["from_cache"]
    # a zero-size perturbation breaks nothing: the new code's number, not the stored one
    accuracy = edited[edited.attack == "noise"].set_index("eps")["accuracy"]
    assert accuracy[0.3] == accuracy[0.0] != first[first.attack == "noise"].set_index("eps")["accuracy"][0.3]
