import pytest

from robustbench_lite.errors import UsageError
from robustbench_lite.options import Option, PluginSpec, resolve_options, split_spec_list

DECLARED = (
    Option("steps", int, 10, "steps", minimum=1),
    Option("size", float, None, "size", minimum=0.0, maximum=1.0),
    Option("random", bool, True, "random"),
    Option("mode", str, "a", "mode", choices=("a", "b")),
)


def test_defaults_and_cli_strings_are_coerced():
    assert resolve_options(DECLARED, {}, "x") == {"steps": 10, "size": None, "random": True, "mode": "a"}
    resolved = resolve_options(DECLARED, {"steps": "3", "size": "0.5", "random": "false", "mode": "b"}, "x")
    assert resolved == {"steps": 3, "size": 0.5, "random": False, "mode": "b"}


@pytest.mark.parametrize(
    "given, fragment",
    [
        ({"stepz": 1}, "unknown option 'stepz' for x; valid options: steps, size, random, mode"),
        ({"steps": "abc"}, "must be of type int, got 'abc'"),
        ({"steps": 2.5}, "must be of type int"),
        ({"steps": 0}, "must be >= 1"),
        ({"size": "nan"}, "finite"),
        ({"size": 2}, "must be <= 1.0"),
        ({"random": "maybe"}, "must be of type bool"),
        ({"mode": "c"}, "must be one of a, b"),
        ({"steps": "none"}, "needs a value of type int"),
    ],
)
def test_bad_values_name_the_option_and_the_problem(given, fragment):
    with pytest.raises(UsageError) as error:
        resolve_options(DECLARED, given, "x")
    assert fragment in str(error.value)


def test_spec_syntax_round_trip():
    assert PluginSpec.parse("pgd") == PluginSpec("pgd", {})
    assert PluginSpec.parse(" pgd[steps=5, random_start=false] ") == PluginSpec(
        "pgd", {"steps": "5", "random_start": "false"}
    )
    specs = split_spec_list("fgsm,pgd[steps=5,restarts=2],at-fgsm[alpha=0]")
    assert [spec.name for spec in specs] == ["fgsm", "pgd", "at-fgsm"]
    assert specs[1].options == {"steps": "5", "restarts": "2"}


def test_an_option_given_twice_is_refused_naming_it():
    with pytest.raises(UsageError, match=r"option 'steps' given twice in 'pgd\[steps=5, steps =6\]'"):
        PluginSpec.parse("pgd[steps=5, steps =6]")


@pytest.mark.parametrize("value", [-1, 2**63, "18446744073709551616"])
def test_an_option_named_seed_lies_in_the_range_every_generator_takes(value):
    declared = (Option("seed", int, 0, "seed"),)
    with pytest.raises(UsageError, match=r"must lie in \[0, 9223372036854775807\] \(0 to 2\^63-1\)"):
        resolve_options(declared, {"seed": value}, "x")
    assert resolve_options(declared, {"seed": 2**63 - 1}, "x") == {"seed": 2**63 - 1}


@pytest.mark.parametrize("text", ["pgd[steps=5", "pgd]", "[steps=1]", "pgd[steps]", ",", ""])
def test_malformed_specs_are_usage_errors(text):
    with pytest.raises(UsageError):
        split_spec_list(text)
