"""The README's commands work from a fresh clone: every cheap `rbl` command in it runs and exits 0.

`rbl run` commands run as dry runs (the matrix and its estimate, on stand-in data where the dataset
is not there), the others as written, in a folder that holds a copy of the committed leaderboards
and the results store of a (tiny) zero-config run, as a user's clone has after `rbl run`, plus the
two shard stores the README's merge command reads. Commands
that train for minutes are listed in EXPENSIVE with the reason; a new one must be added there on
purpose, or made cheap.
"""

from __future__ import annotations

import re
import shlex
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from robustbench_lite.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXPENSIVE = {
    "rbl bench": "times attacks for minutes (the pytest-benchmark suite covers it)",
    "rbl plot examples": "trains model B on MNIST first",
    "rbl plot confusion": "trains model B on MNIST first",
    "rbl plot loss-curves": "trains model B on MNIST first, undefended and with at-pgd",
    "rbl plot loss-histogram": "trains model B on MNIST first, undefended and with at-pgd",
    "rbl lsa": "trains model B on MNIST first",
}
NEEDS_A_GPU = "--device cuda"


def readme_commands() -> list[str]:
    """Every `rbl ...` command of the README's bash blocks, continuation lines joined, comments dropped."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] == "rbl" and "..." not in words:
                commands.append(shlex.join(words))
    return commands


def expense(command: str) -> str | None:
    for prefix, reason in EXPENSIVE.items():
        if command.startswith(prefix):
            return reason
    return "needs a GPU" if NEEDS_A_GPU in command else None


CHEAP = [command for command in readme_commands() if expense(command) is None]


def test_the_readme_has_cheap_commands_to_check_and_says_why_others_are_skipped():
    assert len(CHEAP) >= 10
    assert {"rbl list", "rbl run --models vgg19 --attacks fgsm,pgd --dry-run"} <= set(CHEAP)


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """A working folder as a user's clone has it after the zero-config `rbl run` (a tiny one here)."""
    folder = tmp_path_factory.mktemp("clone")
    # The committed files only: a results store left in leaderboards/ by a local run is not a clone's.
    shutil.copytree(ROOT / "leaderboards", folder / "leaderboards", ignore=shutil.ignore_patterns("results.db*"))
    return folder


@pytest.fixture
def in_clone(clone, monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.chdir(clone)
    monkeypatch.setenv("RBL_CACHE_DIR", str(tmp_path / "cache"))
    tiny = ["run", "--epochs", "1", "--n-examples", "16", "--quiet"]
    if not (clone / "leaderboards" / "results.db").exists():
        assert main([*tiny, "--defenses", "none", "--name", "moons"]) == 0
        for shard in (1, 2):  # what the README's `rbl run ... --shard I/2 --db sI.db` leaves
            assert main([*tiny, "--defenses", "none,at-fgsm", "--shard", f"{shard}/2", "--db", f"s{shard}.db",
                         "--out", str(clone / "shards" / str(shard))]) == 0
    return clone


@pytest.mark.parametrize("command", CHEAP)
def test_a_readme_command_works(in_clone, command, capsys, tmp_path):
    args = shlex.split(command)[1:]
    if args[0] == "run":  # a dry run, in a folder of its own: the clone's leaderboards hold another moons run
        args += ["--dry-run", "--out", str(tmp_path / "out")]
    status = main(args)
    out, err = capsys.readouterr()
    assert status == 0, f"{command!r} exited {status}: {err}"
