"""gfa_keras: harden Keras 3 classifiers against adversarial examples and measure how
robust they are.

- `harden(model, layers=3)`: layer-wise Gradient-Feature Alignment (and, with
  `method=`, PGD adversarial training, TRADES, DataGrad, the hybrid, GFA + PGD, and
  "recommended": the benchmark's best stable recipe, PGD-5 training with adversarial weight
  perturbation and weight averaging;
  single-step training: FGSM with random start, N-FGSM, N-FGSM + GradAlign, N-FGSM + GFA).
- `CatastrophicOverfittingMonitor`, `CollapseGuard`: callbacks that watch training fail.
- `HardenedModel(base, perturbation=..., regularizers=[...])`: compose your own.
- `fit_resumable(model, x, y, directory=..., epochs=...)`: `fit` with a checkpoint per epoch
  that a rerun continues from.
- `gradient_feature_alignment`, `alignment_penalty`: the penalty for custom loops.
- `evaluate_robustness(model, (x, y), "autoattack", eps=[...])`: the worst case over an
  attack cascade on every test point, as a `RobustnessReport` with masking checks;
  `shard=(i, n)` splits it over machines and `merge_shard_reports` joins the shards exactly.
- `tune(model, x, y, validation_data=...)`: the beta search with Keras Tuner;
  `RobustAccuracy`: a callback that logs `val_robust_accuracy`; `RobustEarlyStopping`:
  keeps the epoch with the best held-out robust accuracy.

The package, from the bottom up: `validation` and `threat_model` (shared checks and
geometry), `data` and `augmentation` (images in, as batches), `training/`, `attacks/`,
`evaluation/`, `tuning/`, `reports/`, `cli/`; imports only point down. Training is
imported at once (its classes must be registered before a `.keras` file loads); the
evaluation (and with it cleverhans), the tuner and plotting are imported when first used.
"""
from gfa_keras.lazy_imports import lazy_attributes

from gfa_keras.training import (
    CatastrophicOverfittingMonitor,
    CollapseGuard,
    FGSM,
    AdversarialWeightPerturbation,
    NFGSM,
    PGD,
    CyclicLearningRate,
    GFAModel,
    GradAlign,
    GradientFeatureAlignment,
    HardenedModel,
    InputGradientNorm,
    METHODS,
    PenaltyWarmup,
    WeightPerturbationWarmup,
    EpsilonWarmup,
    register_method,
    TradesKL,
    AdversarialMargin,
    MisclassificationAwareKL,
    alignment_penalty,
    fit_resumable,
    gradient_feature_alignment,
    harden,
)

__version__ = "0.1.0"

# Public names whose modules are heavy (cleverhans, Keras Tuner, matplotlib): imported
# on first access.
_LAZY = {
    "evaluate_robustness": "gfa_keras.evaluation",
    "merge_shard_reports": "gfa_keras.evaluation",
    "PRESETS": "gfa_keras.evaluation",
    "RobustnessReport": "gfa_keras.evaluation",
    "RobustAccuracy": "gfa_keras.evaluation",
    "RobustEarlyStopping": "gfa_keras.evaluation",
    "tune": "gfa_keras.tuning",
    "GFAHyperModel": "gfa_keras.tuning",
    "TuningResult": "gfa_keras.tuning",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)

__all__ = [
    "harden",
    "fit_resumable",
    "METHODS",
    "register_method",
    "AdversarialWeightPerturbation",
    "GFAModel",
    "HardenedModel",
    "FGSM",
    "NFGSM",
    "PGD",
    "GradientFeatureAlignment",
    "InputGradientNorm",
    "TradesKL",
    "AdversarialMargin",
    "MisclassificationAwareKL",
    "GradAlign",
    "PenaltyWarmup",
    "WeightPerturbationWarmup",
    "EpsilonWarmup",
    "CyclicLearningRate",
    "CatastrophicOverfittingMonitor",
    "CollapseGuard",
    "RobustAccuracy",
    "RobustEarlyStopping",
    "tune",
    "GFAHyperModel",
    "TuningResult",
    "gradient_feature_alignment",
    "alignment_penalty",
    "evaluate_robustness",
    "merge_shard_reports",
    "PRESETS",
    "RobustnessReport",
    "__version__",
]
