"""AT-LR (Algorithm 3): a registered adversarial training plus a layer-wise regulariser on its MVL layers.

One generic class extends any base defense found in the registry; ``at-fgsm-lr`` and
``at-pgd-lr`` are it over ``at-fgsm`` and ``at-pgd``. A base is used only through the public
``Defense.loss`` contract, never through its module, so adding one is adding its name to BASES.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
from torch import nn

from robustbench_lite import Defense, Option, TrainingContext, UsageError, build_model, default_registry
from robustbench_lite.training import TrainingConfig, load_or_train

from .analysis import comparison_measures, most_vulnerable_layers, sustainability_table
from .recording import ForwardPass, LayerRecorder, probed_layers
from .regularization import REGULARIZERS, layerwise_regularization

# Training points attacked to find the MVL list (Algorithm 2). The paper attacks the test set;
# training points keep the test set out of every training decision.
MVL_SAMPLES = 512

LR_OPTIONS = (
    Option("reg", str, "l2", "norm of the representation change: l0 (smoothed fraction of changed units), "
           "l1 or l2 (per-unit means)", choices=tuple(REGULARIZERS)),
    # On the MNIST cnn (3 epochs, MVL = the logits layer) lam = 1 collapsed AT-PGD-LR to a constant
    # classifier and 0.1 slowed training badly; 0.01 trained normally (plugins/rbl-lsa/README.md).
    Option("lam", float, 0.01, "weight of the layer-wise regulariser", minimum=0.0),
    Option("eta", float, 1.0, "MVL cut-off: a layer is most vulnerable when its mean CM exceeds mu + eta*sigma"),
    Option("layers", str, None, "MVL list as module paths joined by '+', e.g. net.0+net.9 "
           "(default: LSA of a normally trained model, Algorithm 2)"),
)


def _base_options(base: str) -> tuple[Option, ...]:
    return default_registry().info("defenses", base).cls.options


class _BaseThenOwnOptions:
    """The ``options`` of an AT-LR class: its base's options, then LR_OPTIONS.

    Looked up on use rather than at class creation: the classes are registered while the
    registry that knows the base is still being built.
    """

    def __get__(self, instance: object, owner: type[LayerRegularizedAdversarialTraining]) -> tuple[Option, ...]:
        inherited = _base_options(owner.base)
        clashes = {option.name for option in inherited} & {option.name for option in LR_OPTIONS}
        if clashes:
            raise TypeError(f"{owner.name}: base {owner.base!r} has options named like AT-LR's: {', '.join(sorted(clashes))}")
        return inherited + LR_OPTIONS


def split_passes(passes: list[ForwardPass], x: torch.Tensor) -> tuple[ForwardPass | None, ForwardPass | None]:
    """The last pass on the clean batch ``x`` and the last pass on anything else (the adversarial batch)."""
    clean = adversarial = None
    for forward_pass in passes:
        if torch.equal(forward_pass.input, x):
            clean = forward_pass
        else:
            adversarial = forward_pass
    return clean, adversarial


def training_adversarial_inputs(
    defense: Defense, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float
) -> torch.Tensor:
    """The adversarial batch ``defense`` trains on for (x, y): the input of its loss's last training pass that is not x.

    x itself when there is none. ``model`` must be in train mode, as for any loss; the loss's
    training-mode passes move its batch-norm statistics.
    """
    with LayerRecorder(model, (), training_only=True) as recorder:
        defense.loss(model, x, y, eps)
    _, adversarial = split_passes(recorder.passes, x)
    return x if adversarial is None else adversarial.input.detach()


def standard_model_mvl(base: Defense, context: TrainingContext, eta: float) -> list[str]:
    """Algorithm 2: the MVL list of a normally trained model under the adversarial inputs ``base`` trains on.

    The model is the one load_or_train gives the ``none`` defense for the run's builder, data,
    settings and cache, so a cached standard model is reused. The result follows from those
    and the seed alone. When eta leaves no layer, the most vulnerable one is kept: that is
    lowering eta until one qualifies, the tuning step of Algorithm 2.
    """
    model = build_model(context.builder, context.data, context.seed).to(context.device)
    config = TrainingConfig(context.epochs, context.batch_size, context.train_eps, context.seed)
    standard = default_registry().create("defenses", "none")
    load_or_train(model, context.builder, standard, context.data, config, context.device, context.cache_dir)
    model.requires_grad_(False)  # only input gradients are needed from here on
    x = context.data.x_train[:MVL_SAMPLES].to(context.device)
    y = context.data.y_train[:MVL_SAMPLES].to(context.device)
    trained_state = copy.deepcopy(model.state_dict())
    torch.manual_seed(context.seed)  # the base's random starts, too, follow from the cache key
    model.train()
    x_adv = torch.cat(
        [
            training_adversarial_inputs(
                base, model, x[start : start + context.batch_size], y[start : start + context.batch_size],
                context.train_eps,
            )
            for start in range(0, len(x), context.batch_size)
        ]
    )
    model.load_state_dict(trained_state)  # undo the batch-norm updates of those training-mode passes
    model.eval()
    layers = probed_layers(model)
    table = sustainability_table(model, layers, comparison_measures(model, x, x_adv, layers, context.batch_size))
    return most_vulnerable_layers(table, eta) or [table.loc[table["mean_cm"].idxmax(), "layer"]]


def _layer_list(text: str, owner: str) -> list[str]:
    names = [name.strip() for name in text.split("+")]
    if not all(names):
        raise UsageError(
            f"option 'layers' of {owner} has an empty layer name in {text!r}; "
            "give module paths joined by '+', e.g. net.0+net.9"
        )
    return names


class LayerRegularizedAdversarialTraining(Defense):
    """Algorithm 3: per minibatch, the base's loss on its adversarial inputs x_hat plus lam * LR(x, x_hat).

    LR (:func:`~rbl_lsa.regularization.layerwise_regularization`) is read off forward hooks on
    the MVL layers while the base's loss runs: x_hat is the input of its last training-mode
    pass that is not x (attacks craft in eval mode), phi(x) comes from its pass on x or, when
    the base never looks at x, from one extra training-mode pass. Subclasses set ``base``.
    """

    base: ClassVar[str]
    options = _BaseThenOwnOptions()

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        inherited = {option.name for option in _base_options(self.base)}
        self.base_defense: Defense = default_registry().create(
            "defenses", self.base, **{key: value for key, value in self.settings.items() if key in inherited}
        )
        # The MVL list: given, or set by prepare() (Algorithm 2).
        self.most_vulnerable: list[str] | None = (
            _layer_list(self.layers, f"defense {self.name!r}") if self.layers is not None else None
        )

    def training_eps(self, run_eps: float) -> float:
        return self.base_defense.training_eps(run_eps)  # its base's option eps, where the base has one

    def prepare(self, context: TrainingContext) -> None:
        if self.layers is None:
            self.most_vulnerable = standard_model_mvl(self.base_defense, context, self.eta)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        if self.lam == 0:  # exactly the base, batch-norm updates included, so the ablation lam = 0 is the base
            return self.base_defense.loss(model, x, y, eps)
        if self.most_vulnerable is None:
            raise RuntimeError(f"{self.label}: call prepare(context) before training, or set the 'layers' option")
        with LayerRecorder(model, self.most_vulnerable, training_only=True) as recorder:
            base_loss = self.base_defense.loss(model, x, y, eps)
            clean, adversarial = split_passes(recorder.passes, x)
            if adversarial is None:  # the base trained on x itself (eps = 0): no representation moved
                return base_loss
            if clean is None:
                model(x)
                clean = recorder.passes[-1]
        return base_loss + self.lam * layerwise_regularization(clean.outputs, adversarial.outputs, self.reg)


def layer_regularized(base: str) -> type[LayerRegularizedAdversarialTraining]:
    """The AT-LR defense class over the registered defense ``base``, named ``<base>-lr``."""
    return type(
        "".join(part.capitalize() for part in base.split("-")) + "LayerRegularized",
        (LayerRegularizedAdversarialTraining,),
        {
            "name": f"{base}-lr",
            "base": base,
            "description": f"AT-LR over {base}: its loss + lam * layer-wise regulariser of the most vulnerable "
            "layers' representation change (Khalooei et al.)",
            "__module__": __name__,
        },
    )


# The bases AT-LR extends (the paper's AT-FGSM-LR, AT-PGD-LR, AT-FAST-LR, AT-TRADE-LR, AT-APGD-LR);
# another registered adversarial training is one more name here.
BASES = ("at-fgsm", "at-pgd", "fast-at", "trades", "at-apgd")
AT_LR_DEFENSES = tuple(layer_regularized(base) for base in BASES)
