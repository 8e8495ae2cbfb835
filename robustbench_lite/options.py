"""Typed plugin options and the ``name[key=value,...]`` spec syntax used on the command line.

A plugin declares its options once (name, type, default, help); the same declaration validates
values from the CLI (strings) and from Python (native values), prints in ``rbl list`` and makes
the canonical label that keys results and cached checkpoints.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from .errors import UsageError

# Bounds shared by the count options of plugins and the command line: large enough for any run a
# user could mean, small enough that a typo (10^9 steps) is refused instead of hanging.
MAX_STEPS = 100_000  # iterations of an attack or of a defense's inner maximisation
MAX_RESTARTS = 1_000
MAX_QUERIES = 1_000_000  # forward passes (or label queries) per input of a black-box attack
MAX_EOT = 1_000  # gradient samples per step
MAX_EPOCHS = 10_000
# Seeds go to torch (which takes [-2^63, 2^64-1]), numpy and the results store (SQLite's signed 64-bit
# integers): [0, 2^63-1] is what all of them take, and one seed is never an alias of another.
SEED_MAX = 2**63 - 1

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_NONE = {"none", "null", ""}


@dataclass(frozen=True)
class Option:
    """One option of a plugin.

    ``type`` is int, float, bool or str. A default of None means "unset" (the plugin documents
    what it then does). ``minimum``/``maximum`` bound numbers, ``choices`` bounds strings. An int
    option named ``seed`` always lies in [0, :data:`SEED_MAX`]. A ``labelled`` option is part of the
    plugin's label even at its default, for a setting every result must name (``aa[version=standard]``).
    """

    name: str
    type: type
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
    labelled: bool = False

    def coerce(self, value: Any, owner: str) -> Any:
        """Convert ``value`` (a CLI string or a Python value) to this option's type, or raise UsageError."""
        where = f"option {self.name!r} of {owner}"
        if value is None or (isinstance(value, str) and value.strip().lower() in _NONE):
            if self.default is None:
                return None
            raise UsageError(f"{where} needs a value of type {self.type.__name__}")
        try:
            converted = self._convert(value)
        except (TypeError, ValueError):
            raise UsageError(f"{where} must be of type {self.type.__name__}, got {value!r}") from None
        if isinstance(converted, float) and not math.isfinite(converted):
            raise UsageError(f"{where} must be a finite number, got {value!r}")
        if self.name == "seed" and self.type is int and not 0 <= converted <= SEED_MAX:
            raise UsageError(f"{where} {seed_range()}, got {value!r}")
        if self.minimum is not None and converted < self.minimum:
            raise UsageError(f"{where} must be >= {self.minimum}, got {value!r}")
        if self.maximum is not None and converted > self.maximum:
            raise UsageError(f"{where} must be <= {self.maximum}, got {value!r}")
        if self.choices is not None and converted not in self.choices:
            raise UsageError(f"{where} must be one of {', '.join(self.choices)}; got {value!r}")
        return converted

    def _convert(self, value: Any) -> Any:
        if self.type is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError(value)
        if self.type is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if self.type is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return real_number(value)
        return self.type(value)


def real_number(value: Any) -> float:
    """A float from a number or its text, where the text may be a fraction: ``8/255`` is how the field
    writes CIFAR budgets. Raises ValueError for anything else."""
    if isinstance(value, str) and "/" in value:
        numerator, _, denominator = value.partition("/")
        try:
            return float(Fraction(numerator.strip()) / Fraction(denominator.strip()))
        except ZeroDivisionError:
            raise ValueError(value) from None
    return float(value)


def budget_text(value: float) -> str:
    """A budget as a reader writes it: ``0.3``, ``0``, and ``8/255`` for what is a whole number of 8-bit levels."""
    levels = value * 255
    if round(levels) != 0 and abs(levels - round(levels)) < 1e-9 and len(repr(value)) > 6:
        return f"{round(levels)}/255"
    return f"{value:g}"


def seed_range() -> str:
    """The range every seed must lie in, as error messages say it."""
    return f"must lie in [0, {SEED_MAX}] (0 to 2^63-1)"


def resolve_options(declared: tuple[Option, ...], given: Mapping[str, Any], owner: str) -> dict[str, Any]:
    """Validate ``given`` against ``declared`` and fill in defaults, in declaration order."""
    by_name = {option.name: option for option in declared}
    for key in given:
        if key not in by_name:
            valid = ", ".join(by_name) or "none"
            raise UsageError(f"unknown option {key!r} for {owner}; valid options: {valid}")
    return {
        option.name: option.coerce(given[option.name], owner) if option.name in given else option.default
        for option in declared
    }


def format_value(value: Any) -> str:
    """Render an option value the way the spec syntax reads it back."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


@dataclass(frozen=True)
class PluginSpec:
    """A plugin name with raw option values, as written ``name[key=value,...]``."""

    name: str
    options: Mapping[str, Any]

    @classmethod
    def parse(cls, text: str) -> PluginSpec:
        text = text.strip()
        if not text:
            raise UsageError("empty plugin name")
        if "[" not in text:
            if "]" in text:
                raise UsageError(f"malformed plugin spec {text!r}; expected name[key=value,...]")
            return cls(text, {})
        name, _, rest = text.partition("[")
        if not rest.endswith("]") or not name.strip():
            raise UsageError(f"malformed plugin spec {text!r}; expected name[key=value,...]")
        options: dict[str, str] = {}
        body = rest[:-1].strip()
        for pair in split_outside_brackets(body, ",") if body else []:
            key, sep, value = pair.partition("=")
            if not sep or not key.strip():
                raise UsageError(f"malformed option {pair!r} in {text!r}; expected key=value")
            if key.strip() in options:  # else the last one would silently win
                raise UsageError(f"option {key.strip()!r} given twice in {text!r}; give each option once")
            options[key.strip()] = value.strip()
        return cls(name.strip(), options)


def split_outside_brackets(text: str, separator: str) -> list[str]:
    """Split ``text`` on the ``separator`` characters outside brackets, so that items may be specs with options."""
    items, depth, current = [], 0, []
    for char in text:
        depth += (char == "[") - (char == "]")
        if char == separator and depth == 0:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    items.append("".join(current))
    return items


def split_spec_list(text: str) -> list[PluginSpec]:
    """Split ``"fgsm,pgd[steps=5,restarts=2]"`` on the commas outside brackets."""
    items = split_outside_brackets(text, ",")
    specs = [PluginSpec.parse(item) for item in items if item.strip()]
    if not specs:
        raise UsageError(f"empty plugin list {text!r}")
    return specs


OPTION_TYPES = (int, float, bool, str)


def declaration_problems(owner: type) -> list[str]:
    """What is wrong with the options a plugin class declares; empty where nothing is.

    Checked when the plugin registers, so that a bad declaration fails there, naming the option,
    instead of at some later use: every option an Option of a supported type, under a unique
    identifier that does not shadow an attribute of the class (an option becomes an attribute of
    the instance: one named ``norm`` or ``label`` would silently replace the class's), with a
    default that passes its own checks.
    """
    problems, seen = [], set()
    for option in owner.options:
        if not isinstance(option, Option):
            problems.append(f"{option!r} is not an Option")
            continue
        name = option.name
        if not (isinstance(name, str) and name.isidentifier()) or name in seen:
            problems.append(f"option name {name!r} is not a unique Python identifier")
        elif hasattr(owner, name):
            problems.append(f"option {name!r} would shadow the class attribute {owner.__name__}.{name}")
        seen.add(name)
        if option.type not in OPTION_TYPES:
            problems.append(f"option {name!r} has type {getattr(option.type, '__name__', option.type)!r}; "
                            f"supported: {', '.join(kind.__name__ for kind in OPTION_TYPES)}")
        elif option.default is not None:
            try:
                if option.coerce(option.default, owner.__name__) != option.default:
                    problems.append(f"option {name!r} has a default {option.default!r} that is not of type "
                                    f"{option.type.__name__}")
            except UsageError as error:
                problems.append(f"the default of {error}")
    return problems
