"""Keras callbacks that put robustness into the training logs.

`RobustAccuracy` writes `val_robust_accuracy` into the epoch logs, so that
`EarlyStopping`, `ModelCheckpoint`, `ReduceLROnPlateau`, the `History` and Keras
Tuner can all use it like any other validation metric. Keras calls callbacks in
list order and they share one `logs` dict: put `RobustAccuracy` *before* every
callback that reads the value.
"""
from __future__ import annotations

import keras
import numpy as np

from gfa_keras.attacks import ATTACKS, NORMS, get_attack
from gfa_keras.validation import (
    check_choice,
    check_clip_range,
    check_eps,
    check_int,
    check_labelled_data,
    check_positive_int,
)
from gfa_keras.evaluation.cascade import evaluate_robustness

__all__ = ["RobustAccuracy"]


class RobustAccuracy(keras.callbacks.Callback):
    """Writes the robust accuracy on fixed validation points into the epoch logs.

    At the end of every `every`-th epoch (and of the last one) it runs one
    registered attack at `eps` on the given points through
    `gfa_keras.evaluate_robustness`, so every point counts (a misclassified
    clean point is non-robust) and each break is verified there: the adversarial
    point is misclassified, within eps and inside the clip box. The value, a
    fraction in [0, 1], goes into `logs[name]`; epochs in between get no entry.

    `"apgd_ce"` draws its random start from `seed` and is deterministic, so a
    later `evaluate_robustness(model, data, ["apgd_ce"], eps, steps=steps,
    seed=seed)` gives the same number. `"pgd"` (cleverhans) draws it from
    TensorFlow's global random state and varies from run to run.

    Args:
        validation_data: `(x, y)` arrays: `x` in `[clip_min, clip_max]`, `y`
            integer labels or one-hot rows (their argmax is used).
        attack: A bounded attack registered in `gfa_keras.attacks.ATTACKS`,
            e.g. `"apgd_ce"` or `"pgd"`.
        eps: The perturbation bound, in pixel scale (e.g. 0.1 for Fashion-MNIST).
        norm: `"linf"` or `"l2"`.
        steps: The attack's iterations; few keep training fast (robust accuracy
            is then an upper bound: evaluate the final model thoroughly).
        num_points: Use only the first `num_points` examples (a fixed subset);
            `None` uses them all.
        every: Evaluate every `every` epochs (and always after the last one).
        batch_size: Points per attack call.
        seed: The attack's seed.
        clip_min: Lower end of the valid input box.
        clip_max: Upper end of the valid input box.
        name: The log key.
        verbose: 1 prints the value after each evaluation.

    Raises:
        ValueError: For an unknown or minimum-norm attack, an unsupported norm,
            eps not > 0, non-positive `steps`/`every`/`num_points`/`batch_size`,
            or data that is not an `(x, y)` pair of matching length.

    Example:

    ```python
    callbacks = [
        RobustAccuracy((x_val, y_val), "apgd_ce", eps=0.1, steps=10),   # first: it writes
        keras.callbacks.EarlyStopping("val_robust_accuracy", mode="max", patience=3),
        keras.callbacks.ModelCheckpoint("best.keras", "val_robust_accuracy", mode="max",
                                        save_best_only=True),
    ]
    model.fit(x, y, epochs=30, validation_data=(x_val, y_val), callbacks=callbacks)
    ```
    """

    def __init__(self, validation_data, attack: str = "apgd_ce", eps: float = 0.1, norm: str = "linf", *,
                 steps: int = 10, num_points: int | None = None, every: int = 1, batch_size: int = 256,
                 seed: int = 0, clip_min: float = 0.0, clip_max: float = 1.0,
                 name: str = "val_robust_accuracy", verbose: int = 0):
        super().__init__()
        spec = get_attack(attack)
        if spec.kind != "bounded":
            raise ValueError(
                f"RobustAccuracy needs a bounded attack (one that searches the eps-ball). Received: "
                f"attack={attack!r}, a minimum-norm attack. Expected one of "
                f"{sorted(n for n, s in ATTACKS.items() if s.kind == 'bounded')}"
            )
        check_choice("norm", norm, NORMS)
        if norm not in spec.norms:
            raise ValueError(
                f"Attack {spec.name!r} does not support norm={norm!r}. Expected one of {list(spec.norms)}."
            )
        self.eps = check_eps(eps, allow_zero=False)
        self.steps = check_positive_int("steps", steps)
        self.every = check_positive_int("every", every)
        self.batch_size = check_positive_int("batch_size", batch_size)
        if num_points is not None:
            check_positive_int("num_points", num_points)
        self.x, self.y = _labelled_points(validation_data, num_points)
        self.attack, self.norm, self.seed = spec.name, norm, check_int("seed", seed)
        self.clip_min, self.clip_max = check_clip_range(clip_min, clip_max)
        self.name, self.verbose = name, verbose

    def robust_accuracy(self, model) -> float:
        """The fraction of the points that `model` classifies correctly under the attack."""
        report = evaluate_robustness(
            model, (self.x, self.y), [self.attack], eps=self.eps, norm=self.norm,
            batch_size=self.batch_size, steps=self.steps, seed=self.seed, clip_min=self.clip_min,
            clip_max=self.clip_max, checks=False, verbose=0,
        )
        return report.worst_case_accuracy[0]

    def on_epoch_end(self, epoch, logs=None):
        last = epoch + 1 == (self.params or {}).get("epochs")
        if logs is None or not ((epoch + 1) % self.every == 0 or last):
            return
        logs[self.name] = self.robust_accuracy(self.model)
        if self.verbose:
            print(f"Epoch {epoch + 1}: {self.name} = {logs[self.name]:.4f} "
                  f"({self.attack}, eps={self.eps:g}, {len(self.y)} points)")


def _labelled_points(data, num_points):
    """`(x, y)` as a float32 array and integer labels (one-hot rows become their argmax)."""
    x, y = check_labelled_data("validation_data", data)
    if num_points is not None:
        x, y = x[:num_points], y[:num_points]
    return x, y
