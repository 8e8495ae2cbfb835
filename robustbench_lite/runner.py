"""The matrix runner: every (model, defense) is trained or loaded, then every attack x eps cell runs.

All user input is validated before any work starts, so a typo costs nothing. After that, a
failure is isolated: a model that fails to train fails its own cells, an attack that raises
fails its own cell, and the rest of the matrix still runs.

Work is dealt out as jobs, one per trained model with every defense evaluated on it, run here one
after another or as Ray tasks (``executor``), all or one shard of them. Every cell goes to the
results store as it finishes and is reused from there by a later run with the same settings, and
the leaderboard is rewritten after every job, so a crash loses at most the cell in flight.

Inference-time defenses (and any model found to be random) are evaluated twice: naive, the
defended model attacked as it is, and adaptive, with BPDA through non-differentiable
preprocessing and EOT against randomness (Athalye et al. 2018). Each evaluated row also gets
the probes the sanity checks need (see :mod:`robustbench_lite.sanity`).
"""

from __future__ import annotations

import math
import os
import platform
import re
import tempfile
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from . import leaderboard, probes
from .acceleration import Acceleration, device_tuning
from .atomic import ensure_writable, nearest_existing, remove_stale_temporaries
from .choices import DEVICES, EXECUTORS, LR_SCHEDULES, WORST_CASE
from .errors import DatasetMissingError, DiskFullError, UsageError
from .evaluation import PassCounter, adversarial_predictions, attack_warnings, defended, model_unchanged, predict
from .locations import default_cache_dir
from .interfaces import Attack, Dataset, DatasetLoader, Defense, ModelBuilder, Normalize, digest
from .optimizers import canonical_optimizer
from .outputs import OutputTypeError, output_adapter
from .options import (
    MAX_EOT, MAX_EPOCHS, SEED_MAX, PluginSpec, format_value, real_number, seed_range, split_spec_list,
)
from .plan import DatasetChoice, choose_dataset, shape_hint
from .progress import JOBS_TASK, Display, clock, progress_display, resolve_mode
from .estimate import (
    JobPlan, RunPlan, attack_batch_seconds, evaluation_batches, scaled, stand_in, training_batch_seconds,
)
from .registry import Registry, default_registry
from .store import ResultsStore
from .training import (
    TrainingConfig, TrainingRecord, batches_per_run, cache_key, checkpoint_path, load_or_train, split_validation,
)

DEFAULT_EOT = 8  # gradient samples per step of the adaptive evaluation of a randomized model
RANDOMNESS_POINTS = 16  # test points passed twice through each model to detect randomness
SANITY_EPS = 0.5  # l-inf budget of the large-eps probe: the all-0.5 image lies in every ball of [0, 1] inputs
SANITY_POINTS = 64  # test points of the large-eps probe


@dataclass
class Cell:
    """One result: a (model, defense) under one attack at one eps. ``accuracy`` is in percent.

    ``evaluation``: ``standard``, ``naive`` (a defended model attacked as it is) or ``adaptive``
    (BPDA and/or EOT; the defense label then ends in ``+bpda`` / ``+eot``).
    """

    model: str
    defense: str
    attack: str
    eps: float
    accuracy: float | None
    correct: int | None
    n: int
    seconds: float
    status: str
    error: str = ""
    target_success: float | None = None
    evaluation: str = "standard"
    forward_images: int | None = None  # images passed forward through the model in this cell, scoring included
    backward_images: int | None = None  # input gradients the attack took, in images (its gradient evaluations)
    notes: str = ""  # the attack's warnings about this cell (AttackWarning), "; "-separated


# The finest eps step a grid may take: values closer than this, or nonzero ones below it, would be
# printed alike (the leaderboard's columns read eps={eps:g}) or as something they are not.
EPS_RESOLUTION = 1e-6


def parse_eps(eps: str | Iterable[float] | None, default: Sequence[float]) -> list[float]:
    """The sorted eps grid, always including 0 (the clean column of the R&G score).

    Every value prints as what is computed: -0 becomes 0; two values that would share a column
    (closer than :data:`EPS_RESOLUTION`, or alike under ``{eps:g}``) and nonzero values below the
    resolution are refused, naming what the user wrote.
    """
    if eps is None:
        values: list[Any] = list(default)
    elif isinstance(eps, str):
        values = [part.strip() for part in eps.split(",") if part.strip()]
        if not values:
            raise UsageError(f"empty epsilon list {eps!r}; give values such as 0,0.1,0.2")
    else:
        values = list(eps)
        if not values:
            raise UsageError("empty epsilon list; give values such as 0,0.1,0.2")
    given = {0.0: "0"}  # each distinct value and how the user wrote it
    for value in values:
        number = _epsilon(value)
        for other, text in given.items():
            if other != number and _alike(other, number):
                raise UsageError(_alike_message(text, str(value), other, number))
        given.setdefault(number, str(value))
    return sorted(given)


def _epsilon(value: Any) -> float:
    """One eps value as a float in [0, 1] (0 for -0), or UsageError."""
    try:
        number = real_number(value)
        fraction = isinstance(value, str) and "/" in value
        exact = Decimal(number) if fraction or not isinstance(value, str) else Decimal(value.strip())
    except (TypeError, ValueError, ArithmeticError):
        raise UsageError(f"invalid epsilon {value!r}: not a number; give values in [0, 1] such as 0.1 or 8/255") from None
    if not math.isfinite(number) or not 0.0 <= number <= 1.0:
        raise UsageError(f"invalid epsilon {value!r}: must lie in [0, 1] (inputs are images in [0, 1])")
    if exact != 0 and number < EPS_RESOLUTION:  # the text, not the float: 1e-400 reads as 0.0
        raise UsageError(f"invalid epsilon {value!r}: nonzero but below the eps resolution {EPS_RESOLUTION:g}; "
                         f"give 0 or a value >= {EPS_RESOLUTION:g}")
    return 0.0 if number == 0 else number


def _alike(a: float, b: float) -> bool:
    return abs(a - b) < EPS_RESOLUTION or leaderboard.eps_column(a) == leaderboard.eps_column(b)


def _alike_message(text_a: str, text_b: str, a: float, b: float) -> str:
    if leaderboard.eps_column(a) == leaderboard.eps_column(b):
        problem = f"would share the leaderboard column {leaderboard.eps_column(a)}"
    else:
        problem = f"lie closer than the eps resolution {EPS_RESOLUTION:g}"
    return f"eps values {text_a!r} and {text_b!r} {problem}; give values at least {EPS_RESOLUTION:g} apart"


def resolve_target(target: str | int, classes: Sequence[str]) -> int:
    """A target class given by name (case-insensitive) or index, as an index into ``classes``."""
    text = str(target).strip()
    names = [str(name).lower() for name in classes]
    if text.lower() in names:
        return names.index(text.lower())
    if text.isdigit() and int(text) < len(names):
        return int(text)
    raise UsageError(f"unknown target class {text!r}; valid: {_class_choices(classes)}")


def _class_choices(classes: Sequence[str]) -> str:
    return ", ".join(f"{index} ({name})" for index, name in enumerate(classes))


def _check_attack_targets(threat: Attack, data: Dataset) -> None:
    """Refuse an attack's own target class (or target rank) that the dataset's classes cannot meet."""
    target, rank = threat.settings.get("target"), threat.settings.get("target_rank")
    where = f"attack {threat.label!r}"
    if target is not None and target >= data.num_classes:
        raise UsageError(f"option 'target' of {where} is class {target}, but dataset {data.name!r} has "
                         f"{data.num_classes} classes; valid targets: {_class_choices(data.classes)}")
    if rank is not None and rank >= data.num_classes:
        raise UsageError(f"option 'target_rank' of {where} is {rank}, but dataset {data.name!r} has "
                         f"{data.num_classes} classes; valid ranks: 1 to {data.num_classes - 1}")


def _check_attack_inputs(threat: Attack, data: Dataset) -> None:
    """Refuse an attack that says it cannot take the dataset's inputs or number of classes."""
    reason = threat.unsupported(data.input_shape, data.num_classes)
    if reason is not None:
        raise UsageError(f"attack {threat.label!r} cannot run on dataset {data.name!r} (inputs of shape "
                         f"{data.input_shape}, {data.num_classes} classes): {reason}; choose other attacks")


def resolve_device(device: str) -> torch.device:
    if device not in DEVICES:
        raise UsageError(f"unknown device {device!r}; valid choices: {', '.join(DEVICES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but CUDA is not available here; use --device cpu or auto")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _specs(value: str | PluginSpec | Iterable[str | PluginSpec], kind: str) -> list[PluginSpec]:
    if isinstance(value, str):
        return split_spec_list(value)
    if isinstance(value, PluginSpec):
        return [value]
    specs = [item if isinstance(item, PluginSpec) else PluginSpec.parse(item) for item in value]
    if not specs:
        raise UsageError(f"no {kind} given")
    return specs


def _unique(plugins: list[Any], kind: str) -> list[Any]:
    labels = [plugin.label for plugin in plugins]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise UsageError(f"{kind} listed twice: {', '.join(duplicates)}")
    return plugins


def build_model(builder: ModelBuilder, data: Dataset, seed: int) -> nn.Module:
    """A fresh network for ``data`` behind the dataset's normalisation, initialised from ``seed``, and
    followed by a :class:`~robustbench_lite.outputs.Logits` where its forward does not return logits."""
    torch.manual_seed(seed)
    network = builder.build(data.input_shape, data.num_classes)
    model = nn.Sequential(OrderedDict(normalize=Normalize(data.mean, data.std, data.input_shape), net=network))
    # One eval-mode forward shows the output's form; its random draws, if any, are not the run's,
    # and every submodule gets back the mode the builder left it in.
    modes = [(module, module.training) for module in model.modules()]
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        adapter = output_adapter(model.eval()(data.x_test[:2]), data.num_classes, builder.label)
    for module, training in modes:
        module.training = training
    if adapter is not None:
        model.add_module("logits", adapter)
    return model


def _model_for(builder: ModelBuilder, data: Dataset, seed: int, choice: DatasetChoice) -> nn.Module:
    """:func:`build_model`, its shape errors naming the dataset in use and how to change it."""
    try:
        return build_model(builder, data, seed)
    except OutputTypeError:
        raise
    except UsageError as error:
        raise shape_hint(error, builder, choice, data.name) from None


def _check_output_size(model: nn.Module, builder: ModelBuilder, data: Dataset) -> None:
    with torch.no_grad():
        outputs = model(data.x_test[:2])
    if outputs.shape != (min(2, len(data.x_test)), data.num_classes):
        raise UsageError(
            f"model {builder.label!r} outputs shape {tuple(outputs.shape[1:])} but dataset "
            f"{data.name!r} has {data.num_classes} classes"
        )


def training_recipe(recipe: Defense, registry: Registry) -> Defense:
    """The defense that trains ``recipe``'s model: itself, or the one its ``training_recipe`` names (followed)."""
    seen = [recipe.label]
    while recipe.training_recipe is not None:
        try:
            recipe = registry.create("defenses", recipe.training_recipe)
        except UsageError as error:
            raise UsageError(f"defense {seen[0]!r} trains as {recipe.training_recipe!r}: {error}") from None
        if recipe.label in seen:
            raise UsageError(f"defense {seen[0]!r}: training recipes form a cycle: {' -> '.join(seen + [recipe.label])}")
        seen.append(recipe.label)
    return recipe


def _check_preprocessing(recipe: Defense, data: Dataset) -> None:
    """Refuse, before any training, a preprocessing that cannot take this dataset's inputs."""
    if not recipe.preprocesses:
        return
    sample = data.x_test[:2]
    with torch.no_grad():
        out = recipe.preprocess(sample.clone())  # raises the defense's own UsageError for shapes it cannot take
    if out.shape != sample.shape:
        raise UsageError(
            f"defense {recipe.label!r} turned inputs of shape {tuple(sample.shape)} into {tuple(out.shape)}; "
            "preprocessing must keep the shape"
        )


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "benchmark"


def _provider(registry: Registry, kind: str, name: str) -> str:
    """Who provides a plugin, down to its code: results of an edited plugin are not reused."""
    info = registry.info(kind, name)
    return f"{info.provider}, code {info.code}"


def run(
    *,
    models: str | Iterable[str] = "mlp",
    defenses: str | Iterable[str] = "none,at-fgsm,at-pgd",
    attacks: str | Iterable[str] = "fgsm,pgd",
    eps: str | Iterable[float] | None = None,
    dataset: str | None = None,
    n_examples: int | None = None,
    epochs: int | None = None,
    batch_size: int = 128,
    train_eps: float | None = None,
    device: str = "auto",
    seed: int = 0,
    data_dir: str | Path = "data",
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    out: str | Path | None = None,
    name: str | None = None,
    progress: bool | str = False,
    command: str | None = None,
    target: str | int | None = None,
    eot: int = DEFAULT_EOT,
    lr_schedule: str = "none",
    early_stop: int | None = None,
    optimizer: str | None = None,
    db: str | Path | None = None,
    shard: str | None = None,
    deterministic: bool = False,
    executor: str = "local",
    acceleration: Acceleration | None = None,
    dry_run: bool = False,
    registry: Registry | None = None,
) -> pd.DataFrame:
    """Run the attack x defense x eps matrix and return one row per cell (see :class:`Cell`).

    Rows with attack ``"worst-case"`` hold the per-sample worst case over the attacks at each
    eps; eps = 0 rows hold clean accuracy. With ``target`` (a class name or index) every attack
    runs in targeted mode and ``target_success`` holds the targeted success rate in percent.
    A defense with inference-time preprocessing, or a model found to be random, also gets an
    adaptive row (defense label ``+bpda``, ``+eot`` or ``+bpda+eot``) whose attacks use BPDA
    and, against randomness, ``eot`` gradient samples per step; ``evaluation`` says which row is which.
    ``lr_schedule`` (``none``, ``cosine`` or ``step``) anneals the learning rate per epoch;
    ``early_stop`` K keeps the epoch with the best PGD-10 robust accuracy on the last 10% of the
    training set (then held out) and stops after K epochs without improvement. ``optimizer``
    (e.g. ``"sgd[lr=0.01,momentum=0.9]"``, see :mod:`robustbench_lite.optimizers`) replaces every
    model's own optimizer.
    ``df.attrs["metadata"]`` holds the run's metadata.
    With ``out`` set, the leaderboard is written to ``<out>/<name>.{csv,md,json}``.

    Every finished cell goes to the results store ``db`` (default ``<out>/results.db`` when
    ``out`` is set, none otherwise); cells already there are reused, not recomputed, unless
    ``use_cache`` is false. ``shard`` ``"i/n"`` runs only the i-th of n interleaved parts of the
    trained models (jobs), for job arrays whose stores ``rbl leaderboard --db ... --db ...`` merges.
    ``deterministic`` makes CUDA runs repeatable (see :func:`deterministic_mode`); CPU runs always are.
    ``executor`` ``"ray"`` runs each trained model's job (training, then its cells) as a Ray task
    (see :func:`_ray_jobs`); ``"local"`` runs them one after another in this process.
    ``acceleration`` sets the evaluation's batch size, precision, memory format and compilation
    (see :mod:`robustbench_lite.acceleration`).
    With ``dry_run`` nothing is trained, attacked or written: after every check the input gets, the
    returned (empty) frame's ``attrs["plan"]`` holds the matrix, what is cached or stored already and
    the estimated cost (a :class:`~robustbench_lite.estimate.RunPlan`); a run that shows progress
    prints the same plan first.
    """
    started = time.perf_counter()
    registry = registry or default_registry()
    builders: list[ModelBuilder] = _unique([registry.create("models", s) for s in _specs(models, "models")], "model")
    choice = choose_dataset(dataset, builders)
    loader: DatasetLoader = registry.create("datasets", choice.spec)
    recipes: list[Defense] = _unique([registry.create("defenses", s) for s in _specs(defenses, "defenses")], "defense")
    trainers = {recipe.label: training_recipe(recipe, registry) for recipe in recipes}
    if isinstance(eot, bool) or not isinstance(eot, int) or eot < 1:
        raise UsageError(f"--eot must be a positive number of gradient samples, got {eot!r}")
    if eot > MAX_EOT:
        raise UsageError(f"--eot must be at most {MAX_EOT} gradient samples, got {eot}")
    attack_specs = _specs(attacks, "attacks")
    threats: list[Attack] = _unique([registry.create("attacks", s) for s in attack_specs], "attack")
    untargetable = [attack.label for attack in threats if "target" not in attack.settings]
    if target is not None and untargetable:
        raise UsageError(f"--target needs attacks with a targeted mode; {', '.join(untargetable)} has none")
    grid = parse_eps(eps, loader.default_eps)
    if n_examples is not None and n_examples <= 0:
        raise UsageError(f"--n-examples must be a positive number of test points, got {n_examples}")
    config = training_config(loader, epochs, batch_size, train_eps, seed, lr_schedule, early_stop, optimizer)
    torch_device = resolve_device(device)
    out_dir = Path(out) if out is not None else None
    if out_dir is not None:
        ensure_writable(out_dir)
    shard_index, shard_count = parse_shard(shard)
    # Jobs are dealt to shards in turn, so that every shard gets a share of each model.
    all_jobs = _jobs(builders, recipes, trainers)
    jobs = all_jobs[shard_index - 1 :: shard_count]
    if not jobs:
        raise UsageError(f"--shard {shard_index}/{shard_count} gets no work: this run has only "
                         f"{len(all_jobs)} trained model(s) to share out; use fewer shards")
    if executor not in _EXECUTORS:
        raise UsageError(f"unknown executor {executor!r}; valid choices: {', '.join(_EXECUTORS)}")

    try:
        data = loader.load(Path(data_dir))
    except DatasetMissingError as missing:
        if not dry_run:
            raise
        data = stand_in(loader, missing)
    _check_validation_split(data, config)
    target_index = None if target is None else resolve_target(target, data.classes)
    if target_index is not None:
        threats = [registry.create("attacks", spec, target=target_index) for spec in attack_specs]
    for threat in threats:  # now that the inputs and the number of classes are known, before any training
        _check_attack_targets(threat, data)
        _check_attack_inputs(threat, data)
    n_test = len(data.x_test)
    if n_examples is not None and n_examples > n_test:
        warnings.warn(f"--n-examples {n_examples} exceeds the {n_test} test points; using all {n_test}", stacklevel=2)
    n_eval = min(n_examples or n_test, n_test)
    for builder in builders:  # refuse shape mismatches before anything is trained
        _check_output_size(_model_for(builder, data, seed, choice), builder, data)
    for recipe in recipes:
        _check_preprocessing(recipe, data)
    cache = _cache(cache_dir, use_cache)
    for folder in (out_dir, cache):
        if folder is not None:
            remove_stale_temporaries(folder)
    benchmark = _slug(name or data.name)
    if out_dir is not None:
        leaderboard.check_name(out_dir, benchmark)
    metadata_ = _metadata(
        benchmark, command, registry, loader, builders, recipes, threats, data, n_eval, grid, config, torch_device
    )
    metadata_["eps_source"] = "given" if eps is not None else f"the default of dataset {loader.name}"
    if target_index is not None:
        metadata_["target"] = {"index": target_index, "name": str(data.classes[target_index])}
    cells: list[Cell] = []
    trainings: dict[str, Any] = {}
    metadata_["training"] = trainings
    metadata_["executor"] = executor
    evaluations: dict[str, Any] = {}
    metadata_["evaluations"] = evaluations
    metadata_["eot"] = eot
    if shard_count > 1:
        metadata_["shard"] = {"index": shard_index, "count": shard_count}
    providers = {plugin.name: _provider(registry, kind, plugin.name)
                 for kind, plugins in (("models", builders), ("defenses", [*recipes, *trainers.values()]),
                                       ("attacks", threats)) for plugin in plugins}
    metadata_["deterministic"] = deterministic
    acceleration = acceleration or Acceleration()
    if acceleration.settings():
        metadata_["acceleration"] = acceleration.settings()
    if out_dir is not None:
        leaderboard.refuse_another_run(out_dir, benchmark, metadata_)
    store_path = Path(db) if db is not None else out_dir / "results.db" if out_dir is not None else None
    # Deterministic kernels change CUDA numbers, so such results are kept apart; on CPU they are the same.
    device_label = torch_device.type + ("-deterministic" if deterministic and torch_device.type == "cuda" else "")
    context = _JobContext(
        # The core's own copies of the test points: no plugin ever gets these tensors themselves.
        data, config, torch_device, cache, grid, data.x_test[:n_eval].clone(), data.y_test[:n_eval].clone(), target_index, eot,
        threats, store_path, use_cache, providers, device_label, deterministic, acceleration,
    )
    shown = resolve_mode(progress) != "none"
    plan = _plan(jobs, context, choice.describe(data.name), n_test) if dry_run or shown else None
    if dry_run:
        frame = _frame([])
        frame.attrs["plan"] = plan
        return frame
    if plan is not None and plan.too_long():
        warnings.warn(f"this run is estimated at {clock(plan.seconds)} on this CPU; --dry-run shows where the time "
                      "goes, --n-examples, --epochs or fewer defenses make it shorter", stacklevel=2)
    # Opened only now, so that bad input leaves no empty store behind.
    store = ResultsStore(store_path) if store_path is not None else None
    finished: dict[int, _JobResult] = {}
    metadata_["partial"] = _unfinished(jobs, finished)
    run_id = store.start_run(benchmark, metadata_) if store is not None else None
    with progress_display(progress) as bars:
        for line in plan.lines() if plan is not None else []:
            bars.console.print(line, markup=False, highlight=False)
        jobs_done = bars.add_task(JOBS_TASK, total=len(jobs))
        for index, result in _EXECUTORS[executor](jobs, context, bars):
            bars.advance(jobs_done)
            finished[index] = result
            metadata_["partial"] = _unfinished(jobs, finished)
            cells = [cell for _, done in sorted(finished.items()) for cell in done.cells]
            trainings.update(result.trainings)
            evaluations.update(result.evaluations)
            # Keep what is finished even if a later job crashes.
            if store is not None:
                store.update_run(run_id, metadata_, _records(cells), finished=False)
            # Rewritten only when the job changed something: a reused job leaves the same text; plots come at the end.
            if out_dir is not None and _changed_something(result):
                leaderboard.write(_frame(cells), metadata_, out_dir, benchmark, plots=False)
    del metadata_["partial"]  # every job is done
    frame = _frame(cells)
    metadata_["timings"] = {
        "total_seconds": round(time.perf_counter() - started, 3),  # this invocation, reused work excluded
        # What the numbers cost when first computed, reused cells and cached weights included:
        "cells_seconds": round(sum(cell.seconds for cell in cells), 3),
        "training_seconds": round(sum(entry.get("seconds", 0.0) for entry in trainings.values()
                                      if "trained_as" not in entry), 3),  # a shared model counts once
    }
    metadata_["work"] = {key: _total(done.work[key] for done in finished.values())
                         for key in ("cells_computed", "cells_reused", "forward_images", "backward_images")}
    if store is not None:
        metadata_["store"] = {"path": str(store.path), "run": run_id}
        store.update_run(run_id, metadata_, _records(cells), finished=True)
        store.checkpoint()
    frame.attrs["metadata"] = metadata_
    if out_dir is not None:
        frame.attrs["files"] = leaderboard.write(frame, metadata_, out_dir, benchmark)
    return frame


def _plan(jobs: list[_Job], context: _JobContext, dataset: str, n_test: int) -> RunPlan:
    """The matrix of ``jobs``, what the cache and the store hold of it, and the timed estimate of the rest."""
    store = (ResultsStore(context.store_path)
             if context.reuse and context.store_path is not None and context.store_path.exists() else None)
    planned = []
    devices = [context.device] if context.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # timing draws random numbers the run must not miss
        for job in jobs:
            planned.append(_job_plan(job, context, store))
    return RunPlan(dataset, len(context.x), n_test, context.grid, [attack.label for attack in context.threats],
                   context.device.type, planned, context.data.extra.get("stand_in"))


def _job_plan(job: _Job, context: _JobContext, store: ResultsStore | None) -> JobPlan:
    data, config, device = context.data, context.config, context.device
    cells = len(job.recipes) * len(context.threats) * len(context.grid)
    defenses = [recipe.label for recipe in job.recipes]
    if "stand_in" in data.extra:  # random data: no cached weights or stored cells are for it
        plan = JobPlan(job.builder.label, job.trainer.label, defenses, None, cells, None)
    else:
        model_key = cache_key(job.builder, job.trainer, data, config)
        cached = context.cache is not None and checkpoint_path(context.cache, model_key).exists()
        plan = JobPlan(job.builder.label, job.trainer.label, defenses, cached, cells,
                       _stored_cells(job, context, store, model_key))
    model = build_model(job.builder, data, config.seed).to(device)
    if not plan.cached:
        per_batch = training_batch_seconds(model, job.builder, job.trainer, data, config.batch_size,
                                           config.train_eps, device)
        plan.train_seconds = scaled(per_batch, batches_per_run(data, config))
    if plan.stored == cells:
        return plan
    batch = context.acceleration.eval_batch_size or config.batch_size
    x, y = context.x[:batch], context.y[:batch]
    batches = evaluation_batches(len(context.x), batch, context.grid, len(job.recipes))
    for attack in context.threats:
        per_batch = attack_batch_seconds(model, attack, x, y, context.grid[-1], device)
        plan.attack_seconds[attack.label] = scaled(per_batch, batches)
    return plan


def _stored_cells(job: _Job, context: _JobContext, store: ResultsStore | None, model_key: dict[str, Any]) -> int | None:
    """How many of the job's cells the store holds, where its rows are known before training (no
    preprocessing or randomness, whose adaptive rows follow from the trained model)."""
    if any(recipe.preprocesses or recipe.randomized for recipe in job.recipes):
        return None
    if store is None:
        return 0
    settings = _EvaluationSettings(
        context.grid, context.x, context.y, context.target, context.config, context.eot, progress_display(False),
        store, True, context.providers, context.device_label, context.acceleration, context.data.num_classes,
    )
    n, found = len(context.x), 0
    for recipe in job.recipes:
        row_key = _row_key(model_key, recipe, "standard", _naive_gradient(recipe), context.providers)
        clean = store.get(settings.result_key(row_key, None, 0.0, n), context.data.num_classes) is not None
        for attack in context.threats:
            found += clean
            for index, eps in enumerate(context.grid[1:], start=1):
                key = {**settings.result_key(row_key, attack, eps, n), "earlier_eps": context.grid[1:index]}
                found += store.get(key, context.data.num_classes) is not None
    return found


@dataclass
class _Job:
    """One model to train or load, and the defenses evaluated on it: its training recipe and the
    inference-time defenses built on that recipe, which share the trained weights."""

    builder: ModelBuilder
    trainer: Defense
    recipes: list[Defense]


@dataclass
class _JobContext:
    """What every job of a run needs; picklable, so that Ray workers receive it whole."""

    data: Dataset
    config: TrainingConfig
    device: torch.device
    cache: Path | None
    grid: list[float]
    x: torch.Tensor  # the evaluated test points, on the CPU
    y: torch.Tensor
    target: int | None
    eot: int
    threats: list[Attack]
    store_path: Path | None
    reuse: bool
    providers: dict[str, str]
    device_label: str
    deterministic: bool
    acceleration: Acceleration


@dataclass
class _JobResult:
    cells: list[Cell]
    trainings: dict[str, Any]
    evaluations: dict[str, Any]
    work: dict[str, int]  # cells computed and reused, model passes (see _EvaluationSettings)


def _jobs(builders: list[ModelBuilder], recipes: list[Defense], trainers: dict[str, Defense]) -> list[_Job]:
    """One job per (model, training recipe), in the order the user listed them."""
    jobs: dict[tuple[int, str], _Job] = {}
    for builder_index, builder in enumerate(builders):
        for recipe in recipes:
            trainer = trainers[recipe.label]
            jobs.setdefault((builder_index, trainer.label), _Job(builder, trainer, [])).recipes.append(recipe)
    return list(jobs.values())


def _run_job(job: _Job, context: _JobContext, bars: Display) -> _JobResult:
    """Train or load the job's model, then evaluate every defense on it. A failure fails only its own cells."""
    store = ResultsStore(context.store_path) if context.store_path is not None else None
    settings = _EvaluationSettings(
        context.grid, context.x.to(context.device), context.y.to(context.device), context.target, context.config,
        context.eot, bars, store, context.reuse, context.providers, context.device_label, context.acceleration,
        context.data.num_classes,
    )
    labels = [attack.label for attack in context.threats]
    cells: list[Cell] = []
    trainings: dict[str, Any] = {}
    evaluations: dict[str, Any] = {}
    with deterministic_mode(context.deterministic), device_tuning(context.device, context.deterministic):
        try:
            model, record = _train_with_progress(
                job.builder, job.trainer, context.data, context.config, context.device, context.cache, bars
            )
        except Exception as error:  # a failing defense or model fails only its own cells
            message = f"training failed: {type(error).__name__}: {error}"
            for recipe in job.recipes:
                bars.console.print(f"[red]{job.builder.label}/{recipe.label}: {message}[/red]")
                cells += _failed_group(job.builder.label, recipe.label, labels, context.grid, len(context.x), message)
                trainings[f"{job.builder.label}/{recipe.label}"] = {"status": "failed", "error": message}
            return _JobResult(cells, trainings, evaluations, settings.work())
        config = context.config
        model = context.acceleration.apply(model)
        for recipe in job.recipes:
            trainings[f"{job.builder.label}/{recipe.label}"] = {
                "status": "ok", "seconds": round(record.seconds, 3), "from_cache": record.from_cache,
                "train_eps": record.key["train_eps"],  # the defense's own budget where it has one
                "epoch_losses": record.epoch_losses,
                **({"epoch_lrs": record.epoch_lrs} if config.lr_schedule != "none" else {}),
                **({"val_robust_accuracy": record.val_robust_accuracy, "best_epoch": record.best_epoch}
                   if config.early_stop is not None else {}),
                **({"trained_as": job.trainer.label} if job.trainer is not recipe else {}),
                "optimizer": record.optimizer or config.optimizer or "the model's own (not recorded by older versions)",
            }
            cells += _evaluate_defense(model, record.key, job.builder, recipe, context.threats, settings, evaluations)
    return _JobResult(cells, trainings, evaluations, settings.work())


def _changed_something(result: _JobResult) -> bool:
    """Whether a job did more than reuse stored cells and cached weights: trained, computed or failed something."""
    return bool(result.work["cells_computed"]) or any(cell.status != "ok" for cell in result.cells) or any(
        not entry.get("from_cache") for entry in result.trainings.values())


def _unfinished(jobs: list[_Job], finished: dict[int, _JobResult]) -> dict[str, Any]:
    """While jobs are outstanding, what the leaderboard lacks: it is marked partial until every job is done."""
    missing = [f"{job.builder.label}/{recipe.label}"
               for index, job in enumerate(jobs) if index not in finished for recipe in job.recipes]
    return {"jobs_finished": len(finished), "jobs": len(jobs), "missing": missing}


def _local_jobs(jobs: list[_Job], context: _JobContext, bars: Display) -> Iterator[tuple[int, _JobResult]]:
    for index, job in enumerate(jobs):
        yield index, _run_job(job, context, bars)


def _job_in_ray_worker(job: _Job, context: _JobContext) -> _JobResult:
    return _run_job(job, context, progress_display(False))


def _ray_jobs(jobs: list[_Job], context: _JobContext, bars: Display) -> Iterator[tuple[int, _JobResult]]:
    """Each job as a Ray task (one GPU each on CUDA), results yielded as they finish.

    Connects to the cluster that ``RAY_ADDRESS`` (or ``ray start``) names, else starts a local one.
    Workers write their cells to the same results store, so an interrupted run resumes as usual.
    """
    try:
        import ray
    except ImportError:
        raise UsageError("--executor ray needs Ray: pip install 'robustbench-lite[ray]'") from None
    if not ray.is_initialized():
        ray.init(include_dashboard=False, logging_level="warning", log_to_driver=False)
    task = ray.remote(num_cpus=1, num_gpus=1 if context.device.type == "cuda" else 0)(_job_in_ray_worker)
    shared = ray.put(context)  # the dataset travels to the object store once, not once per job
    pending = {task.remote(job, shared): index for index, job in enumerate(jobs)}
    try:
        while pending:
            [done], _ = ray.wait(list(pending), num_returns=1)
            yield pending.pop(done), ray.get(done)
    finally:
        for ref in pending:  # interrupted: stop what is still running
            ray.cancel(ref, force=True)


_EXECUTORS = {"local": _local_jobs, "ray": _ray_jobs}
assert tuple(_EXECUTORS) == EXECUTORS, "choices.EXECUTORS names every executor"


@contextmanager
def deterministic_mode(enabled: bool = True) -> Iterator[None]:
    """Within the block, every kernel is deterministic, or raises if it has no deterministic version.

    CPU kernels already are (same command and seed give identical numbers); on CUDA this turns off
    cuDNN autotuning and atomics-based kernels, at some cost in speed. The previous settings come back afterwards.
    """
    if not enabled:
        yield
        return
    previous = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
                os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"  # cuBLAS's requirement for reproducible matmuls
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.backends.cudnn.benchmark = previous[1]
        if previous[2] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = previous[2]


def _total(values: Iterable[int | None]) -> int | None:
    """The sum, or None where any value is unknown."""
    values = list(values)
    return None if None in values else sum(values)


def parse_shard(shard: str | None) -> tuple[int, int]:
    """``"i/n"`` (1 <= i <= n) as (i, n); no shard is (1, 1)."""
    if shard is None:
        return 1, 1
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(shard))
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise UsageError(f"invalid shard {shard!r}: give i/n with 1 <= i <= n, e.g. 2/4")
    return int(match[1]), int(match[2])


def cells_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Leaderboard rows stored as records (the store, a JSON sidecar) as the frame :func:`run` returns."""
    frame = pd.DataFrame(records, columns=list(Cell.__dataclass_fields__))
    for column in ("eps", "accuracy", "seconds", "target_success"):
        frame[column] = pd.to_numeric(frame[column]).astype(float)
    return _counts_as_integers(frame)


def training_config(
    loader: DatasetLoader,
    epochs: int | None,
    batch_size: int,
    train_eps: float | None,
    seed: int,
    lr_schedule: str = "none",
    early_stop: int | None = None,
    optimizer: str | None = None,
) -> TrainingConfig:
    """Validated training settings, with the dataset's defaults where none are given."""
    for flag, value in (("--epochs", epochs), ("--batch-size", batch_size)):
        if value is not None and value <= 0:
            raise UsageError(f"{flag} must be positive, got {value}")
    if epochs is not None and epochs > MAX_EPOCHS:
        raise UsageError(f"--epochs must be at most {MAX_EPOCHS}, got {epochs}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise UsageError(f"--seed {seed_range()}, got {seed!r}")
    if train_eps is not None and not (math.isfinite(train_eps) and 0.0 <= train_eps <= 1.0):
        raise UsageError(f"--train-eps must lie in [0, 1], got {train_eps}")
    if lr_schedule not in LR_SCHEDULES:
        raise UsageError(f"unknown --lr-schedule {lr_schedule!r}; valid choices: {', '.join(LR_SCHEDULES)}")
    if early_stop is not None and (isinstance(early_stop, bool) or not isinstance(early_stop, int) or early_stop < 1):
        raise UsageError(f"--early-stop must be a positive number of epochs, got {early_stop!r}")
    if early_stop is not None and early_stop > MAX_EPOCHS:
        raise UsageError(f"--early-stop must be at most {MAX_EPOCHS} epochs, got {early_stop}")
    return TrainingConfig(
        epochs=epochs or loader.default_epochs,
        batch_size=batch_size,
        train_eps=loader.default_train_eps if train_eps is None else train_eps,
        seed=seed,
        lr_schedule=lr_schedule,
        early_stop=early_stop,
        optimizer=None if optimizer is None else canonical_optimizer(optimizer),
    )


def _check_validation_split(data: Dataset, config: TrainingConfig) -> None:
    """Refuse early stopping where holding out 10% would leave no validation or no training point."""
    train_part, validation = split_validation(data, config)
    if validation is not None and (not len(validation.x_train) or not len(train_part.x_train)):
        raise UsageError(
            f"--early-stop needs a validation split, but 10% of the {len(data.x_train)} training points is none"
        )


def _cache(cache_dir: str | Path | None, use_cache: bool) -> Path | None:
    """The weights cache folder (None without caching), refused before any training unless it can be written."""
    if not use_cache:
        return None
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    existing = nearest_existing(cache)  # probed without creating it, so bad input leaves no folder behind
    if not existing.is_dir():
        raise UsageError(f"cache folder {str(cache)!r} is not writable: {str(existing)!r} is a regular file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise UsageError(f"cache folder {str(cache)!r} is not writable: {error.strerror or error}") from None
    return cache


def _train_with_progress(
    builder: ModelBuilder,
    recipe: Defense,
    data: Dataset,
    config: TrainingConfig,
    device: torch.device,
    cache: Path | None,
    bars: Display,
) -> tuple[nn.Module, TrainingRecord]:
    """A model for (builder, recipe) on ``data``: cached weights when they exist, else trained now (on copies
    of the dataset's tensors, see :func:`~robustbench_lite.training.load_or_train`)."""
    model = build_model(builder, data, config.seed).to(device)
    task = bars.add_task(f"train {builder.label}/{recipe.label}", total=batches_per_run(data, config), unit="batches")
    try:
        record = load_or_train(
            model, builder, recipe, data, config, device, cache, advance=lambda k: bars.advance(task, k)
        )
    finally:
        bars.remove_task(task)
    model.eval()
    model.requires_grad_(False)  # from here on only input gradients are needed
    return model, record


def trained_model(
    *,
    model: str = "cnn",
    defense: str = "none",
    dataset: str | None = None,
    epochs: int | None = None,
    batch_size: int = 128,
    train_eps: float | None = None,
    device: str = "auto",
    seed: int = 0,
    data_dir: str | Path = "data",
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    progress: bool = False,
    lr_schedule: str = "none",
    early_stop: int | None = None,
    optimizer: str | None = None,
    registry: Registry | None = None,
) -> tuple[nn.Module, Dataset]:
    """The model ``rbl run`` would evaluate for these settings (same cache), in eval mode, and its dataset.

    For an inference-time defense that is the trained model behind the defense's preprocessing,
    as the naive evaluation attacks it (zero input gradient through non-differentiable preprocessing).
    ``lr_schedule``, ``early_stop`` and ``optimizer`` as in :func:`run`.
    """
    registry = registry or default_registry()
    builder: ModelBuilder = registry.create("models", model)
    choice = choose_dataset(dataset, [builder])
    loader: DatasetLoader = registry.create("datasets", choice.spec)
    recipe: Defense = registry.create("defenses", defense)
    trainer = training_recipe(recipe, registry)
    config = training_config(loader, epochs, batch_size, train_eps, seed, lr_schedule, early_stop, optimizer)
    torch_device = resolve_device(device)
    data = loader.load(Path(data_dir))
    _check_validation_split(data, config)
    _check_output_size(_model_for(builder, data, seed, choice), builder, data)
    _check_preprocessing(recipe, data)
    with progress_display(progress) as bars:
        network, _ = _train_with_progress(builder, trainer, data, config, torch_device, _cache(cache_dir, use_cache), bars)
    return defended(network, recipe, _naive_gradient(recipe)), data


@dataclass
class _EvaluationSettings:
    """What every evaluated row of a run shares."""

    grid: list[float]
    x: torch.Tensor
    y: torch.Tensor
    target: int | None
    config: TrainingConfig
    eot: int
    bars: Display
    store: ResultsStore | None
    reuse: bool  # whether results found in the store are reused
    providers: dict[str, str]  # plugin name -> the distribution (and version) that provides it
    device: str
    acceleration: Acceleration
    num_classes: int  # stored predictions outside 0..num_classes-1 are damaged, never reused
    computed: int = 0
    reused: int = 0
    # Model passes of every result used, reused ones included; None once a result stored before
    # passes were counted is among them, since a total of unknowns is unknown.
    forward_images: int | None = 0
    backward_images: int | None = 0
    # Fingerprints of the first n evaluated points, by n: hashing the test set once, not once per cell.
    fingerprints: dict[int, str] = field(default_factory=dict)

    def work(self) -> dict[str, int | None]:
        return {"cells_computed": self.computed, "cells_reused": self.reused,
                "forward_images": self.forward_images, "backward_images": self.backward_images}

    def result_key(self, row_key: dict[str, Any], attack: Attack | None, eps: float, n: int) -> dict[str, Any]:
        """Everything that determines the predictions of ``attack`` (None: clean) at ``eps`` on the first ``n`` points."""
        return {
            **row_key,
            "attack": None if attack is None else {"name": attack.name, "options": attack.settings,
                                                   "provider": self.providers.get(attack.name)},
            "eps": float(eps),
            "n": n,
            "test_points": self._fingerprint(n),
            "device": self.device,
            "torch": torch.__version__,
            # only where set, so that results computed with the defaults keep their keys
            **({"acceleration": self.acceleration.settings()} if self.acceleration.settings() else {}),
        }

    @property
    def batch_size(self) -> int:
        return self.acceleration.eval_batch_size or self.config.batch_size

    def _fingerprint(self, n: int) -> str:
        if n not in self.fingerprints:
            self.fingerprints[n] = digest(self.x[:n], self.y[:n])
        return self.fingerprints[n]

    def clean(self, row_key: dict[str, Any], model: nn.Module, n: int) -> _Outcome:
        """The clean predictions of ``model`` on the first ``n`` points."""

        def compute(counted: nn.Module) -> torch.Tensor:
            torch.manual_seed(self.config.seed)  # a random model's clean predictions, too, are independent of the order
            return predict(counted, self.x[:n], self.batch_size)

        return self.predictions(self.result_key(row_key, None, 0.0, n), model, compute, "the clean evaluation")

    def attacked(
        self, row_key: dict[str, Any], model: nn.Module, attack: Attack, eps: float, clean: torch.Tensor,
        advance: Callable[[int], None], carried: _Carried | None = None,
    ) -> _Outcome:
        """The predictions of ``model`` under ``attack`` at ``eps`` on the first ``len(clean)`` points.

        ``carried`` holds the attack's results at the smaller eps of the grid: the points where it
        already reached its goal keep that result (their example lies in this larger ball too) and
        only the others are attacked. Each point draws its own random numbers (``sample_streams``),
        so a point attacked gets the result it would get were every point attacked.
        """
        n = len(clean)
        carried = carried or _Carried([], clean)
        candidates = self.candidates(clean, carried)

        def compute(counted: nn.Module) -> torch.Tensor:
            torch.manual_seed(self.config.seed)  # attacks drawing from the global generator: independent of the order
            return adversarial_predictions(
                counted, attack, self.x[:n], self.y[:n], eps, carried.predictions, self.batch_size,
                advance=advance, candidates=candidates, seed=self.config.seed,
            )

        key = self.result_key(row_key, attack, eps, n)
        return self.predictions({**key, "earlier_eps": carried.eps}, model, compute, f"attack {attack.label!r}")

    def candidates(self, clean: torch.Tensor, carried: _Carried) -> torch.Tensor:
        """The points to attack: clean-correct ones where the attack has not yet reached its goal, the
        target class (targeted runs) or any wrong class."""
        y = self.y[: len(clean)]
        reached = carried.predictions == self.target if self.target is not None else carried.predictions != y
        return (clean == y) & ~reached

    def predictions(
        self, key: dict[str, Any], model: nn.Module, compute: Callable[[nn.Module], torch.Tensor], what: str
    ) -> _Outcome:
        """``compute(model)``'s predictions, with its seconds and the model passes it took (counted
        through a :class:`PassCounter`), taken from the store when it holds them.

        A computation that changed the model (``what`` names it) fails, is undone and is never stored."""
        if self.store is not None and self.reuse:
            found = self.store.get(key, self.num_classes)
            if found is not None:
                self.reused += 1
                return self._tally(_Outcome(found.predictions.to(self.y.device), found.seconds,
                                            found.forward_images, found.backward_images, found.notes))
        counted = PassCounter(model)
        start = time.perf_counter()
        try:
            with model_unchanged(model, what), attack_warnings() as notes:
                predicted = compute(counted)
        except Exception as error:
            if self.store is not None:
                self.store.put_failure(key, key["n"], time.perf_counter() - start, f"{type(error).__name__}: {error}")
            raise
        outcome = _Outcome(predicted, time.perf_counter() - start, counted.forward_images, counted.backward_images,
                           notes)
        self.computed += 1
        if self.store is not None:
            self.store.put(key, predicted, outcome.seconds, outcome.forward_images, outcome.backward_images, notes)
        return self._tally(outcome)

    def _tally(self, outcome: _Outcome) -> _Outcome:
        if outcome.forward_images is None or self.forward_images is None:
            self.forward_images = self.backward_images = None
        else:
            self.forward_images += outcome.forward_images
            self.backward_images += outcome.backward_images
        return outcome


@dataclass
class _Outcome:
    """Predictions of one computation, what it cost, and what its attack warned about it."""

    predictions: torch.Tensor
    seconds: float
    forward_images: int | None  # None: stored before passes were counted
    backward_images: int | None
    notes: dict[str, int] = field(default_factory=dict)  # AttackWarning message -> points concerned

    def counts(self, cell: Cell) -> Cell:
        """``cell`` with this outcome's pass counts and warnings."""
        cell.forward_images, cell.backward_images = self.forward_images, self.backward_images
        cell.notes = "; ".join(f"{message} ({points} point{'s' * (points != 1)})" if points else message
                               for message, points in self.notes.items())
        return cell


@dataclass
class _Carried:
    """One attack's results at the smaller eps of the grid: the eps computed, and per point the
    prediction at the first of them where the attack reached its goal (else the latest one)."""

    eps: list[float]
    predictions: torch.Tensor


@dataclass
class _Row:
    """One evaluated row: a (model, defense) attacked in one way."""

    defense: str
    evaluation: str  # standard, naive or adaptive
    model: nn.Module
    threats: list[tuple[str, Attack]]  # (the label of the attack as the user gave it, the attack run)
    gradient: str = "exact"
    details: dict[str, Any] = field(default_factory=dict)


def _naive_gradient(recipe: Defense) -> str:
    return "exact" if recipe.differentiable else "zero"


def _with_eot(attack: Attack, samples: int) -> Attack:
    """``attack`` averaging at least ``samples`` gradients per step, where it has an ``eot`` option."""
    if "eot" not in attack.settings or attack.settings["eot"] >= samples:
        return attack
    return type(attack)(**{**attack.settings, "eot": samples})


def _eot_of(threats: list[tuple[str, Attack]]) -> int:
    return max([attack.settings.get("eot", 1) for _, attack in threats], default=1)


def _is_randomized(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether two forward passes on the same inputs differ (beyond float noise)."""
    try:
        with torch.no_grad():
            first, second = model(x), model(x)
    except Exception:  # the clean evaluation reports what is wrong with the model
        return False
    # equal_nan: a model with NaN outputs is broken, not random; its cells fail on the NaN instead.
    return not torch.allclose(first, second, rtol=1e-4, atol=1e-5, equal_nan=True)


def _rows(model: nn.Module, recipe: Defense, threats: list[Attack], settings: _EvaluationSettings) -> list[_Row]:
    """The naive row of (model, recipe), plus the adaptive one where BPDA or EOT changes what attacks see."""
    naive = defended(model, recipe, _naive_gradient(recipe))
    torch.manual_seed(settings.config.seed)
    detected = _is_randomized(naive, settings.x[:RANDOMNESS_POINTS].clone())
    randomized = recipe.randomized or detected
    bpda = recipe.preprocesses and not recipe.differentiable
    details = {"randomized": randomized, "randomized_declared": recipe.randomized, "randomized_detected": detected}
    labelled = [(attack.label, attack) for attack in threats]
    if not (bpda or randomized):  # attacks already see the exact gradient of a deterministic model
        evaluation = "adaptive" if recipe.preprocesses else "standard"
        return [_Row(recipe.label, evaluation, naive, labelled, _naive_gradient(recipe), details)]
    suffix = ("+bpda" if bpda else "") + ("+eot" if randomized else "")
    adaptive_threats = [(label, _with_eot(attack, settings.eot) if randomized else attack) for label, attack in labelled]
    return [
        _Row(recipe.label, "naive", naive, labelled, _naive_gradient(recipe),
             {**details, "adaptive_row": recipe.label + suffix}),
        _Row(recipe.label + suffix, "adaptive", defended(model, recipe, "identity" if bpda else "exact"),
             adaptive_threats, "identity" if bpda else "exact", {**details, "naive_row": recipe.label}),
    ]


def _row_key(model_key: dict[str, Any], recipe: Defense, evaluation: str, gradient: str,
             providers: dict[str, str]) -> dict[str, Any]:
    """What identifies a row's results besides the attack: the trained model, the defense, how it is attacked."""
    return {
        "model": model_key,
        "defense": {"name": recipe.name, "options": recipe.settings, "provider": providers.get(recipe.name)},
        "evaluation": evaluation, "gradient": gradient,
    }


def _evaluate_defense(
    model: nn.Module,
    model_key: dict[str, Any],
    builder: ModelBuilder,
    recipe: Defense,
    threats: list[Attack],
    settings: _EvaluationSettings,
    evaluations: dict[str, Any],
) -> list[Cell]:
    """Every row of (model, recipe): its cells, and its evaluation details and sanity probe in ``evaluations``.

    ``model_key`` is the trained model's cache key, which with the row's evaluation identifies its results.
    """
    cells: list[Cell] = []
    for row in _rows(model, recipe, threats, settings):
        row_key = _row_key(model_key, recipe, row.evaluation, row.gradient, settings.providers)
        row_cells, clean = _evaluate_group(row, row_key, builder, settings)
        cells += row_cells
        evaluations[f"{builder.label}/{row.defense}"] = {
            "defense": recipe.label, "evaluation": row.evaluation, "gradient": row.gradient,
            "eot": _eot_of(row.threats), **row.details,
            "large_eps_probe": _large_eps_probe(row, row_key, builder, settings),
            **({} if clean is None else _degeneracy_probes(row, clean, settings)),
        }
    return cells


def _degeneracy_probes(row: _Row, clean: torch.Tensor, settings: _EvaluationSettings) -> dict[str, Any]:
    """What the sanity checks need to spot a degenerate model (see :mod:`robustbench_lite.probes`)."""
    found: dict[str, Any] = {"clean_classes": probes.class_shares(clean, settings.y[: len(clean)])}
    torch.manual_seed(settings.config.seed)  # a random model's probe, too, repeats
    try:
        with model_unchanged(row.model, "the model probe"):
            # no larger a batch than the run's: a batch size lowered to fit a device must hold here too
            points = min(probes.PROBE_POINTS, settings.batch_size)
            found["model_probe"] = probes.model_probe(row.model, settings.x[:points], settings.y[:points], row.gradient)
    except Exception as error:  # the cells are scored all the same; the sidecar says why this probe is missing
        found["model_probe_error"] = f"{type(error).__name__}: {error}"
    return found


def _evaluate_group(
    row: _Row, row_key: dict[str, Any], builder: ModelBuilder, settings: _EvaluationSettings
) -> tuple[list[Cell], torch.Tensor | None]:
    """The row's cells, and its clean predictions (None where the clean evaluation failed)."""
    x, y, grid, bars = settings.x, settings.y, settings.grid, settings.bars
    fields = {"model": builder.label, "defense": row.defense, "n": len(x), "evaluation": row.evaluation}
    labels = [label for label, _ in row.threats]

    try:
        clean_outcome = settings.clean(row_key, row.model, len(x))
    except DiskFullError:  # nothing more can be stored: the run stops, keeping what is
        raise
    except Exception as error:
        message = f"clean evaluation failed: {type(error).__name__}: {error}"
        return _failed_group(builder.label, row.defense, labels, grid, len(x), message, row.evaluation), None
    clean = clean_outcome.predictions
    score = _Scorer(fields, y, clean, settings.target)
    outcomes: dict[str, dict[float, torch.Tensor]] = {}
    cells = []
    for label, attack in row.threats:
        outcomes[label] = {0.0: clean}
        cells.append(clean_outcome.counts(score(label, 0.0, [clean], clean_outcome.seconds)))
        carried = _Carried([], clean)
        for eps in grid[1:]:
            where = f"{label} on {builder.label}/{row.defense} eps={eps:g}"
            task = bars.add_task(where, total=int(settings.candidates(clean, carried).sum()), unit="points")
            start = time.perf_counter()
            try:
                outcome = settings.attacked(
                    row_key, row.model, attack, eps, clean, lambda k: bars.advance(task, k), carried
                )
            except DiskFullError:
                raise
            except Exception as error:  # a failing attack fails only its own cell
                message = f"{type(error).__name__}: {error}"
                bars.console.print(f"[red]{where} failed: {message}[/red]")
                cells.append(Cell(**fields, attack=label, eps=eps, accuracy=None, correct=None,
                                  seconds=time.perf_counter() - start, status="failed", error=message))
                continue
            finally:
                bars.remove_task(task)
            outcomes[label][eps] = outcome.predictions
            carried = _Carried(carried.eps + [eps], outcome.predictions)
            cells.append(outcome.counts(score(label, eps, [outcome.predictions], outcome.seconds)))
    for eps in grid:
        missing = [label for label, per_eps in outcomes.items() if eps not in per_eps]
        if missing:  # a minimum over fewer attacks is no robustness number: none is given
            cells.append(Cell(**fields, attack=WORST_CASE, eps=eps, accuracy=None, correct=None, seconds=0.0,
                              status="incomplete", error=f"not computed: attack(s) {', '.join(missing)} failed"))
            continue
        cells.append(score(WORST_CASE, eps, [per_eps[eps] for per_eps in outcomes.values()], 0.0))
    return cells, clean


def _large_eps_probe(
    row: _Row, row_key: dict[str, Any], builder: ModelBuilder, settings: _EvaluationSettings
) -> dict[str, Any] | None:
    """Robust accuracy (%) of each l-inf attack at eps = SANITY_EPS on the first SANITY_POINTS test points.

    At that budget the all-0.5 image lies in the ball of every input in [0, 1], so no classifier
    can stay above the share of its most frequent class: an attack that leaves much more is
    failing (gradient masking). Not run where the grid already reaches that eps, nor for targeted runs.
    """
    linf = [(label, attack) for label, attack in row.threats if attack.norm == "linf"]
    if settings.target is not None or not linf or max(settings.grid) >= SANITY_EPS:
        return None
    y = settings.y[:SANITY_POINTS]
    try:
        clean = settings.clean(row_key, row.model, len(y)).predictions
    except DiskFullError:  # stops the run, as in _evaluate_group
        raise
    except Exception:  # the cells already record why this model cannot be evaluated
        return None
    robust = clean == y
    accuracy: dict[str, float | None] = {}
    errors: dict[str, str] = {}
    task = settings.bars.add_task(f"sanity probe on {builder.label}/{row.defense} eps={SANITY_EPS:g}",
                                  total=len(linf) * int(robust.sum()), unit="points")
    try:
        for label, attack in linf:
            try:
                predicted = settings.attacked(
                    row_key, row.model, attack, SANITY_EPS, clean, lambda k: settings.bars.advance(task, k)
                ).predictions
            except DiskFullError:  # stops the run, as in _evaluate_group
                raise
            except Exception as error:
                accuracy[label], errors[label] = None, f"{type(error).__name__}: {error}"
                continue
            hit = clean.eq(y) & predicted.eq(y)
            accuracy[label] = round(100.0 * int(hit.sum()) / len(y), 2)
            robust &= predicted == y
    finally:
        settings.bars.remove_task(task)
    if len(errors) < len(linf):
        accuracy[WORST_CASE] = round(100.0 * int(robust.sum()) / len(y), 2)
    return {"eps": SANITY_EPS, "n": len(y), "accuracy": accuracy, **({"errors": errors} if errors else {})}


class _Scorer:
    """Scores the predictions of one or more attacks (several: their per-sample worst case).

    A point is robust when the clean and every attacked prediction are correct. In targeted mode
    the success rate counts, among the clean-correct points of another class than the target,
    those that some attack moved to the target.
    """

    def __init__(self, row: dict[str, Any], y: torch.Tensor, clean: torch.Tensor, target: int | None) -> None:
        self.row, self.y, self.target = row, y, target
        self.clean_correct = clean == y
        self.targetable = self.clean_correct & (y != target) if target is not None else None

    def __call__(self, attack: str, eps: float, predictions: list[torch.Tensor], seconds: float) -> Cell:
        robust = self.clean_correct.clone()
        for predicted in predictions:
            robust &= predicted == self.y
        count = int(robust.sum())
        success = None
        if self.targetable is not None and int(self.targetable.sum()):
            hit = torch.zeros_like(robust)
            for predicted in predictions:
                hit |= predicted == self.target
            success = 100.0 * int((hit & self.targetable).sum()) / int(self.targetable.sum())
        return Cell(**self.row, attack=attack, eps=eps, accuracy=100.0 * count / len(robust), correct=count,
                    seconds=round(seconds, 4), status="ok", target_success=success)


def _failed_group(
    model: str, defense: str, labels: list[str], grid: list[float], n: int, message: str, evaluation: str = "standard"
) -> list[Cell]:
    return [
        Cell(model, defense, label, eps, None, None, n, 0.0, "failed", message, evaluation=evaluation)
        for label in labels + [WORST_CASE]
        for eps in grid
    ]


def _frame(cells: list[Cell]) -> pd.DataFrame:
    return _counts_as_integers(pd.DataFrame(_records(cells), columns=list(Cell.__dataclass_fields__)))


def _counts_as_integers(frame: pd.DataFrame) -> pd.DataFrame:
    """Pass counts as whole numbers or None (pandas would make a column with gaps float)."""
    for column in ("forward_images", "backward_images"):
        frame[column] = pd.Series([None if pd.isna(value) else int(value) for value in frame[column]],
                                  index=frame.index, dtype=object)
    return frame


def _records(cells: list[Cell]) -> list[dict[str, Any]]:
    return [vars(cell) for cell in cells]


def cpu_name() -> str:
    """The CPU's model name where the OS tells it (Linux), else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _metadata(
    benchmark: str,
    command: str | None,
    registry: Registry,
    loader: DatasetLoader,
    builders: list[ModelBuilder],
    recipes: list[Defense],
    threats: list[Attack],
    data: Dataset,
    n_eval: int,
    grid: list[float],
    config: TrainingConfig,
    device: torch.device,
) -> dict[str, Any]:
    plugins = {
        kind: {plugin.label: _provider(registry, kind, plugin.name) for plugin in plugins}
        for kind, plugins in (("datasets", [loader]), ("models", builders), ("defenses", recipes), ("attacks", threats))
    }
    return {
        "benchmark": benchmark,
        "command": command,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": {
            "robustbench_lite": metadata.version("robustbench-lite"),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchvision": metadata.version("torchvision"),
        },
        "plugins": plugins,
        "attacks": {attack.label: {"family": attack.family, "norm": attack.norm,
                                   "options": {key: format_value(value) for key, value in attack.settings.items()}}
                    for attack in threats},
        "device": {
            "type": device.type,
            "name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
            "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "platform": platform.platform(),
        },
        "seed": config.seed,
        "dataset": {
            "name": data.name, "source": data.source, "n_train": len(data.x_train), "n_test": len(data.x_test),
            "n_examples": n_eval, "input_shape": list(data.input_shape), "classes": list(data.classes),
        },
        "eps": grid,
        "training_config": {
            "epochs": config.epochs, "batch_size": config.batch_size, "train_eps": config.train_eps,
            # the newer options only where set, so default sidecars are unchanged
            **({"lr_schedule": config.lr_schedule} if config.lr_schedule != "none" else {}),
            **({"early_stop": config.early_stop} if config.early_stop is not None else {}),
            **({"optimizer": config.optimizer} if config.optimizer is not None else {}),
        },
        "protocol": "robust = correct on the clean input and on the attacked input; eps = 0 is clean accuracy; "
        "a point an attack broke at a smaller eps of the grid stays broken (its example lies in the larger ball) "
        "and is not attacked again; random starts are drawn per point, independent of the batch; "
        "worst-case = per-sample minimum over the attacks; R&G = sum over the eps grid of the accuracies in %",
    }
