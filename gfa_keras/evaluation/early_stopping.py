"""Robust early stopping: keep the epoch with the best held-out robust accuracy.

Adversarial training overfits robustly (Rice et al. 2020): robust accuracy on held-out
points peaks and then falls while the training loss keeps improving. `RobustEarlyStopping`
measures it after every epoch (through `RobustAccuracy`, so `val_robust_accuracy` is in the
logs) and, when training ends, puts the best epoch's weights back, so that the model `fit`
leaves behind, and the file it optionally saves, is the best one.
"""
from __future__ import annotations

import contextlib
import os

import numpy as np

from gfa_keras.evaluation.callbacks import RobustAccuracy
from gfa_keras.validation import check_int

__all__ = ["RobustEarlyStopping"]


class RobustEarlyStopping(RobustAccuracy):
    """Returns (and optionally saves) the epoch with the best held-out robust accuracy.

    After every epoch it attacks the validation points (by default APGD-CE, 10 steps;
    deterministic, so epochs compare fairly), logs `val_robust_accuracy` and remembers
    the weights of the best epoch; ties keep the earlier one. When training ends those
    weights are restored. With `patience`, training stops after that many epochs without
    improvement. A model with weight averaging (`ema_momentum`) is judged, restored and
    saved with its averaged weights, the ones `fit` leaves in it.

    Args:
        validation_data: `(x, y)` held-out points, never trained on: `x` in
            `[clip_min, clip_max]`, `y` integer labels or one-hot rows. Required.
        eps: The perturbation bound in pixel scale (e.g. 0.1 for Fashion-MNIST, 8/255 for
            CIFAR-10). Required.
        attack: A bounded attack registered in `gfa_keras.attacks.ATTACKS`.
        steps: The attack's iterations.
        patience: Stop after this many epochs without a better robust accuracy; None
            trains all epochs (and still returns the best).
        filepath: If given, the best model is saved there (`.keras`) when training ends.
        **kwargs: Passed to `RobustAccuracy` (`norm`, `num_points`, `batch_size`, `seed`,
            `clip_min`, `clip_max`, `name`, `verbose`).

    Attributes:
        best_epoch: The best epoch, counted from 1 (None before the first evaluation).
        best_value: Its robust accuracy.

    Raises:
        ValueError: Before training starts, for missing validation data or eps, bad
            patience, or anything `RobustAccuracy` rejects.

    Example:

    ```python
    model = gfa_keras.harden(base, method="recommended", eps=0.1)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=30, callbacks=[RobustEarlyStopping((x_val, y_val), eps=0.1)])
    # model now holds the epoch with the best held-out APGD-CE accuracy
    ```
    """

    def __init__(self, validation_data=None, eps=None, attack: str = "apgd_ce", *, steps: int = 10,
                 patience: int | None = None, filepath: str | os.PathLike | None = None, **kwargs):
        if validation_data is None:
            raise ValueError(
                "RobustEarlyStopping chooses the epoch by robust accuracy on held-out points and needs them. "
                "Expected validation_data=(x_val, y_val), points not trained on. Received: validation_data=None"
            )
        if eps is None:
            raise ValueError(
                "RobustEarlyStopping attacks the held-out points within eps and needs it. Expected eps > 0 in "
                "pixel scale, e.g. eps=0.1 for Fashion-MNIST or 8/255 for CIFAR-10. Received: eps=None"
            )
        if "every" in kwargs:
            raise ValueError(f"RobustEarlyStopping evaluates after every epoch. Received: every={kwargs['every']!r}")
        super().__init__(validation_data, attack, eps, steps=steps, **kwargs)
        self.patience = None if patience is None else check_int("patience", patience, minimum=1)
        self.filepath = None if filepath is None else os.fspath(filepath)
        self.best_epoch = None
        self.best_value = None
        self._best_weights = None
        self._waited = 0

    def on_train_begin(self, logs=None):
        self.best_epoch, self.best_value, self._best_weights, self._waited = None, None, None, 0

    def _averaged(self):
        """The model's averaged weights for the duration (nothing without averaging)."""
        averaged = getattr(self.model, "averaged_weights", None)
        return averaged() if averaged is not None else contextlib.nullcontext()

    def on_epoch_end(self, epoch, logs=None):
        logs = {} if logs is None else logs
        with self._averaged():
            super().on_epoch_end(epoch, logs)
        value = logs[self.name]
        if self.best_value is None or value > self.best_value:
            self.best_epoch, self.best_value, self._waited = epoch + 1, value, 0
            # All of the model's weights, the averaged copies included: restoring them
            # gives back exactly that epoch's model.
            self._best_weights = [np.array(w) for w in self.model.get_weights()]
        else:
            self._waited += 1
            if self.patience is not None and self._waited >= self.patience:
                self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self._best_weights is None:
            return
        self.model.set_weights(self._best_weights)
        if self.verbose:
            print(f"RobustEarlyStopping: restored epoch {self.best_epoch} ({self.name} = {self.best_value:.4f})")
        if self.filepath is not None:
            with self._averaged():
                self.model.save(self.filepath)
