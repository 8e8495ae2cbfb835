"""Discovery through entry points, exactly as a third-party distribution is found."""

import pytest

from robustbench_lite.errors import UsageError
from robustbench_lite.registry import PluginLoadWarning, Registry

PLUGIN_SOURCE = '''
import torch
from robustbench_lite import Attack, hookimpl

class Noise(Attack):
    name = "{name}"
    description = "random sign noise of size eps"

    def perturb(self, model, x, y, eps):
        return torch.clamp(x + eps * torch.randn_like(x).sign(), 0, 1)

@hookimpl
def register_attacks(register):
    register(Noise)
'''


def test_builtins_come_from_this_distributions_entry_points():
    registry = Registry()
    for kind, names in {
        "attacks": {"fgsm", "pgd"},
        "defenses": {"none", "at-fgsm", "at-pgd"},
        "models": {"mlp", "cnn", "lenet", "vgg19", "wrn-28-10", "resnet18"},
        "datasets": {"cifar10", "mnist", "moons", "npz", "synthetic"},
    }.items():
        infos = registry.infos(kind)
        assert names <= set(infos)
        assert {infos[name].distribution for name in names} == {"robustbench-lite"}


def test_third_party_distribution_shows_up(install_plugin):
    install_plugin("rbl-noise", "rbl_noise_plugin", PLUGIN_SOURCE.format(name="noise"))
    registry = Registry()
    info = registry.infos("attacks")["noise"]
    assert info.provider == "rbl-noise 1.2.3"
    assert registry.create("attacks", "noise").label == "noise"
    assert "pgd" in registry.infos("attacks")


def test_plugin_that_fails_to_import_is_skipped_with_a_warning(install_plugin):
    install_plugin("rbl-broken", "rbl_broken_plugin", "raise ImportError('needs libfoo')\n")
    with pytest.warns(PluginLoadWarning, match=r"'rbl_broken_plugin' from distribution rbl-broken 1.2.3.*needs libfoo"):
        registry = Registry()
    assert {"fgsm", "pgd"} <= set(registry.infos("attacks"))


def test_same_name_from_two_distributions_is_never_silently_overridden(install_plugin):
    install_plugin("rbl-evil", "rbl_evil_plugin", PLUGIN_SOURCE.format(name="pgd"))
    with pytest.warns(PluginLoadWarning, match="'pgd' is registered by both"):
        registry = Registry()
    assert "pgd" not in registry.infos("attacks")
    with pytest.raises(UsageError, match=r"robustbench-lite 0.1.0 and rbl-evil 1.2.3|rbl-evil 1.2.3 and robustbench-lite"):
        registry.create("attacks", "pgd")


def test_unknown_names_list_the_valid_choices_and_a_close_match():
    registry = Registry()
    with pytest.raises(UsageError, match=r"unknown attack 'pgdd' \(did you mean 'pgd'\?\); valid choices: .*fgsm.*pgd"):
        registry.create("attacks", "pgdd")
    with pytest.raises(UsageError, match="unknown plugin kind 'attack'"):
        registry.infos("attack")


def test_plugin_for_another_api_version_is_refused_with_a_clear_message(install_plugin):
    install_plugin("rbl-future", "rbl_future_plugin", "RBL_PLUGIN_API = 2\n" + PLUGIN_SOURCE.format(name="future"))
    with pytest.warns(PluginLoadWarning, match=r"rbl-future 1.2.3.*written for plugin API 2.*provides plugin API 1"):
        registry = Registry()
    assert "future" not in registry.infos("attacks")


def test_plugins_can_add_cli_commands(install_plugin, capsys):
    from robustbench_lite.cli import main

    install_plugin("rbl-hello", "rbl_hello_plugin", '''
import click
from robustbench_lite import hookimpl

@hookimpl
def register_commands(cli):
    @cli.command()
    @click.argument("who")
    def hello(who):
        """Say hello."""
        click.echo(f"hello {who}")
''')
    assert main(["hello", "lsa"]) == 0
    assert capsys.readouterr().out == "hello lsa\n"


@pytest.mark.parametrize("setting, loaded", [
    (None, {"noise-a", "noise-b"}),
    ("rbl-noise-a", {"noise-a"}),
    ("RBL_Noise.A, rbl-noise-b", {"noise-a", "noise-b"}),  # distribution names compare as pip compares them
    ("-rbl_noise_a", {"noise-b"}),
    ("", set()),
])
def test_rbl_plugins_selects_the_distributions_that_load_besides_the_built_ins(install_plugin, monkeypatch,
                                                                               setting, loaded):
    install_plugin("rbl-noise-a", "rbl_noise_a", PLUGIN_SOURCE.format(name="noise-a"))
    install_plugin("rbl-noise-b", "rbl_noise_b", PLUGIN_SOURCE.format(name="noise-b"))
    if setting is not None:
        monkeypatch.setenv("RBL_PLUGINS", setting)
    attacks = set(Registry().infos("attacks"))
    assert attacks & {"noise-a", "noise-b"} == loaded
    assert {"fgsm", "pgd"} <= attacks


@pytest.mark.parametrize("setting, error", [
    ("rbl-nope", "RBL_PLUGINS names 'rbl-nope', not an installed plugin distribution; installed: "),
    ("rbl-noise-a,-rbl-noise-b", "both names distributions to load and, with '-', ones to leave out"),
    ("-robustbench-lite", "RBL_PLUGINS cannot leave out robustbench-lite: its built-in plugins always load"),
])
def test_a_bad_rbl_plugins_is_one_error_line_for_every_command(install_plugin, monkeypatch, tmp_path, capsys,
                                                               setting, error):
    from robustbench_lite.cli import main

    install_plugin("rbl-noise-a", "rbl_noise_a", PLUGIN_SOURCE.format(name="noise-a"))
    install_plugin("rbl-noise-b", "rbl_noise_b", PLUGIN_SOURCE.format(name="noise-b"))
    monkeypatch.setenv("RBL_PLUGINS", setting)
    monkeypatch.setenv("RBL_CACHE_DIR", str(tmp_path))
    for command in (["list"], ["run", "--dry-run", "--out", str(tmp_path / "out")]):
        assert main(command) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith("rbl: error: ") and error in line
    with pytest.raises(UsageError, match="RBL_PLUGINS"):
        Registry()


DECLARING_PLUGIN = '''
import torch
from robustbench_lite import Attack, Option, hookimpl

class Declaring(Attack):
    name = "declaring"
    description = "an attack whose options are under test"
    options = ({options},)

    def perturb(self, model, x, y, eps):
        return x.clone()

@hookimpl
def register_attacks(register):
    register(Declaring)
'''


@pytest.mark.parametrize("options, problem", [
    ('Option("label", str, "a", "shadows the label property")', "option 'label' would shadow the class attribute "
                                                                "Declaring.label"),
    ('Option("norm", str, "l2", "shadows the class norm")', "option 'norm' would shadow the class attribute"),
    ('Option("parts", list, None, "a list")', "option 'parts' has type 'list'; supported: int, float, bool, str"),
    ('Option("steps", int, 0, "n", minimum=1)', "the default of option 'steps' of Declaring must be >= 1, got 0"),
    ('Option("steps", int, 2.5, "n")', "the default of option 'steps' of Declaring must be of type int, got 2.5"),
    ('Option("rate", float, "fast", "r")', "must be of type float, got 'fast'"),
    ('Option("my step", int, 1, "n")', "option name 'my step' is not a unique Python identifier"),
    ('Option("k", int, 1, "n"), Option("k", int, 2, "n")', "option name 'k' is not a unique Python identifier"),
])
def test_bad_option_declarations_skip_the_plugin_at_registration_naming_the_option(install_plugin, options, problem):
    install_plugin("rbl-declaring", "rbl_declaring", DECLARING_PLUGIN.format(options=options))
    with pytest.warns(PluginLoadWarning, match="from distribution rbl-declaring 1.2.3 was skipped: TypeError: "
                                              "Declaring declares bad options: ") as warned:
        registry = Registry()
    assert problem in str(warned[0].message)
    assert "declaring" not in registry.infos("attacks") and "pgd" in registry.infos("attacks")


def test_good_option_declarations_register():
    install = 'Option("steps", int, 3, "n", minimum=1), Option("rate", float, 0.5, "r"), Option("target", int, None, "t")'
    source = DECLARING_PLUGIN.format(options=install)
    namespace: dict = {}
    exec(compile(source, "declaring", "exec"), namespace)
    from robustbench_lite.options import declaration_problems

    assert declaration_problems(namespace["Declaring"]) == []
