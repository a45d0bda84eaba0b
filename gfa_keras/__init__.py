"""gfa_keras: harden Keras 3 classifiers against adversarial examples and measure how
robust they are.

- `harden(model, layers=3)`: layer-wise Gradient-Feature Alignment (and, with
  `method=`, PGD adversarial training, TRADES, DataGrad, the hybrid, GFA + PGD).
- `HardenedModel(base, perturbation=..., regularizers=[...])`: compose your own.
- `gradient_feature_alignment`, `alignment_penalty`: the penalty for custom loops.
- `evaluate_robustness(model, (x, y), "autoattack", eps=[...])`: the worst case over an
  attack cascade on every test point, as a `RobustnessReport` with masking checks.
- `tune(model, x, y, validation_data=...)`: the beta search with Keras Tuner;
  `RobustAccuracy`: a callback that logs `val_robust_accuracy`.
"""
from gfa_keras.alignment import alignment_penalty, gradient_feature_alignment
from gfa_keras.callbacks import RobustAccuracy
from gfa_keras.evaluation import PRESETS, evaluate_robustness
from gfa_keras.methods import METHODS, harden
from gfa_keras.model import GFAModel, HardenedModel
from gfa_keras.perturbations import FGSM, PGD
from gfa_keras.regularizers import GradientFeatureAlignment, InputGradientNorm, TradesKL
from gfa_keras.report import RobustnessReport
from gfa_keras.schedules import CyclicLearningRate, PenaltyWarmup
from gfa_keras.tuning import GFAHyperModel, TuningResult, tune

__version__ = "0.1.0"

__all__ = [
    "harden",
    "METHODS",
    "GFAModel",
    "HardenedModel",
    "FGSM",
    "PGD",
    "GradientFeatureAlignment",
    "InputGradientNorm",
    "TradesKL",
    "PenaltyWarmup",
    "CyclicLearningRate",
    "RobustAccuracy",
    "tune",
    "GFAHyperModel",
    "TuningResult",
    "gradient_feature_alignment",
    "alignment_penalty",
    "evaluate_robustness",
    "PRESETS",
    "RobustnessReport",
    "__version__",
]
