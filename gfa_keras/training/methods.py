"""`harden()`: one call that wraps a classifier for a named defense.

Each method is a preset of `HardenedModel`'s two parts, a perturbation and
regularizers; compose them directly for anything else.

| method     | perturbation | regularizers                              | penalty_weight means |
|------------|--------------|-------------------------------------------|----------------------|
| "gfa"      | none         | GradientFeatureAlignment(layers)          | beta                 |
| "pgd"      | PGD          | none (Madry et al.)                       | (unused)             |
| "trades"   | none         | TradesKL (its own KL attack)              | TRADES' beta         |
| "datagrad" | none         | InputGradientNorm(p)                      | lambda               |
| "hybrid"   | PGD          | InputGradientNorm(p=2, squared), at x_adv | lambda               |
| "gfa_pgd"  | PGD          | GradientFeatureAlignment(layers), at x_adv| beta                 |
| "standard" | none         | none (plain training, for comparison)     | (unused)             |
"""
from __future__ import annotations

from gfa_keras.training.model import GFAModel, HardenedModel, check_base_model, require_tensorflow_backend
from gfa_keras.training.perturbations import PGD
from gfa_keras.training.regularizers import GradientFeatureAlignment, InputGradientNorm, TradesKL

__all__ = ["METHODS", "DEFAULT_PENALTY_WEIGHTS", "harden"]

METHODS = ("gfa", "pgd", "trades", "datagrad", "hybrid", "gfa_pgd", "standard")

DEFAULT_PENALTY_WEIGHTS = {
    "gfa": 0.01,
    "trades": 6.0,
    "datagrad": 0.01,
    "hybrid": 0.1,
    "gfa_pgd": 0.01,
}

_NEEDS_EPS = ("pgd", "trades", "hybrid", "gfa_pgd")


def harden(model, layers=3, penalty_weight: float | None = None, *, method: str = "gfa",
           eps: float | None = None, step_size: float | None = None, steps: int | None = None,
           norm: str = "linf", p: int = 2, clip_min: float = 0.0, clip_max: float = 1.0,
           epsilon: float = 1e-12, name: str | None = None) -> HardenedModel:
    """Wraps `model` so that `fit` trains it with a defense, by default layer-wise GFA.

    Args:
        model: A built Keras 3 classifier (outputs logits) whose weights are shared.
        layers: For "gfa"/"gfa_pgd": an int N (the inputs of the first N weighted
            layers; 1 = the input image, the paper's FIRST; 3 = DEEP) or layer names or
            layer objects.
        penalty_weight: The weight of the method's regularizer (see the module table);
            default per method: gfa 0.01, trades 6.0, datagrad 0.01, hybrid 0.1.
        method: One of `METHODS`.
        eps: Perturbation radius in pixel scale, required by the adversarial methods
            (e.g. 8/255 for CIFAR-10, 0.1 for Fashion-MNIST, Linf).
        step_size: Attack step; default 2.5 * eps / steps.
        steps: Attack steps; default 7 (PGD training) or 10 (TRADES).
        norm: "linf" or "l2".
        p: DataGrad's norm, 1 or 2.
        clip_min, clip_max: The valid pixel range.
        epsilon: GFA's cosine epsilon.
        name: The wrapper's name; default "<model name>_<method>".

    Returns:
        A `GFAModel` for method="gfa", else a `HardenedModel`; compile and fit it.

    Raises:
        ValueError: For an unknown method, a non-Keras or unbuilt model, bad `layers`,
            a negative or non-finite weight, a missing or non-positive eps, steps < 1,
            p not in {1, 2}.
        RuntimeError: When the Keras backend is not TensorFlow.

    Example:

    >>> import keras
    >>> base = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
    ...                          keras.layers.Dense(16, activation="relu"),
    ...                          keras.layers.Dense(10)])
    >>> model = harden(base, layers=2, penalty_weight=0.01)
    >>> model.compile(optimizer="adam",
    ...               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    """
    require_tensorflow_backend()
    if method not in METHODS:
        raise ValueError(f"Unknown method. Expected one of {list(METHODS)}. Received: method={method!r}")
    check_base_model(model)
    if penalty_weight is None:
        penalty_weight = DEFAULT_PENALTY_WEIGHTS.get(method, 0.0)
    name = name or f"{model.name}_{method}"
    if method == "gfa":
        return GFAModel(model, layers=layers, penalty_weight=penalty_weight, epsilon=epsilon, name=name)
    if method in _NEEDS_EPS and eps is None:
        raise ValueError(
            f"method={method!r} trains against perturbations and needs their radius. Expected eps > 0 in "
            "pixel scale, e.g. eps=8/255 for CIFAR-10 or 0.1 for Fashion-MNIST. Received: eps=None"
        )
    ball = {"norm": norm, "clip_min": clip_min, "clip_max": clip_max}
    perturbation, regularizers = None, []
    if method in ("pgd", "hybrid", "gfa_pgd"):
        perturbation = PGD(eps, step_size=step_size, steps=7 if steps is None else steps, **ball)
    if method == "trades":
        regularizers.append(TradesKL(penalty_weight, eps, step_size=step_size,
                                     steps=10 if steps is None else steps, **ball))
    elif method == "datagrad":
        regularizers.append(InputGradientNorm(p=p, weight=penalty_weight))
    elif method == "hybrid":
        regularizers.append(InputGradientNorm(p=2, weight=penalty_weight, squared=True))
    elif method == "gfa_pgd":
        regularizers.append(GradientFeatureAlignment(layers, penalty_weight, epsilon))
    return HardenedModel(model, perturbation=perturbation, regularizers=regularizers, name=name)
