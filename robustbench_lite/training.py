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
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import RblError
from .interfaces import Dataset, Defense, ModelBuilder, TrainingContext

ProgressCallback = Callable[[int], None]


class TrainingDivergedError(RblError):
    """The training loss became NaN or infinite."""


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int
    batch_size: int
    train_eps: float
    seed: int


@dataclass
class TrainingRecord:
    """What a training run produced, stored beside the weights."""

    key: dict[str, Any]
    seconds: float
    epoch_losses: list[float] = field(default_factory=list)
    from_cache: bool = False


def cache_key(builder: ModelBuilder, defense: Defense, data: Dataset, config: TrainingConfig) -> dict[str, Any]:
    """Everything that determines the trained weights."""
    return {
        "model": builder.name,
        "model_options": builder.settings,
        "defense": defense.name,
        "defense_options": defense.settings,
        "dataset": data.name,
        "dataset_source": data.source,
        "n_train": len(data.x_train),
        **asdict(config),
    }


def checkpoint_path(cache_dir: Path, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    stem = "-".join(str(key[part]) for part in ("model", "dataset", "defense"))
    safe_stem = "".join(char if char.isalnum() or char in "-_." else "_" for char in stem)
    return cache_dir / f"{safe_stem}-{digest}.pt"


def train(
    model: nn.Module,
    builder: ModelBuilder,
    defense: Defense,
    data: Dataset,
    config: TrainingConfig,
    device: torch.device,
    advance: ProgressCallback = lambda batches: None,
) -> list[float]:
    """Train ``model`` in place with ``defense``'s loss; return the mean loss of each epoch."""
    optimizer = builder.optimizer(model.parameters())
    shuffle = torch.Generator().manual_seed(config.seed)
    n = len(data.x_train)
    epoch_losses = []
    model.train()
    for _ in range(config.epochs):
        order = torch.randperm(n, generator=shuffle)
        total, batches = 0.0, 0
        for start in range(0, n, config.batch_size):
            index = order[start : start + config.batch_size]
            x = data.x_train[index].to(device, non_blocking=True)
            y = data.y_train[index].to(device, non_blocking=True)
            loss = defense.loss(model, x, y, config.train_eps)
            if not torch.isfinite(loss):
                raise TrainingDivergedError(f"training loss became {loss.item()} at epoch {len(epoch_losses) + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item()
            batches += 1
            advance(1)
        epoch_losses.append(total / batches)
    model.eval()
    return epoch_losses


def batches_per_run(data: Dataset, config: TrainingConfig) -> int:
    return config.epochs * math.ceil(len(data.x_train) / config.batch_size)


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
    """Load cached weights into ``model`` when their key matches, else train and cache them."""
    key = cache_key(builder, defense, data, config)
    path = checkpoint_path(cache_dir, key) if cache_dir is not None else None
    if path is not None and path.exists():
        record = _load(model, path, key)
        if record is not None:
            advance(batches_per_run(data, config))
            return record
    start = time.perf_counter()
    defense.prepare(
        TrainingContext(builder, data, config.epochs, config.batch_size, config.train_eps, config.seed, device, cache_dir)
    )
    epoch_losses = train(model, builder, defense, data, config, device, advance)
    record = TrainingRecord(key=key, seconds=time.perf_counter() - start, epoch_losses=epoch_losses)
    if path is not None:
        _save_atomically(model, record, path)
    return record


def _load(model: nn.Module, path: Path, key: dict[str, Any]) -> TrainingRecord | None:
    """The cached record, or None (with a warning) when the file is unreadable or for another key."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if json.loads(saved["key"]) != json.loads(json.dumps(key, default=str)):
            raise ValueError("its key does not match this run")
        model.load_state_dict(saved["state_dict"])
    except Exception as error:  # corrupt, truncated or foreign: retrain rather than trust it
        warnings.warn(f"ignoring checkpoint {path} ({type(error).__name__}: {error}); retraining", stacklevel=3)
        return None
    model.eval()
    return TrainingRecord(
        key=key, seconds=float(saved["seconds"]), epoch_losses=list(saved["epoch_losses"]), from_cache=True
    )


def _save_atomically(model: nn.Module, record: TrainingRecord, path: Path) -> None:
    """Write to a temporary file in the same folder, then rename: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "key": json.dumps(record.key, default=str),
        "state_dict": {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()},
        "seconds": record.seconds,
        "epoch_losses": record.epoch_losses,
    }
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
