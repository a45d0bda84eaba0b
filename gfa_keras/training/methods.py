"""The method registry and `harden()`: one call that wraps a classifier for a named defense.

Each method is a preset of `HardenedModel`'s parts (a perturbation, regularizers, and
optionally adversarial weight perturbation and weight averaging), registered once in
`METHODS` with what it needs and logs; `harden`, the tuner, the command line and the
benchmarks all read it. Compose `HardenedModel` directly for anything else, or add a
method with `register_method`.

| method        | perturbation | regularizers                              | penalty_weight means |
|---------------|--------------|-------------------------------------------|----------------------|
| "gfa"         | none         | GradientFeatureAlignment(layers)          | beta                 |
| "pgd"         | PGD          | none (Madry et al.)                       | (unused)             |
| "trades"      | none         | TradesKL (its own KL attack)              | TRADES' beta         |
| "mart"        | PGD          | AdversarialMargin, MisclassificationAwareKL (MART, Wang et al. 2020) | MART's lambda |
| "datagrad"    | none         | InputGradientNorm(p)                      | lambda               |
| "hybrid"      | PGD          | InputGradientNorm(p=2, squared), at x_adv | lambda               |
| "gfa_pgd"     | PGD          | GradientFeatureAlignment(layers), at x_adv| beta                 |
| "fgsm_rs"     | FGSM, random start, step 1.25 eps (Wong et al. 2020) | none | (unused)    |
| "n_fgsm"      | NFGSM: noise 2 eps, step eps, no projection (de Jorge et al. 2022) | none | (unused) |
| "n_fgsm_gradalign" | NFGSM   | GradAlign(eps), at the clean x            | GradAlign's lambda   |
| "n_fgsm_gfa"  | NFGSM        | GradientFeatureAlignment(layers), at x_adv| beta                 |
| "standard"    | none         | none (plain training, for comparison)     | (unused)             |
| "recommended" | PGD, 5 steps | none; AWP 5e-3, EMA 0.999 (see below)     | (unused)             |

The single-step methods cost one forward-backward pass for the perturbation (PGD-7
costs seven); `step_size` overrides their step, and `steps` does not apply.

Every method also takes `awp_gamma` (adversarial weight perturbation, Wu et al. 2020)
and `ema_momentum` (an exponential moving average of the weights, batch-norm statistics
included); both are off by default, except in "recommended".

"recommended" is the recipe benchmarks/recipes.py has measured to be the most robust at
PGD-7 training's cost without failing on any seed: PGD-5 with adversarial weight perturbation
(gamma 5e-3) and weight averaging, trained for the epochs PGD-7 would get (7 gradient passes
a step against 8; 0.85x PGD-7's epoch time, measured side by side on CIFAR-10). Against PGD-7
it gained 1.6 AutoAttack points on CIFAR-10 (mean of 5 seeds) and 0.7 on Fashion-MNIST (4).
Until 2026-12-02 it was PGD-5 + EMA for 1.2x PGD-7's epochs, which this recipe beat by 1.5
points on CIFAR-10 and trailed by 0.3 on Fashion-MNIST; before that PGD-3 + AWP + EMA, until it
and PGD-3 + EMA overfit catastrophically on one of two seeds (docs/RESULTS.md). For the former
recipe: `harden(model, method="pgd", steps=5, ema_momentum=0.999)`.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from gfa_keras.training.model import GFAModel, HardenedModel, check_base_model, require_tensorflow_backend
from gfa_keras.training.perturbations import FGSM, NFGSM, PGD
from gfa_keras.training.regularizers import (
    AdversarialMargin, GradAlign, GradientFeatureAlignment, InputGradientNorm, MisclassificationAwareKL, TradesKL,
)
from gfa_keras.training.weight_perturbation import AdversarialWeightPerturbation
from gfa_keras.validation import check_choice, check_number

__all__ = [
    "METHODS", "DEFAULT_PENALTY_WEIGHTS", "MethodOptions", "MethodSpec", "register_method", "get_method",
    "harden", "RECOMMENDED_DEFAULTS",
]


@dataclasses.dataclass(frozen=True)
class MethodOptions:
    """The options `harden` hands to a method's builder (see `harden` for each)."""

    layers: object = 3
    penalty_weight: float = 0.0
    eps: float | None = None
    step_size: float | None = None
    steps: int | None = None
    norm: str = "linf"
    p: int = 2
    clip_min: float = 0.0
    clip_max: float = 1.0
    epsilon: float = 1e-12

    @property
    def ball(self):
        """The threat-model keywords every perturbation takes."""
        return {"norm": self.norm, "clip_min": self.clip_min, "clip_max": self.clip_max}


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """One registered defense.

    Attributes:
        name: The name `harden(method=...)` takes.
        build: `(base_model, MethodOptions, **wrapper_kwargs) -> HardenedModel`; the
            wrapper kwargs (`name`, `weight_perturbation`, `ema_momentum`) go to the
            wrapper's constructor.
        default_weight: The default `penalty_weight`, or None when the method has no
            weighted regularizer.
        needs_eps: Whether it trains against perturbations and so needs `eps`.
        logs: The metrics it logs besides `loss`, `task_loss` and the compiled ones
            (`<layer>` stands for each tapped layer's name).
        aligned: Whether it logs the GFA alignment (`alignment_<layer>`).
        description: One line for tables and `--help`.
        awp_gamma: AWP's gamma when the caller gives none (None: no AWP).
        ema_momentum: The weight-averaging momentum when the caller gives none (None: off).
    """

    name: str
    build: Callable
    default_weight: float | None
    needs_eps: bool
    logs: tuple
    aligned: bool = False
    description: str = ""
    awp_gamma: float | None = None
    ema_momentum: float | None = None


METHODS: dict[str, MethodSpec] = {}
# {method: default penalty weight} for the methods with a weighted regularizer; kept in
# step with METHODS by `register_method`.
DEFAULT_PENALTY_WEIGHTS: dict[str, float] = {}


def register_method(spec: MethodSpec, overwrite: bool = False) -> MethodSpec:
    """Adds `spec` to `METHODS`; a taken name needs `overwrite=True`.

    Raises:
        ValueError: For a spec that is not a `MethodSpec` or a name already registered.
    """
    if not isinstance(spec, MethodSpec):
        raise ValueError(f"Expected a MethodSpec. Received: spec of type {type(spec).__name__}")
    if spec.name in METHODS and not overwrite:
        raise ValueError(
            f"A method named {spec.name!r} is already registered. Pass overwrite=True to replace it. "
            f"Received: name={spec.name!r}"
        )
    METHODS[spec.name] = spec
    DEFAULT_PENALTY_WEIGHTS.pop(spec.name, None)
    if spec.default_weight is not None:
        DEFAULT_PENALTY_WEIGHTS[spec.name] = spec.default_weight
    return spec


def get_method(name: str) -> MethodSpec:
    """The registered method `name`, or a ValueError listing them all."""
    return METHODS[check_choice("method", name, METHODS)]


def _steps(options, default):
    return default if options.steps is None else options.steps


def _pgd(options, default_steps=7):
    return PGD(options.eps, step_size=options.step_size, steps=_steps(options, default_steps), **options.ball)


def _fgsm_rs(options):
    return FGSM(options.eps, random_start=True, step_size=options.step_size, **options.ball)


def _n_fgsm(options):
    return NFGSM(options.eps, step_size=options.step_size, **options.ball)


def _build_gfa(base, options, **kwargs):
    return GFAModel(base, layers=options.layers, penalty_weight=options.penalty_weight, epsilon=options.epsilon,
                    **kwargs)


def _alignment(options):
    """The GFA penalty as a regularizer at another method's training points."""
    return GradientFeatureAlignment(options.layers, options.penalty_weight, options.epsilon)


def _wrapper(perturbation=None, regularizers=()):
    def build(base, options, **kwargs):
        return HardenedModel(
            base,
            perturbation=perturbation(options) if perturbation else None,
            regularizers=[make(options) for make in regularizers],
            **kwargs,
        )
    return build


_ALIGNMENT_LOGS = ("gfa_penalty", "gfa_weight", "alignment_<layer>")

for _spec in (
    MethodSpec("gfa", _build_gfa, 0.01, False, _ALIGNMENT_LOGS, aligned=True,
               description="layer-wise gradient-feature alignment (the paper's method)"),
    MethodSpec("pgd", _wrapper(_pgd), None, True, (),
               description="Madry PGD adversarial training (7 steps)"),
    MethodSpec("trades", _wrapper(regularizers=[lambda o: TradesKL(
        o.penalty_weight, o.eps, step_size=o.step_size, steps=_steps(o, 10), **o.ball)]),
        6.0, True, ("trades_penalty", "trades_weight"),
        description="TRADES: clean cross-entropy + beta KL to a KL-maximising point (10 steps)"),
    MethodSpec("mart", _wrapper(_pgd, [lambda o: AdversarialMargin(1.0),
                                       lambda o: MisclassificationAwareKL(o.penalty_weight)]),
               6.0, True, ("mart_margin_penalty", "mart_margin_weight", "mart_kl_penalty", "mart_kl_weight"),
               description="MART: PGD training with a boosted cross-entropy + lambda KL weighted by the clean "
                           "misclassification (7 steps)"),
    MethodSpec("datagrad", _wrapper(regularizers=[lambda o: InputGradientNorm(p=o.p, weight=o.penalty_weight)]),
               0.01, False, ("input_gradient_penalty", "input_gradient_weight"),
               description="DataGrad: the input-gradient norm penalty (double backprop)"),
    MethodSpec("hybrid", _wrapper(_pgd, [lambda o: InputGradientNorm(p=2, weight=o.penalty_weight, squared=True)]),
               0.1, True, ("input_gradient_penalty", "input_gradient_weight"),
               description="PGD training + squared input-gradient norm at the PGD points"),
    MethodSpec("gfa_pgd", _wrapper(_pgd, [_alignment]),
               0.01, True, _ALIGNMENT_LOGS, aligned=True,
               description="PGD training + GFA at the PGD points"),
    MethodSpec("fgsm_rs", _wrapper(_fgsm_rs), None, True, (),
               description="single-step training: FGSM from a random start, step 1.25 eps (Wong et al. 2020)"),
    MethodSpec("n_fgsm", _wrapper(_n_fgsm), None, True, (),
               description="single-step training: N-FGSM, noise 2 eps, step eps, no projection "
                           "(de Jorge et al. 2022)"),
    MethodSpec("n_fgsm_gradalign", _wrapper(_n_fgsm, [lambda o: GradAlign(o.penalty_weight, o.eps, **o.ball)]),
               0.2, True, ("gradalign_penalty", "gradalign_weight", "gradient_cosine"),
               description="N-FGSM + GradAlign's input-gradient cosine penalty (Andriushchenko & Flammarion "
                           "2020)"),
    MethodSpec("n_fgsm_gfa", _wrapper(_n_fgsm, [_alignment]),
               0.01, True, _ALIGNMENT_LOGS, aligned=True,
               description="N-FGSM + GFA at the N-FGSM points"),
    MethodSpec("standard", _wrapper(), None, False, (), description="plain training, for comparison"),
    # What benchmarks/recipes.py measures as the best recipe that is stable on every seed
    # (docs/RESULTS.md, "Training recipes"); it changes only on paired gains over several seeds,
    # by a rule set before the deciding run.
    MethodSpec("recommended", _wrapper(lambda o: _pgd(o, default_steps=5)), None, True, (),
               description="the benchmark's best stable recipe at PGD-7's cost: PGD-5 training with "
                           "adversarial weight perturbation (gamma 5e-3) and weight averaging (EMA 0.999), "
                           "for PGD-7's epochs",
               awp_gamma=5e-3, ema_momentum=0.999),
):
    register_method(_spec)

# The recommended recipe's settings, for documentation and the benchmarks.
RECOMMENDED_DEFAULTS = {"perturbation": "PGD, 5 steps of 2.5 eps / 5, random start",
                        "awp_gamma": METHODS["recommended"].awp_gamma,
                        "ema_momentum": METHODS["recommended"].ema_momentum}


def harden(model, layers=3, penalty_weight: float | None = None, *, method: str = "gfa",
           eps: float | None = None, step_size: float | None = None, steps: int | None = None,
           norm: str = "linf", p: int = 2, clip_min: float = 0.0, clip_max: float = 1.0,
           epsilon: float = 1e-12, awp_gamma: float | None = None, ema_momentum: float | None = None,
           seed: int | None = None, name: str | None = None) -> HardenedModel:
    """Wraps `model` so that `fit` trains it with a defense, by default layer-wise GFA.

    Args:
        model: A built Keras 3 classifier (outputs logits) whose weights are shared.
        layers: For "gfa"/"gfa_pgd"/"n_fgsm_gfa": an int N (the inputs of the first N weighted
            layers; 1 = the input image, the paper's FIRST; 3 = DEEP) or layer names or
            layer objects.
        penalty_weight: The weight of the method's regularizer (see the module table);
            default per method: gfa 0.01, trades 6.0, mart 6.0, datagrad 0.01, hybrid 0.1, gfa_pgd 0.01,
            n_fgsm_gradalign 0.2 (GradAlign's lambda for CIFAR-10 at 8/255), n_fgsm_gfa 0.01.
        method: One of `METHODS`. "recommended": the most robust recipe at PGD-7's cost
            that benchmarks/recipes.py found stable on every seed: PGD-5 (`steps` changes
            it) with adversarial weight perturbation (gamma 5e-3) and weight averaging
            (momentum 0.999); train it for the epochs you would give PGD-7 (docs/RESULTS.md).
        eps: Perturbation radius in pixel scale, required by the adversarial methods
            (e.g. 8/255 for CIFAR-10, 0.1 for Fashion-MNIST, Linf).
        step_size: Attack step, > 0; default 2.5 * eps / steps for PGD, 1.25 eps for
            "fgsm_rs", eps for the N-FGSM methods.
        steps: Attack steps; default 7 (PGD training and MART) or 10 (TRADES).
        norm: "linf" or "l2".
        p: DataGrad's norm, 1 or 2.
        clip_min, clip_max: The valid pixel range.
        epsilon: GFA's cosine epsilon.
        awp_gamma: Adversarial weight perturbation's relative size (Wu et al. 2020: 5e-3),
            a finite number > 0; None: off (5e-3 for "recommended").
        ema_momentum: Keep an exponential moving average of the weights (batch-norm
            statistics included) with this momentum in (0, 1), e.g. 0.999; after `fit`
            the model holds the averaged weights. None: off (0.999 for "recommended").
        seed: The seed of the training noise (random starts and the like), saved with the
            model so that training resumed from a `.keras` file goes on exactly as the
            uninterrupted run would have; default: drawn from Python's `random`
            (`keras.utils.set_random_seed` seeds it).
        name: The wrapper's name; default "<model name>_<method>".

    Returns:
        A `GFAModel` for method="gfa", else a `HardenedModel`; compile and fit it.

    Raises:
        ValueError: For an unknown method, a non-Keras or unbuilt model, bad `layers`,
            a negative or non-finite weight, a missing or non-positive eps, a step size
            <= 0 or not finite, steps < 1,
            p not in {1, 2}, awp_gamma <= 0 or non-finite, ema_momentum outside (0, 1),
            a seed that is not a non-negative integer.
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
    spec = get_method(method)
    check_base_model(model)
    if penalty_weight is None:
        penalty_weight = spec.default_weight if spec.default_weight is not None else 0.0
    if spec.needs_eps and eps is None:
        raise ValueError(
            f"method={method!r} trains against perturbations and needs their radius. Expected eps > 0 in "
            "pixel scale, e.g. eps=8/255 for CIFAR-10 or 0.1 for Fashion-MNIST. Received: eps=None"
        )
    awp_gamma = spec.awp_gamma if awp_gamma is None else awp_gamma
    ema_momentum = spec.ema_momentum if ema_momentum is None else ema_momentum
    # Checked here, before any regularizer is built, so the message names the argument.
    weight_perturbation = None if awp_gamma is None else AdversarialWeightPerturbation(
        check_number("awp_gamma", awp_gamma, low=0, low_open=True))
    if ema_momentum is not None:
        check_number("ema_momentum", ema_momentum, low=0, high=1, low_open=True, high_open=True)
    options = MethodOptions(layers=layers, penalty_weight=penalty_weight, eps=eps, step_size=step_size,
                            steps=steps, norm=norm, p=p, clip_min=clip_min, clip_max=clip_max, epsilon=epsilon)
    return spec.build(model, options, name=name or f"{model.name}_{method}",
                      weight_perturbation=weight_perturbation, ema_momentum=ema_momentum, seed=seed)
