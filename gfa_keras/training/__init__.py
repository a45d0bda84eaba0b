"""Training: how a wrapped classifier learns to resist perturbations through `fit`.

Owns the GFA penalty (`alignment`), the layer taps it reads (`taps`), training-time
perturbations (`perturbations`), the regularizers (`regularizers`), the wrapper model
(`model`), the named presets (`methods`) and the weight schedules (`schedules`).
May import: keras, TensorFlow, `gfa_keras.threat_model`, `gfa_keras.validation`. Never the
attacks, the evaluation or the tuner: training must stay light to import.
"""
from gfa_keras.training.alignment import alignment_penalty, gradient_feature_alignment
from gfa_keras.training.methods import DEFAULT_PENALTY_WEIGHTS, METHODS, harden
from gfa_keras.training.model import GFAModel, HardenedModel
from gfa_keras.training.perturbations import FGSM, NFGSM, PGD, Perturbation
from gfa_keras.training.regularizers import (
    GradAlign,
    GradientFeatureAlignment,
    InputGradientNorm,
    Regularizer,
    TradesKL,
)
from gfa_keras.training.schedules import CyclicLearningRate, PenaltyWarmup

__all__ = [
    "harden", "METHODS", "DEFAULT_PENALTY_WEIGHTS", "HardenedModel", "GFAModel",
    "Perturbation", "FGSM", "NFGSM", "PGD", "Regularizer", "GradientFeatureAlignment", "InputGradientNorm",
    "TradesKL", "GradAlign", "PenaltyWarmup", "CyclicLearningRate", "gradient_feature_alignment", "alignment_penalty",
]
