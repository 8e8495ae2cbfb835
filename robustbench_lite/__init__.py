"""robustbench_lite: a plugin-based benchmark harness for the adversarial robustness of PyTorch classifiers.

The public Python API mirrors the ``rbl`` command line::

    import robustbench_lite as rbl
    results = rbl.run(dataset="moons", models="mlp", defenses="none,at-pgd", attacks="fgsm,pgd")
    x_adv = rbl.get_attack("pgd", steps=20).perturb(model, x, y, eps=0.1)
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

try:
    __version__ = version("robustbench-lite")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

from .errors import DatasetMissingError, RblError, UsageError  # noqa: E402
from .hookspecs import hookimpl  # noqa: E402
from .options import Option  # noqa: E402

if TYPE_CHECKING:
    from .interfaces import Attack, DatasetLoader, Defense, ModelBuilder

# The rest of the API imports torch (and pandas): loaded on first use, so that `rbl --help` and a
# plugin's metadata stay fast (PEP 562).
_LAZY = {
    "Acceleration": "acceleration",
    **dict.fromkeys(("Attack", "AttackWarning", "Dataset", "DatasetLoader", "Defense", "ModelBuilder",
                     "TrainingContext"), "interfaces"),
    **dict.fromkeys(("accuracy_table", "ranking", "success_table"), "leaderboard"),
    "default_registry": "registry",
    **dict.fromkeys(("build_model", "run", "trained_model"), "runner"),
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


def _create(kind: str, spec: str, options: dict):
    from .registry import default_registry

    return default_registry().create(kind, spec, **options)


def get_attack(spec: str, **options) -> Attack:
    """An attack by name (``"pgd"`` or ``"pgd[steps=20]"``) with keyword options, e.g. ``get_attack("pgd", steps=20)``."""
    return _create("attacks", spec, options)


def get_defense(spec: str, **options) -> Defense:
    """A defense (training recipe) by name, with options."""
    return _create("defenses", spec, options)


def get_model(spec: str, **options) -> ModelBuilder:
    """A model builder by name, with options; ``build_model(builder, dataset, seed)`` makes the network."""
    return _create("models", spec, options)


def get_dataset(spec: str, **options) -> DatasetLoader:
    """A dataset loader by name, with options; ``.load(data_dir)`` returns a :class:`Dataset`."""
    return _create("datasets", spec, options)


__all__ = [
    "Acceleration", "Attack", "Dataset", "DatasetLoader", "DatasetMissingError", "Defense", "ModelBuilder", "Option", "RblError",
    "TrainingContext", "UsageError", "__version__", "accuracy_table", "build_model", "default_registry",
    "get_attack", "get_dataset", "get_defense", "get_model", "hookimpl", "ranking", "run", "success_table",
    "trained_model",
]
