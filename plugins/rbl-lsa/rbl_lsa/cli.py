"""``rbl lsa``: layer sustainability analysis of a model that ``rbl run`` trains (same settings, same cache)."""

from __future__ import annotations

import math
from pathlib import Path

import click
import torch

from robustbench_lite import UsageError, default_registry, trained_model
from robustbench_lite.atomic import ensure_writable
from robustbench_lite.cli import BUDGET, trained_model_options
from robustbench_lite.plan import choose_dataset

from .analysis import layer_sustainability
from .report import AnalysisSettings, flag_most_vulnerable, summary, write_report


@click.command("lsa")
@click.option("--models", "--model", "model", default="mlp", show_default=True, metavar="SPEC",
              help="One model spec, e.g. cnn.")
@click.option("--defenses", "--defense", "defense", default="none", show_default=True, metavar="SPEC",
              help="One defense the model is trained with.")
@click.option("--attacks", "--attack", "attack", default="pgd", show_default=True, metavar="SPEC",
              help="One attack spec, e.g. 'pgd[steps=20]'.")
@click.option("--eps", type=BUDGET, default=None, help="Attack budget in (0, 1]. [default: the dataset's training eps]")
@click.option("--dataset", default=None, help="Dataset spec, e.g. mnist. [default: the one the model is meant for]")
@click.option("--data-dir", type=click.Path(path_type=Path), default=Path("data"), show_default=True)
@click.option("--n-examples", type=int, default=None, help="Analyse the first N test points. [default: all]")
@trained_model_options
@click.option("--eta", type=float, default=1.0, show_default=True,
              help="MVL cut-off: layers whose mean CM exceeds mu + eta*sigma are most vulnerable.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("leaderboards"), show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def lsa_command(
    model: str, defense: str, attack: str, eps: float | None, dataset: str | None, data_dir: Path, n_examples: int | None,
    epochs: int | None, batch_size: int, train_eps: float | None, lr_schedule: str, early_stop: int | None,
    optimizer: str | None, seed: int, device: str, cache_dir: Path | None, eta: float, out: Path, quiet: bool,
) -> None:
    """Layer sustainability analysis: how far each layer's output moves under attack, and the MVL list.

    Writes lsa-<model>-<defense>-<dataset>.{csv,md,png} into --out.
    """
    registry = default_registry()
    builder = registry.create("models", model)
    model_label = builder.label
    defense_label = registry.create("defenses", defense).label
    threat = registry.create("attacks", attack)
    budget = registry.create("datasets", choose_dataset(dataset, [builder]).spec).default_train_eps if eps is None else eps
    if not 0.0 < budget <= 1.0:
        raise UsageError(f"--eps must lie in (0, 1] (inputs are images in [0, 1]), got {budget}")
    if n_examples is not None and n_examples <= 0:
        raise UsageError(f"--n-examples must be a positive number of test points, got {n_examples}")
    if not math.isfinite(eta):
        raise UsageError(f"--eta must be a finite number, got {eta}")
    ensure_writable(out)

    network, data = trained_model(
        model=model, defense=defense, dataset=dataset, epochs=epochs, batch_size=batch_size, train_eps=train_eps,
        lr_schedule=lr_schedule, early_stop=early_stop, optimizer=optimizer,
        device=device, seed=seed, data_dir=data_dir, cache_dir=cache_dir, progress=not quiet, registry=registry,
    )
    n = min(n_examples or len(data.x_test), len(data.x_test))
    on = next(network.parameters()).device
    torch.manual_seed(seed)  # as the runner seeds every cell: the attack's randomness follows from --seed
    table = layer_sustainability(network, data.x_test[:n].to(on), data.y_test[:n].to(on), threat, budget, batch_size)
    table = flag_most_vulnerable(table, eta)
    settings = AnalysisSettings(model_label, defense_label, data.name, threat.label, budget, n, seed, eta)

    click.echo(table.to_markdown(index=False, floatfmt=".4f"))
    click.echo(summary(table, eta))
    for path in write_report(table, settings, out).values():
        click.echo(f"wrote {path}")
