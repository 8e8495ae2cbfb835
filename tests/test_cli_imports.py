"""`rbl --help` and `rbl list` stay fast: they import no torch, pandas, matplotlib or ray.

Import cost, not time, is asserted (times belong in benchmarks): the modules a command imports are
what makes it take seconds, and they are the same on every machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from robustbench_lite.cli import main

HEAVY = ("torch", "torchvision", "pandas", "matplotlib", "ray", "torchattacks")
PROBE = """
import json, sys
from robustbench_lite.cli import main
status = main(sys.argv[1:])
print(json.dumps({"status": status, "heavy": sorted(m for m in %r if m in sys.modules)}))
""" % (HEAVY,)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One cache for this module's fresh interpreters: the plugins are listed into it once."""
    return tmp_path_factory.mktemp("cache")


def command(cache, *args: str) -> dict:
    """Run ``rbl ARGS`` in a fresh interpreter; its exit status and the heavy modules it imported."""
    environment = {**os.environ, "RBL_CACHE_DIR": str(cache), "COLUMNS": "100"}
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=environment,
                          check=True)
    return json.loads(done.stdout.splitlines()[-1])


def test_importing_the_command_line_imports_nothing_heavy():
    probe = f"import sys, robustbench_lite.cli; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("args", [["--help"], ["list"], ["list", "--verbose", "pgd"], ["run", "--help"]],
                         ids=" ".join)
def test_help_and_list_import_nothing_heavy_once_the_plugins_are_listed(cache, args):
    first = command(cache, *args)  # the first lists the plugins (importing them) into the cache
    assert first["status"] == 0
    again = command(cache, *args)
    assert again == {"status": 0, "heavy": []}


def test_a_plugin_command_still_runs_from_the_listing(cache):
    assert command(cache, "--help")["status"] == 0
    lsa = command(cache, "lsa", "--help")
    assert lsa["status"] == 0 and "torch" in lsa["heavy"]  # running it imports what it needs


def test_list_prints_one_line_per_plugin_that_fits_the_terminal(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "70")
    assert main(["list", "attacks"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("attacks (")
    assert int(lines[0].split("(")[1].rstrip(")")) == len(lines) - 1
    assert all(len(line) <= 70 for line in lines)
    assert any(line.split()[0] == "pgd" for line in lines[1:])


def test_list_shows_a_datasets_defaults_and_a_plugins_options_and_doc(capsys):
    assert main(["list", "datasets"]) == 0
    mnist = next(line for line in capsys.readouterr().out.splitlines() if line.split()[0] == "mnist")
    assert "[eps grid 0,0.1,0.2,0.3,0.4,0.5; train eps 0.3; epochs 3]" in mnist
    assert main(["list", "pgd"]) == 0
    shown = capsys.readouterr().out
    assert "provided by robustbench-lite" in shown and "steps=10  number of gradient steps" in shown
    assert "projected back onto the eps-" in shown  # the docstring


def test_run_help_lists_each_datasets_defaults_and_the_dataset_of_each_model(capsys):
    assert main(["run", "--help"]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "cifar10 eps grid 0,0.01,0.03,0.1,0.2; train eps 8/255; epochs 10" in shown
    assert "vgg19 cifar10" in shown and "cnn mnist" in shown


def test_an_unknown_name_is_one_line_with_the_choices(capsys):
    assert main(["list", "pgdd"]) == 2
    assert capsys.readouterr().err.startswith("rbl: error: unknown plugin kind or name 'pgdd' (did you mean 'pgd'?)")


@pytest.mark.filterwarnings("always::robustbench_lite.errors.PluginLoadWarning")  # shown, as each `rbl` shows it
def test_a_broken_plugin_is_reported_again_from_the_cached_listing(install_plugin, capsys):
    install_plugin("rbl-broken", "rbl_broken_plugin", "raise RuntimeError('no GPU driver')\n")
    warning = "rbl: warning: plugin 'rbl_broken_plugin' from distribution rbl-broken 1.2.3 was skipped: " \
              "RuntimeError: no GPU driver\n"
    for _ in range(2):  # listed, then read back from the cache
        assert main(["list", "models"]) == 0
        assert capsys.readouterr().err == warning
    for args in (["--help"], ["run", "--help"]):  # help reads the listing in three places: said once
        assert main(args) == 0
        assert capsys.readouterr().err == warning


TRAINING_ONLY = ("torch._dynamo", "torchvision")  # torch.optim's constructors import torch._dynamo: 1.8 s here


def test_a_fully_cached_rerun_builds_no_optimizer_and_imports_no_torchvision(tmp_path):
    """The re-run only reads weights and stored cells: what training needs (an optimizer pulls in
    torch._dynamo) and torchvision (only for its datasets) stay unimported."""
    probe = PROBE.replace(repr(HEAVY), repr(TRAINING_ONLY))
    args = ["run", "--epochs", "1", "--n-examples", "16", "--defenses", "none", "--quiet",
            "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "weights")]
    environment = {**os.environ, "RBL_CACHE_DIR": str(tmp_path / "catalogue")}
    runs = [json.loads(subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True,
                                      env=environment, check=True).stdout.splitlines()[-1]) for _ in range(2)]
    assert runs[0] == {"status": 0, "heavy": ["torch._dynamo"]}  # the first trains: the probe sees the import
    assert runs[1] == {"status": 0, "heavy": []}
