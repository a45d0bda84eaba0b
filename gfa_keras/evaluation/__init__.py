"""Evaluation: how robust a model is, measured strictly.

Owns the verified worst-case cascade over an attack suite (`cascade`), the
gradient-masking checks (`masking_checks`), the `RobustnessReport` (`report`) and the
`RobustAccuracy` callback that brings the same measurement into `fit` (`callbacks`).
May import: `gfa_keras.attacks`, `gfa_keras.threat_model`, `gfa_keras.validation`. Never
training internals, the tuner or the report directory.
"""
from gfa_keras.evaluation.callbacks import RobustAccuracy
from gfa_keras.evaluation.cascade import PRESETS, evaluate_robustness
from gfa_keras.evaluation.report import RobustnessReport

__all__ = ["evaluate_robustness", "PRESETS", "RobustnessReport", "RobustAccuracy"]
