"""Layer Sustainability Analysis (Khalooei et al.): how much each layer's representation moves under attack.

For layer l with output phi_l, the comparison measure of a clean input x and its adversarial
x_hat is the relative error CM_l(x, x_hat) = ||phi_l(x) - phi_l(x_hat)||_F / ||phi_l(x)||_F,
computed per sample. mu and sigma are the mean and standard deviation of CM over all M samples
and L layers; Algorithm 1 lists a layer as most vulnerable (the MVL list) when its mean CM
exceeds mu by more than eta * sigma.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from robustbench_lite import Attack
from robustbench_lite.attack_utils import check_bounds

from .recording import LayerRecorder, probed_layers

# Guards the division for a layer whose clean output is all zeros (CM is then 0 when the
# adversarial output is zero too, and very large otherwise).
_SMALLEST_NORM = 1e-12

TABLE_COLUMNS = ("layer", "type", "mean_cm", "std_cm")


def relative_change(clean: torch.Tensor, perturbed: torch.Tensor) -> torch.Tensor:
    """Per-sample CM = ||clean - perturbed||_F / ||clean||_F of two (N, ...) layer outputs."""
    change = torch.linalg.vector_norm((perturbed - clean).flatten(1), dim=1)
    size = torch.linalg.vector_norm(clean.flatten(1), dim=1)
    return change / size.clamp_min(_SMALLEST_NORM)


@torch.no_grad()
def comparison_measures(
    model: nn.Module, x: torch.Tensor, x_perturbed: torch.Tensor, layers: Sequence[str], batch_size: int = 128
) -> torch.Tensor:
    """CM of every sample (rows) at every layer (columns, in the order of ``layers``).

    ``model`` should be in eval mode, so that both inputs see the same network.
    """
    rows = []
    with LayerRecorder(model, layers) as recorder:
        for start in range(0, len(x), batch_size):
            recorder.passes.clear()
            model(x[start : start + batch_size])
            model(x_perturbed[start : start + batch_size])
            clean, perturbed = recorder.passes
            rows.append(
                torch.stack([relative_change(clean.outputs[name], perturbed.outputs[name]) for name in layers], dim=1)
            )
    return torch.cat(rows).cpu()


def sustainability_table(model: nn.Module, layers: Sequence[str], measures: torch.Tensor) -> pd.DataFrame:
    """One row per layer: its module path, type, and the mean and (population) std of its CM over samples."""
    return pd.DataFrame(
        {
            "layer": list(layers),
            "type": [type(model.get_submodule(name)).__name__ for name in layers],
            "mean_cm": measures.mean(dim=0).tolist(),
            "std_cm": measures.std(dim=0, correction=0).tolist(),
        },
        columns=TABLE_COLUMNS,
    )


def layer_sustainability(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: Attack,
    eps: float,
    batch_size: int = 128,
    layers: Sequence[str] | None = None,
) -> pd.DataFrame:
    """LSA of ``model`` (in eval mode) under ``attack`` at ``eps`` on (x, y): the table of :func:`sustainability_table`.

    ``layers`` defaults to every Conv and Linear layer (:func:`~rbl_lsa.recording.probed_layers`).
    Seed torch first for a reproducible table when the attack is random.
    """
    layers = list(layers) if layers is not None else probed_layers(model)
    adversarial = []
    for start in range(0, len(x), batch_size):
        x_batch, y_batch = x[start : start + batch_size], y[start : start + batch_size]
        x_adv = attack.perturb(model, x_batch, y_batch, eps).detach()
        check_bounds(x_adv, x_batch, eps, attack.norm)  # the harness's contract, as for any benchmark cell
        adversarial.append(x_adv)
    measures = comparison_measures(model, x, torch.cat(adversarial), layers, batch_size)
    return sustainability_table(model, layers, measures)


def sustainability_statistics(table: pd.DataFrame) -> tuple[float, float]:
    """mu and sigma of CM over all (sample, layer) values, from a table of per-layer means and stds.

    Every layer is measured on the same samples, so the pooled mean is the mean of the layer
    means and the pooled variance is the mean of (std^2 + mean^2) minus mu^2.
    """
    means = table["mean_cm"].to_numpy(dtype=float)
    stds = table["std_cm"].to_numpy(dtype=float)
    mu = means.mean()
    variance = (stds**2 + means**2).mean() - mu**2
    return float(mu), float(np.sqrt(max(variance, 0.0)))  # rounding can make a zero variance slightly negative


def vulnerability_threshold(table: pd.DataFrame, eta: float) -> float:
    """mu + eta * sigma: the mean CM a layer must exceed to be most vulnerable."""
    mu, sigma = sustainability_statistics(table)
    return mu + eta * sigma


def most_vulnerable_layers(table: pd.DataFrame, eta: float) -> list[str]:
    """Algorithm 1: the layers whose mean CM minus mu exceeds eta * sigma, in table order."""
    mu, sigma = sustainability_statistics(table)
    return table.loc[table["mean_cm"] - mu > eta * sigma, "layer"].tolist()
