"""rbl-lsa: Layer Sustainability Analysis and AT-LR (Khalooei et al.) for robustbench_lite.

Python API::

    import robustbench_lite as rbl
    from rbl_lsa import layer_sustainability, most_vulnerable_layers

    model, data = rbl.trained_model(model="cnn", dataset="mnist")
    table = layer_sustainability(model, data.x_test[:500], data.y_test[:500], rbl.get_attack("pgd"), eps=0.3)
    most_vulnerable_layers(table, eta=1.0)        # e.g. ["net.9"]

The defenses ``at-fgsm-lr`` and ``at-pgd-lr`` and the command ``rbl lsa`` come through the
entry point (module :mod:`rbl_lsa.plugin`).
"""

from .analysis import (
    comparison_measures,
    layer_sustainability,
    most_vulnerable_layers,
    relative_change,
    sustainability_statistics,
    sustainability_table,
    vulnerability_threshold,
)
from .defenses import BASES, LayerRegularizedAdversarialTraining, layer_regularized
from .recording import LayerRecorder, probed_layers
from .regularization import REGULARIZERS, layerwise_regularization, representation_change

__all__ = [
    "BASES", "LayerRecorder", "LayerRegularizedAdversarialTraining", "REGULARIZERS", "comparison_measures",
    "layer_regularized", "layer_sustainability", "layerwise_regularization", "most_vulnerable_layers",
    "probed_layers", "relative_change", "representation_change", "sustainability_statistics",
    "sustainability_table", "vulnerability_threshold",
]
