"""A hostile third-party plugin distribution: attacks, a defense and models that try to make the harness lie.

Installed by the tests like any pip-installed plugin (``install_plugin``), never imported by the project.
Each plugin misbehaves in one way a careless or malicious author could; the harness must fail or flag
what it touches and leave every other number unchanged.
"""

import torch
from torch import nn

from robustbench_lite import Attack, Defense, ModelBuilder, hookimpl


class Crashing(Attack):
    name = "crashing"
    description = "raises inside every cell"

    def perturb(self, model, x, y, eps):
        raise RuntimeError("hostile attack crashed")


class NotANumber(Attack):
    name = "nan-attack"
    description = "returns NaN inputs"

    def perturb(self, model, x, y, eps):
        return x * float("nan")


class InPlace(Attack):
    name = "in-place"
    description = "moves its input tensor in place far outside the eps-ball and returns it"

    def perturb(self, model, x, y, eps):
        x.add_(2.5 * eps).clamp_(0, 1)  # the returned tensor is the (edited) input: no visible perturbation
        return x


class WeightZeroing(Attack):
    name = "weight-zeroing"
    description = "zeroes the model's weights, a cheap 'attack' that breaks every point"

    def perturb(self, model, x, y, eps):
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.zero_()
        return x.clone()


class InPlacePreprocessing(Defense):
    name = "in-place-shift"
    description = "an inference-time preprocessing that edits its input in place"

    def preprocess(self, x):
        return x.mul_(0.5).add_(0.25)

    def loss(self, model, x, y, eps):
        return nn.functional.cross_entropy(model(x), y)


class Interrupting(Defense):
    name = "interrupting"
    description = "its training is interrupted (as by Ctrl-C or a scheduler's kill), ending the run mid-matrix"

    def loss(self, model, x, y, eps):
        raise KeyboardInterrupt


class _Constant(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(num_classes))

    def forward(self, x):
        favour_class_0 = torch.zeros_like(self.bias)
        favour_class_0[0] = 5.0
        # 0 * x keeps the input in the graph: attacks get a (zero) gradient rather than an error
        return self.bias + favour_class_0 + 0.0 * x.flatten(1).sum(1, keepdim=True)


class Constant(ModelBuilder):
    name = "constant"
    description = "predicts class 0 for every input, whatever it is trained on"

    def build(self, input_shape, num_classes):
        return _Constant(num_classes)

    def optimizer(self, parameters):
        return torch.optim.SGD(parameters, lr=0.0)


class _Softmax(nn.Module):
    def __init__(self, network):
        super().__init__()
        self.network = network

    def forward(self, x):
        return self.network(x).softmax(dim=1)


class Probabilities(ModelBuilder):
    name = "softmax-mlp"
    description = "an MLP whose outputs are probabilities, not logits"

    def build(self, input_shape, num_classes):
        features = 1
        for size in input_shape:
            features *= size
        return _Softmax(nn.Sequential(nn.Flatten(), nn.Linear(features, 32), nn.ReLU(), nn.Linear(32, num_classes)))


class _NotANumber(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.linear = nn.LazyLinear(num_classes)

    def forward(self, x):
        return self.linear(x.flatten(1)) * float("nan")


class NaNLogits(ModelBuilder):
    name = "nan-model"
    description = "a model whose logits are NaN (its training loss is NaN too)"

    def build(self, input_shape, num_classes):
        return _NotANumber(num_classes)


@hookimpl
def register_attacks(register):
    for attack in (Crashing, NotANumber, InPlace, WeightZeroing):
        register(attack)


@hookimpl
def register_defenses(register):
    register(InPlacePreprocessing)
    register(Interrupting)


@hookimpl
def register_models(register):
    register(Constant)
    register(Probabilities)
    register(NaNLogits)
