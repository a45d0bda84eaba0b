"""Evaluation: how robust a model is, measured strictly.

- `cascade`: `evaluate_robustness`, the verified per-example worst case over an attack suite,
  block by block (streamed, spread over a strategy's devices, or split into shards).
- `blocks`: the data cut into fixed blocks (arrays or a `tf.data.Dataset`, never read
  whole) and the blocks evaluated one per device of a strategy at a time.
- `shards`: what a shard report carries, and `merge_shard_reports`, which joins shard
  reports into the report of the whole set.
- `presets`: the attack presets and the budget each attack runs with (AutoAttack's
  standard version for `"autoattack"`), and whether a run is that version.
- `state`: the resumable partial results and the hashes that tie them to a run.
- `progress`: progress bars.
- `masking_checks`: the gradient-masking checks and which of them an evaluation runs.
- `report`: `RobustnessReport`, its tables, number formatting and JSON cleaning.
- `callbacks`: the `RobustAccuracy` callback that brings the measurement into `fit`.
- `early_stopping`: `RobustEarlyStopping`, which keeps the epoch `RobustAccuracy` rates best.

May import: `gfa_keras.attacks`, `gfa_keras.threat_model`, `gfa_keras.validation`. Never
training internals, the tuner or the report directory. The names below load on first
use, so `gfa_keras.evaluation.report` can be read without loading the attacks.
"""
from gfa_keras.lazy_imports import lazy_attributes

_LAZY = {
    "evaluate_robustness": "gfa_keras.evaluation.cascade",
    "merge_shard_reports": "gfa_keras.evaluation.shards",
    "PRESETS": "gfa_keras.evaluation.presets",
    "RobustnessReport": "gfa_keras.evaluation.report",
    "RobustAccuracy": "gfa_keras.evaluation.callbacks",
    "RobustEarlyStopping": "gfa_keras.evaluation.early_stopping",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)

__all__ = [
    "evaluate_robustness", "merge_shard_reports", "PRESETS", "RobustnessReport", "RobustAccuracy",
    "RobustEarlyStopping",
]
