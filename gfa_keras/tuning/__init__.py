"""Tuning: searching a defense's weight with Keras Tuner.

Owns the hypermodel, the objectives, `tune` and its `TuningResult` (`search`).
May import: `gfa_keras.training`, `gfa_keras.evaluation`, `gfa_keras.attacks`,
`gfa_keras.reports.plots`, keras_tuner. Loaded only when used: `import gfa_keras` does
not import Keras Tuner.
"""
from gfa_keras.tuning.search import DEFAULT_PENALTY_RANGE, OBJECTIVES, TUNERS, GFAHyperModel, TuningResult, tune

__all__ = ["tune", "GFAHyperModel", "TuningResult", "OBJECTIVES", "TUNERS", "DEFAULT_PENALTY_RANGE"]
