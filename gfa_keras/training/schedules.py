"""Schedules for hardened training: warm-ups of a penalty's weight, of adversarial weight
perturbation and of the training radius, and a cyclic learning rate."""
from __future__ import annotations

import keras

from gfa_keras.validation import check_int, check_number, check_positive_int

__all__ = ["PenaltyWarmup", "WeightPerturbationWarmup", "EpsilonWarmup", "CyclicLearningRate", "warmup_value"]


def warmup_value(epoch, target, start_epoch, end_epoch):
    """The weight at `epoch` (0-based): 0 before `start_epoch`, then linear, reaching
    `target` at `end_epoch` and staying there."""
    if epoch < start_epoch:
        return 0.0
    if epoch >= end_epoch:
        return float(target)
    return float(target) * (epoch - start_epoch) / (end_epoch - start_epoch)


class PenaltyWarmup(keras.callbacks.Callback):
    """Warms a regularizer's weight up linearly at the start of each epoch.

    The weight is 0 for epochs before `start_epoch`, grows linearly from 0 at
    `start_epoch` to `target` at `end_epoch`, then stays at `target` (the hybrid
    method's schedule: no gradient penalty while the model first learns).

    Args:
        regularizer: The name of the model's regularizer, e.g. "input_gradient" or "gfa".
        target: The final weight (>= 0).
        start_epoch: First epoch (0-based) with a non-zero weight ramp.
        end_epoch: Epoch at which the weight reaches `target` (>= start_epoch).

    Raises:
        ValueError: For a negative target or epochs, or a ramp that ends before it starts.

    Example:

    >>> warmup = PenaltyWarmup("input_gradient", target=0.1, start_epoch=2, end_epoch=5)
    >>> [round(warmup.value(e), 3) for e in range(7)]
    [0.0, 0.0, 0.0, 0.033, 0.067, 0.1, 0.1]
    """

    def __init__(self, regularizer, target, start_epoch=0, end_epoch=5):
        super().__init__()
        self.regularizer = regularizer
        self.target = check_number("target", target, low=0.0)
        self.start_epoch, self.end_epoch = _check_ramp(start_epoch, end_epoch)

    def value(self, epoch):
        return warmup_value(epoch, self.target, self.start_epoch, self.end_epoch)

    def on_train_begin(self, logs=None):
        weights = getattr(self.model, "penalty_weights", None)
        if weights is None or self.regularizer not in weights:
            known = sorted(weights) if weights else []
            raise ValueError(
                f"PenaltyWarmup needs a hardened model with a regularizer named {self.regularizer!r}. "
                f"Expected one of {known}. Received: model {self.model.name!r}"
            )

    def on_epoch_begin(self, epoch, logs=None):
        self.model.penalty_weights[self.regularizer].assign(self.value(epoch))


def _check_ramp(start_epoch, end_epoch):
    start_epoch = check_int("start_epoch", start_epoch, minimum=0)
    end_epoch = check_int("end_epoch", end_epoch, minimum=0)
    if end_epoch < start_epoch:
        raise ValueError(
            "The warm-up ends before it starts. Expected start_epoch <= end_epoch. "
            f"Received: start_epoch={start_epoch}, end_epoch={end_epoch}"
        )
    return start_epoch, end_epoch


class WeightPerturbationWarmup(keras.callbacks.Callback):
    """Trains without adversarial weight perturbation (AWP) for the first epochs.

    AWP's gamma is 0 for epochs before `start_epoch`, grows linearly to the model's own
    gamma (`harden(..., awp_gamma=...)`) at `end_epoch` (by default the same epoch: a
    switch), and stays there; when `fit` returns, the model is left at its own gamma.
    Wu et al.'s code has the same switch (`--awp-warmup`: 10 epochs for TRADES + AWP).
    Use it when AWP keeps a model from leaving chance at the start: the small CNN (no
    batch norm) trained from scratch with SGD (momentum 0.9, rate 0.03 to 0.1) stayed at
    chance under PGD-5 + AWP (gamma 5e-3) while PGD-5 alone trained, and trained on once AWP
    came in after 100 steps without it (docs/RESULTS.md, session 39).

    Epochs are `fit`'s: to resume a run in several `fit` calls, pass `initial_epoch`.

    Args:
        start_epoch: The epoch (0-based, >= 0) the ramp starts from 0; with the default
            `end_epoch`, the first epoch with AWP fully on.
        end_epoch: The epoch at which gamma reaches the model's (>= start_epoch); default
            `start_epoch`.

    Raises:
        ValueError: For negative epochs or a ramp that ends before it starts; when
            training begins, for a model without AWP.

    Example:

    >>> warmup = WeightPerturbationWarmup(start_epoch=1)
    >>> [warmup.value(e, gamma=5e-3) for e in range(3)]
    [0.0, 0.005, 0.005]
    """

    def __init__(self, start_epoch=1, end_epoch=None):
        super().__init__()
        self.start_epoch, self.end_epoch = _check_ramp(start_epoch, start_epoch if end_epoch is None else end_epoch)

    def value(self, epoch, gamma):
        return warmup_value(epoch, gamma, self.start_epoch, self.end_epoch)

    def _gamma(self):
        return self.model.weight_perturbation.gamma

    def on_train_begin(self, logs=None):
        if getattr(self.model, "weight_perturbation", None) is None:
            raise ValueError(
                "WeightPerturbationWarmup needs a hardened model with adversarial weight perturbation "
                f"(harden(..., awp_gamma=...)). Received: model {self.model.name!r} without one"
            )

    def on_epoch_begin(self, epoch, logs=None):
        self.model.awp_gamma.assign(self.value(epoch, self._gamma()))

    def on_train_end(self, logs=None):
        self.model.awp_gamma.assign(self._gamma())


class EpsilonWarmup(keras.callbacks.Callback):
    """Ramps the training perturbation's radius up from 0 to eps over the first steps.

    At optimizer step t (counted from 0 over the model's whole training) the perturbation
    (PGD, FGSM, N-FGSM, TRADES' inner attack) runs at (t + 1) / ramp times its eps, step
    size and noise, and at its full eps from step `ramp` on, where `ramp` is `steps`, or
    `epochs` times `fit`'s steps per epoch. The step count is the optimizer's, which
    checkpoints save: a run resumed in another `fit` call (with or without `initial_epoch`)
    continues the ramp where it stopped. A curriculum in the sense of Cai et al. 2018 and of
    the ramp interval-bound training uses (Gowal et al. 2018); evaluation, validation and
    the regularizers' own balls (GradAlign's) keep the full eps.

    Args:
        epochs: The ramp's length in epochs (> 0); needs `fit` to know its steps per epoch.
        steps: The ramp's length in optimizer steps (>= 1). Give `epochs` or `steps`, not both.

    Raises:
        ValueError: For neither or both lengths, or one that is not positive; when training
            begins, for a model that trains on no perturbation, or `epochs` without a known
            number of steps per epoch.

    Example:

    >>> warmup = EpsilonWarmup(steps=4)
    >>> [warmup.value(t, ramp=4) for t in range(6)]
    [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    """

    def __init__(self, epochs=None, steps=None):
        super().__init__()
        if (epochs is None) == (steps is None):
            raise ValueError(f"Give EpsilonWarmup the ramp's epochs or its steps, one of them. "
                             f"Received: epochs={epochs!r}, steps={steps!r}")
        self.epochs = None if epochs is None else check_number("epochs", epochs, low=0.0, low_open=True)
        self.steps = None if steps is None else check_positive_int("steps", steps)

    @staticmethod
    def value(step, ramp):
        """The fraction of eps at optimizer step `step` (0-based) of a `ramp`-step ramp."""
        return min(1.0, (step + 1) / ramp)

    def ramp_steps(self):
        """The ramp's length in optimizer steps, for the `fit` under way."""
        if self.steps is not None:
            return self.steps
        per_epoch = self.params.get("steps") if self.params else None
        if not per_epoch:
            raise ValueError(
                "EpsilonWarmup(epochs=...) needs the number of steps per epoch, which fit does not know for "
                "this data (a dataset of unknown length). Pass steps_per_epoch to fit, or give "
                f"EpsilonWarmup(steps=...). Received: epochs={self.epochs}, steps per epoch {per_epoch!r}")
        return max(1, round(self.epochs * per_epoch))

    def on_train_begin(self, logs=None):
        if getattr(self.model, "eps_warmup_steps", None) is None:
            raise ValueError(
                "EpsilonWarmup needs a hardened model that trains on perturbed points (a perturbation such "
                f"as PGD, or TRADES). Received: model {self.model.name!r} without one")
        self.model.eps_warmup_steps.assign(float(self.ramp_steps()))

    def on_train_end(self, logs=None):
        # Back to the full radius: later fits without the callback train at eps.
        self.model.eps_warmup_steps.assign(0.0)


@keras.saving.register_keras_serializable(package="gfa_keras")
class CyclicLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """Triangular cyclic learning rate (Smith 2017): from `min_lr` up to `max_lr` over
    `half_cycle_steps` steps, back down over as many, and again.

    Args:
        min_lr: The lowest learning rate (>= 0).
        max_lr: The highest (>= min_lr).
        half_cycle_steps: Optimizer steps from min to max (>= 1).

    Example:

    >>> schedule = CyclicLearningRate(0.0, 0.2, half_cycle_steps=10)
    >>> [round(float(schedule(s)), 3) for s in (0, 5, 10, 15, 20)]
    [0.0, 0.1, 0.2, 0.1, 0.0]
    """

    def __init__(self, min_lr, max_lr, half_cycle_steps):
        self.min_lr = check_number("min_lr", min_lr, low=0.0)
        self.max_lr = check_number("max_lr", max_lr, low=0.0)
        if self.max_lr < self.min_lr:
            raise ValueError(f"max_lr must be >= min_lr. Received: min_lr={min_lr}, max_lr={max_lr}")
        self.half_cycle_steps = check_positive_int("half_cycle_steps", half_cycle_steps)

    def __call__(self, step):
        position = keras.ops.cast(step, "float32") / self.half_cycle_steps
        # Distance from the nearest even multiple: 0 at cycle start, 1 at the peak.
        rise = 1.0 - keras.ops.abs(keras.ops.mod(position, 2.0) - 1.0)
        return self.min_lr + (self.max_lr - self.min_lr) * rise

    def get_config(self):
        return {"min_lr": self.min_lr, "max_lr": self.max_lr, "half_cycle_steps": self.half_cycle_steps}
