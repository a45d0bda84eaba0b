"""Training: how a wrapped classifier learns to resist perturbations through `fit`.

Owns the GFA penalty (`alignment`), the layer taps it reads (`taps`), training-time
perturbations (`perturbations`), the regularizers (`regularizers`), the wrapper model
(`model`), adversarial weight perturbation (`weight_perturbation`), the method registry
and `harden` (`methods`), the weight schedules (`schedules`), resumable training
(`checkpointing`: `fit_resumable`, a checkpoint per epoch) and the callbacks that watch
for catastrophic overfitting and collapse (`monitors`).
May import: keras, TensorFlow, `gfa_keras.threat_model`, `gfa_keras.validation`. Never the
attacks, the evaluation or the tuner: training must stay light to import.
"""
from gfa_keras.training.alignment import alignment_penalty, gradient_feature_alignment
from gfa_keras.training.checkpointing import fit_resumable
from gfa_keras.training.methods import (
    DEFAULT_PENALTY_WEIGHTS, METHODS, MethodOptions, MethodSpec, get_method, harden, register_method,
)
from gfa_keras.training.model import GFAModel, HardenedModel
from gfa_keras.training.monitors import CatastrophicOverfittingMonitor, CollapseGuard, TrainingCollapsedError
from gfa_keras.training.perturbations import FGSM, NFGSM, PGD, Perturbation
from gfa_keras.training.regularizers import (
    GradAlign,
    GradientFeatureAlignment,
    InputGradientNorm,
    Regularizer,
    TradesKL,
    AdversarialMargin,
    MisclassificationAwareKL,
)
from gfa_keras.training.schedules import CyclicLearningRate, EpsilonWarmup, PenaltyWarmup, WeightPerturbationWarmup
from gfa_keras.training.weight_perturbation import AdversarialWeightPerturbation

__all__ = [
    "harden", "METHODS", "DEFAULT_PENALTY_WEIGHTS", "MethodSpec", "MethodOptions", "register_method",
    "get_method", "AdversarialWeightPerturbation", "HardenedModel", "GFAModel",
    "Perturbation", "FGSM", "NFGSM", "PGD", "Regularizer", "GradientFeatureAlignment", "InputGradientNorm",
    "TradesKL", "AdversarialMargin", "MisclassificationAwareKL", "GradAlign", "CatastrophicOverfittingMonitor",
    "CollapseGuard", "TrainingCollapsedError",
    "PenaltyWarmup", "WeightPerturbationWarmup", "EpsilonWarmup", "CyclicLearningRate", "fit_resumable",
    "gradient_feature_alignment", "alignment_penalty",
]
