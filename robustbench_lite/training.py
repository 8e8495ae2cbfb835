"""The training loop every defense shares, and the cache of trained weights.

A defense only supplies the per-batch loss; epochs, shuffling, the optimizer (chosen by the
model) and progress reporting live here, once. Trained weights are cached under a key of
everything that determines them, so the next run with the same settings loads them instead.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .atomic import atomic_target
from .errors import RblError
from .interfaces import Dataset, Defense, ModelBuilder, TrainingContext, digest
from .optimizers import build_optimizer, describe_optimizer
from .plugin_code import code_digest

ProgressCallback = Callable[[int], None]

STEP_GAMMA = 0.1  # the "step" schedule multiplies the lr by this after 50% and again after 75% of the epochs
VALIDATION_SHARE = 0.1  # early stopping holds out the last 10% of the training set
VALIDATION_PGD_STEPS = 10
SUMMARY_CHARS = 160  # longest error text quoted in the one-line warning about an unusable checkpoint
DIGEST = "sha256"  # the checkpoint entry holding the digest of everything else saved in it


class TrainingDivergedError(RblError):
    """The training loss became NaN or infinite."""


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int
    batch_size: int
    train_eps: float
    seed: int
    lr_schedule: str = "none"  # one of LR_SCHEDULES, stepped once per epoch
    early_stop: int | None = None  # patience in epochs; None: no validation split, train every epoch
    optimizer: str | None = None  # a canonical optimizer spec imposed on every model; None: each model's own


@dataclass
class TrainingHistory:
    """What :func:`train` reports besides the trained weights."""

    epoch_losses: list[float] = field(default_factory=list)
    epoch_lrs: list[float] = field(default_factory=list)  # the lr each epoch trained with
    val_robust_accuracy: list[float] = field(default_factory=list)  # % per epoch, early stopping only
    best_epoch: int | None = None  # 1-based epoch whose weights were kept, early stopping only
    optimizer: str = ""  # what it trained with, e.g. adam[lr=0.001,...]; "" in checkpoints of older versions


@dataclass(kw_only=True)
class TrainingRecord(TrainingHistory):
    """What a training run produced, stored beside the weights: its history, key and duration."""

    key: dict[str, Any]
    seconds: float
    from_cache: bool = False


def cache_key(builder: ModelBuilder, defense: Defense, data: Dataset, config: TrainingConfig) -> dict[str, Any]:
    """Everything that determines the trained weights."""
    settings = asdict(config)
    # The newer options enter the key only when set, so default runs keep their cached weights.
    if settings["lr_schedule"] == "none":
        del settings["lr_schedule"]
    if settings["early_stop"] is None:
        del settings["early_stop"]
    if settings["optimizer"] is None:
        del settings["optimizer"]
    return {
        "model": builder.name,
        "model_options": builder.settings,
        "defense": defense.name,
        "defense_options": defense.settings,
        # Edited code trains other weights, whatever the distribution's version says.
        "code": {"model": code_digest(type(builder)), "defense": code_digest(type(defense))},
        "dataset": data.name,
        # The training data by content, not by path: the same data read from another folder shares weights.
        "train_data": digest(data.x_train, data.y_train),
        "n_train": len(data.x_train),
        **settings,
    }


def checkpoint_path(cache_dir: Path, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    stem = "-".join(str(key[part]) for part in ("model", "dataset", "defense"))
    safe_stem = "".join(char if char.isalnum() or char in "-_." else "_" for char in stem)
    return cache_dir / f"{safe_stem}-{digest}.pt"


def split_validation(data: Dataset, config: TrainingConfig) -> tuple[Dataset, Dataset | None]:
    """The data training uses and, with early stopping, the held-out last VALIDATION_SHARE of it."""
    if config.early_stop is None:
        return data, None
    n_train = len(data.x_train) - int(len(data.x_train) * VALIDATION_SHARE)
    train_part = replace(data, x_train=data.x_train[:n_train], y_train=data.y_train[:n_train])
    validation = replace(data, x_train=data.x_train[n_train:], y_train=data.y_train[n_train:])
    return train_part, validation


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainingConfig) -> Any:
    """The per-epoch lr scheduler of ``config.lr_schedule`` (None for ``none``)."""
    if config.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    if config.lr_schedule == "step":
        milestones = sorted({max(1, config.epochs // 2), max(1, (3 * config.epochs) // 4)})
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=STEP_GAMMA)
    return None


def validation_robust_accuracy(
    model: nn.Module, validation: Dataset, config: TrainingConfig, device: torch.device
) -> float:
    """Robust accuracy (%) of ``model`` on ``validation``'s points against PGD-10 at the training eps."""
    from .evaluation import adversarial_predictions, predict  # imported here: evaluation is not needed otherwise
    from .registry import default_registry  # imported here: the registry loads plugins that import this module

    attack = default_registry().create("attacks", "pgd", steps=VALIDATION_PGD_STEPS)
    x, y = validation.x_train.to(device), validation.y_train.to(device)
    model.eval()
    # A forked, seeded RNG: the attack's random start neither depends on nor disturbs the training's randomness.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)
        try:
            clean = predict(model, x, config.batch_size)
            adversarial = adversarial_predictions(model, attack, x, y, config.train_eps, clean, config.batch_size)
        finally:
            model.train()
    return 100.0 * float((clean.eq(y) & adversarial.eq(y)).sum()) / max(len(y), 1)


def train(
    model: nn.Module,
    builder: ModelBuilder,
    defense: Defense,
    data: Dataset,
    config: TrainingConfig,
    device: torch.device,
    advance: ProgressCallback = lambda batches: None,
    validation: Dataset | None = None,
) -> TrainingHistory:
    """Train ``model`` in place with ``defense``'s loss on ``data``'s training split.

    With ``config.early_stop`` and a ``validation`` set, the weights of the epoch with the best
    validation robust accuracy are kept, and training stops after ``early_stop`` epochs without
    improvement (robust overfitting, Rice et al. 2020).
    """
    optimizer = (build_optimizer(config.optimizer, model.parameters()) if config.optimizer is not None
                 else builder.optimizer(model.parameters()))
    scheduler = make_scheduler(optimizer, config)
    shuffle = torch.Generator().manual_seed(config.seed)
    n = len(data.x_train)
    result = TrainingHistory(optimizer=describe_optimizer(optimizer))
    best_state: dict[str, torch.Tensor] | None = None
    best_accuracy, stale = -math.inf, 0
    model.train()
    for epoch in range(config.epochs):
        result.epoch_lrs.append(float(optimizer.param_groups[0]["lr"]))
        order = torch.randperm(n, generator=shuffle)
        total, batches = 0.0, 0
        for start in range(0, n, config.batch_size):
            index = order[start : start + config.batch_size]
            x, y = to_device(data.x_train[index], device), to_device(data.y_train[index], device)
            loss = defense.loss(model, x, y, config.train_eps)
            if not torch.isfinite(loss):
                raise TrainingDivergedError(f"training loss became {loss.item()} at epoch {epoch + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item()
            batches += 1
            advance(1)
        result.epoch_losses.append(total / batches)
        if scheduler is not None:
            scheduler.step()
        if config.early_stop is None or validation is None:
            continue
        accuracy = validation_robust_accuracy(model, validation, config, device)
        result.val_robust_accuracy.append(accuracy)
        if accuracy > best_accuracy:  # strictly better: a tie keeps the earlier, less overfitted epoch
            best_accuracy, result.best_epoch, stale = accuracy, epoch + 1, 0
            best_state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
        else:
            stale += 1
            if stale >= config.early_stop:
                advance((config.epochs - epoch - 1) * math.ceil(n / config.batch_size))  # the skipped epochs
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return result


def to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``batch`` on ``device``; to a GPU through pinned memory, without blocking, so that the host goes on
    queueing work while the copy runs (what a DataLoader's pin_memory does per batch)."""
    if device.type != "cuda":
        return batch.to(device)
    return batch.pin_memory().to(device, non_blocking=True)


def batches_per_run(data: Dataset, config: TrainingConfig) -> int:
    return config.epochs * math.ceil(len(split_validation(data, config)[0].x_train) / config.batch_size)


def load_or_train(
    model: nn.Module,
    builder: ModelBuilder,
    defense: Defense,
    data: Dataset,
    config: TrainingConfig,
    device: torch.device,
    cache_dir: Path | None,
    advance: ProgressCallback = lambda batches: None,
) -> TrainingRecord:
    """Load cached weights into ``model`` when their key matches, else train and cache them, at the
    defense's own training budget where it has one (:meth:`Defense.training_eps`)."""
    config = replace(config, train_eps=defense.training_eps(config.train_eps))
    key = cache_key(builder, defense, data, config)
    path = checkpoint_path(cache_dir, key) if cache_dir is not None else None
    if path is not None and path.exists():
        record = _load(model, path, key)
        if record is not None:
            advance(batches_per_run(data, config))
            return record
    start = time.perf_counter()
    # Copies of the dataset's tensors: a defense that edits them in place (its prepare() sees them all)
    # cannot change what later jobs train and evaluate on. Made only here, when training happens.
    data = replace(data, **{name: getattr(data, name).clone() for name in ("x_train", "y_train", "x_test", "y_test")})
    train_part, validation = split_validation(data, config)  # the validation points are never trained on
    defense.prepare(
        TrainingContext(
            builder, train_part, config.epochs, config.batch_size, config.train_eps, config.seed, device, cache_dir
        )
    )
    result = train(model, builder, defense, train_part, config, device, advance, validation)
    record = TrainingRecord(key=key, seconds=time.perf_counter() - start, **_history(result))
    if path is not None:
        try:
            _save_atomically(model, record, path)
        except (OSError, RuntimeError) as error:
            # The training is not lost to a full or failing cache: the model is evaluated all the same.
            # torch reports a failed write (a full disk, say) as a RuntimeError raised while handling the OSError.
            cause = error.__context__ if isinstance(error.__context__, OSError) else error
            warnings.warn(f"could not cache the trained weights in {path}: {_summary(cause)}; evaluating them uncached",
                          stacklevel=2)
    return record


def _load(model: nn.Module, path: Path, key: dict[str, Any]) -> TrainingRecord | None:
    """The cached record, or None (with a one-line warning) when the file is unusable: unreadable,
    written for other settings, holding weights that do not fit ``model``, or not matching its digest
    (or without one); ``model`` is then untouched."""
    expected = json.loads(json.dumps(key, default=str))
    problem = "is corrupt or truncated"  # what a failure of the next step means, for the warning
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        problem = "is not a robustbench_lite checkpoint"
        saved_key = json.loads(saved["key"])
        # Checkpoints written before the lr schedule and early stopping lack those fields: defaults then.
        history = {item.name: saved[item.name] for item in fields(TrainingHistory) if item.name in saved}
        record = TrainingRecord(key=key, seconds=float(saved["seconds"]), from_cache=True, **history)
        if saved_key != expected:
            problem = "was saved for other settings"
            names = saved_key.keys() | expected.keys()
            different = sorted(name for name in names if saved_key.get(name) != expected.get(name))
            raise ValueError(f"{', '.join(different)} differ")
        problem = "holds weights that do not fit this model"
        weights, current = saved["state_dict"], model.state_dict()
        misfits = sorted(
            name for name in weights.keys() | current.keys()
            if name not in weights or name not in current or weights[name].shape != current[name].shape
        )
        if misfits:  # checked first: a failing load_state_dict would leave the model half overwritten, then retrained
            raise ValueError(f"tensors missing, extra or of another shape: {', '.join(misfits)}")
        problem = "was written without a digest by an older robustbench_lite, so its weights are unverified"
        stored = saved[DIGEST]
        problem, actual = "does not match its digest, so it was damaged on disk or altered", _checkpoint_digest(saved)
        if stored != actual:  # torch does not check the zip's CRCs: a flipped byte still loads
            raise ValueError(f"{DIGEST} of the contents is {actual[:12]}, saved {str(stored)[:12]}")
        model.load_state_dict(weights)
    except Exception as error:  # retrain rather than trust it
        warnings.warn(f"ignoring checkpoint {path}: it {problem} ({_summary(error)}); retraining", stacklevel=3)
        return None
    model.eval()
    return record


def _summary(error: Exception) -> str:
    """The error's type and first sentence on one line: torch's load errors run to paragraphs of advice."""
    first_sentence = " ".join(str(error).split()).split(". ")[0].rstrip(".")
    if len(first_sentence) > SUMMARY_CHARS:
        first_sentence = first_sentence[: SUMMARY_CHARS - 3] + "..."
    return f"{type(error).__name__}: {first_sentence}" if first_sentence else type(error).__name__


def _history(source: TrainingHistory) -> dict[str, Any]:
    """The TrainingHistory fields of a history or a record, by name."""
    return {item.name: getattr(source, item.name) for item in fields(TrainingHistory)}


def _checkpoint_digest(payload: dict[str, Any]) -> str:
    """sha256 of a checkpoint's contents but the digest itself: every tensor's name, type, shape and bytes,
    and the other entries (key, seconds, history) as JSON."""
    others = {name: value for name, value in payload.items() if name not in ("state_dict", DIGEST)}
    hasher = hashlib.sha256(json.dumps(others, sort_keys=True, default=str).encode())
    for name, tensor in sorted(payload["state_dict"].items()):
        tensor = tensor.detach().cpu().contiguous()
        hasher.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}:".encode())
        hasher.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return hasher.hexdigest()


def _save_atomically(model: nn.Module, record: TrainingRecord, path: Path) -> None:
    """Write to a temporary file in the same folder, then rename: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "key": json.dumps(record.key, default=str),
        "state_dict": {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()},
        "seconds": record.seconds,
        **_history(record),
    }
    payload[DIGEST] = _checkpoint_digest(payload)
    with atomic_target(path) as temporary, open(temporary, "wb") as file:
        torch.save(payload, file)
        file.flush()
        os.fsync(file.fileno())  # on disk before the rename makes it the checkpoint
