"""robustbench_lite: a plugin-based benchmark harness for the adversarial robustness of PyTorch classifiers.

The public Python API mirrors the ``rbl`` command line::

    import robustbench_lite as rbl
    results = rbl.run(dataset="moons", models="mlp", defenses="none,at-pgd", attacks="fgsm,pgd")
    x_adv = rbl.get_attack("pgd", steps=20).perturb(model, x, y, eps=0.1)
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("robustbench-lite")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

from .acceleration import Acceleration  # noqa: E402
from .errors import DatasetMissingError, RblError, UsageError  # noqa: E402
from .hookspecs import hookimpl  # noqa: E402
from .interfaces import Attack, Dataset, DatasetLoader, Defense, ModelBuilder, TrainingContext  # noqa: E402
from .leaderboard import accuracy_table, ranking, success_table  # noqa: E402
from .options import Option  # noqa: E402
from .registry import default_registry  # noqa: E402
from .runner import build_model, run, trained_model  # noqa: E402


def get_attack(spec: str, **options) -> Attack:
    """An attack by name (``"pgd"`` or ``"pgd[steps=20]"``) with keyword options, e.g. ``get_attack("pgd", steps=20)``."""
    return default_registry().create("attacks", spec, **options)


def get_defense(spec: str, **options) -> Defense:
    """A defense (training recipe) by name, with options."""
    return default_registry().create("defenses", spec, **options)


def get_model(spec: str, **options) -> ModelBuilder:
    """A model builder by name, with options; ``build_model(builder, dataset, seed)`` makes the network."""
    return default_registry().create("models", spec, **options)


def get_dataset(spec: str, **options) -> DatasetLoader:
    """A dataset loader by name, with options; ``.load(data_dir)`` returns a :class:`Dataset`."""
    return default_registry().create("datasets", spec, **options)


__all__ = [
    "Acceleration", "Attack", "Dataset", "DatasetLoader", "DatasetMissingError", "Defense", "ModelBuilder", "Option", "RblError",
    "TrainingContext", "UsageError", "__version__", "accuracy_table", "build_model", "default_registry",
    "get_attack", "get_dataset", "get_defense", "get_model", "hookimpl", "ranking", "run", "success_table",
    "trained_model",
]
