"""Callbacks that watch adversarial training for its two known failure modes.

- `CatastrophicOverfittingMonitor`: single-step adversarial training (FGSM) can
  suddenly stop being robust (Wong et al. 2020): within an epoch, accuracy under a
  multi-step attack (PGD) collapses to near zero while accuracy under the single-step
  attack the model trains against rises, because the loss surface has become so
  curved that one gradient step no longer finds a strong point. It also flags any
  collapse of PGD accuracy, which multi-step training can suffer too.
- `CollapseGuard`: a penalty that is too strong (GFA with a large beta) can drive a
  model to a constant prediction: the alignment is high because the model ignores its
  input, and the task loss sits at chance level.

Both measure a fixed held-out batch at the end of each epoch and write what they
measured into the epoch logs, so `History`, `EarlyStopping`, `ModelCheckpoint`,
TensorBoard and Keras Tuner see it. The detector's FGSM and PGD are the training-time
perturbations (`gfa_keras.training.perturbations`): training never imports the attack
suite.
"""
from __future__ import annotations

import math
import warnings

import keras
import numpy as np
import tensorflow as tf

from gfa_keras.training.perturbations import FGSM, PGD
from gfa_keras.validation import check_choice, check_int, check_labelled_data, check_number

__all__ = ["CatastrophicOverfittingMonitor", "CollapseGuard", "TrainingCollapsedError"]

_CHUNK = 256


def _check_held_out(data, caller):
    """(x float32, y, integer labels) from an `(x, y)` pair of arrays, or a ValueError."""
    x, labels = check_labelled_data("data", data)
    y = np.asarray(data[1])  # as given: the loss the guard reports takes one-hot labels as such
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{caller} needs finite inputs. Received: x with NaN or infinite values")
    if labels.min() < 0:
        raise ValueError(f"{caller} needs class labels >= 0. Received: a label {labels.min()}")
    return x, y, labels.astype("int64")  # int64: compared with argmax in the graph


def _classifier(model):
    """The logits model a callback should attack: a `HardenedModel`'s base model, or the model."""
    return getattr(model, "base_model", model)


class CatastrophicOverfittingMonitor(keras.callbacks.Callback):
    """Detects catastrophic overfitting (PGD accuracy on a held-out batch collapsing while
    FGSM accuracy rises) and, more generally, any collapse of robust accuracy.

    At the end of every `every`-th epoch, attacks the held-out batch with FGSM (one
    step of eps from x) and with PGD (`pgd_steps` steps from a random start), both
    from `gfa_keras.training.perturbations`, and logs:

    - `val_fgsm_accuracy`, `val_pgd_accuracy`: accuracy under each;
    - `catastrophic_overfitting`: 1.0 when PGD accuracy fell by at least `min_drop`
      below its best so far while FGSM accuracy did not fall below its value at that
      best epoch (the single-step attack has stopped finding the points PGD finds);
    - `robust_collapse`: 1.0 when PGD accuracy fell by at least `min_drop` below its
      best, whatever FGSM did. Multi-step training can collapse too: PGD-3 training
      with AWP fell from 0.75 to 0.00 PGD-10 accuracy in 3 epochs while FGSM accuracy
      halved (docs/RESULTS.md), which the first rule alone does not flag.

    On the first epoch of either kind a `UserWarning` names the figures; with
    `on_overfitting="stop"` training also stops and the weights of the best-PGD epoch
    are restored (Wong et al.'s early stopping).

    Args:
        data: `(x, y)` arrays: a held-out batch (a few hundred points; integer or
            one-hot labels). Not the training batch: overfitting shows on unseen points.
        eps: The threat model's radius in pixel scale.
        norm: "linf" or "l2".
        pgd_steps: PGD's steps (its step size is 2.5 eps / steps).
        min_drop: How far (absolute accuracy, in (0, 1]) PGD accuracy must fall below
            its best to count as a collapse; Wong et al. used 0.2.
        on_overfitting: "warn" (log and warn) or "stop" (also stop training and restore
            the best-PGD weights).
        every: Measure every `every` epochs (the attacks cost `pgd_steps + 1` gradient
            passes over the batch).
        pgd_random_start: Start PGD from a random point of the ball (False makes the
            measurement deterministic).
        clip_min, clip_max: The valid pixel range.

    Attributes:
        history: One dict per measured epoch (`epoch`, `fgsm_accuracy`, `pgd_accuracy`,
            `catastrophic_overfitting`, `robust_collapse`).
        detected_epoch: The first epoch (0-based) at which catastrophic overfitting was
            detected, or None.
        collapsed_epoch: The first epoch (0-based) at which robust accuracy collapsed
            (of either kind), or None.

    Raises:
        ValueError: For a malformed held-out batch, eps <= 0, an unknown norm,
            `pgd_steps` or `every` < 1, `min_drop` outside (0, 1], or an unknown
            `on_overfitting`.

    Example:

    ```python
    model = harden(base, method="fgsm_rs", eps=8 / 255)
    monitor = CatastrophicOverfittingMonitor((x_val[:512], y_val[:512]), eps=8 / 255)
    model.fit(x, y, epochs=30, callbacks=[monitor])
    # history.history["val_pgd_accuracy"], ["catastrophic_overfitting"], ["robust_collapse"]
    ```
    """

    def __init__(self, data, eps, norm="linf", pgd_steps=10, min_drop=0.2, on_overfitting="warn", every=1,
                 pgd_random_start=True, clip_min=0.0, clip_max=1.0):
        super().__init__()
        self.x, self.y, self.labels = _check_held_out(data, "CatastrophicOverfittingMonitor")
        self.fgsm = FGSM(eps, norm=norm, clip_min=clip_min, clip_max=clip_max)
        self.pgd = PGD(eps, steps=check_int("pgd_steps", pgd_steps, minimum=1), norm=norm,
                       random_start=bool(pgd_random_start), clip_min=clip_min, clip_max=clip_max)
        self.min_drop = check_number("min_drop", min_drop, low=0.0, high=1.0, low_open=True)
        self.on_overfitting = check_choice("on_overfitting", on_overfitting, ("warn", "stop"))
        self.every = check_int("every", every, minimum=1)
        self.history = []
        self.detected_epoch = None
        self.collapsed_epoch = None
        self._best = None  # (pgd_accuracy, fgsm_accuracy, epoch, weights)
        self._correct = None

    def on_train_begin(self, logs=None):
        self.history, self.detected_epoch, self.collapsed_epoch, self._best = [], None, None, None
        classifier = _classifier(self.model)
        fgsm, pgd = self.fgsm, self.pgd

        @tf.function
        def correct(x, y, labels):
            def hits(points):
                predictions = tf.argmax(classifier(points, training=False), axis=-1)
                return tf.reduce_sum(tf.cast(tf.equal(predictions, labels), tf.int64))

            return hits(fgsm(classifier, x, y)), hits(pgd(classifier, x, y))

        self._correct = correct

    def measure(self):
        """(FGSM accuracy, PGD accuracy) of the model on the held-out batch now."""
        if self._correct is None:
            self.on_train_begin()
        counts = np.zeros(2)
        for start in range(0, len(self.x), _CHUNK):
            end = start + _CHUNK
            counts += [int(c) for c in self._correct(tf.constant(self.x[start:end]), tf.constant(self.y[start:end]),
                                                     tf.constant(self.labels[start:end]))]
        return tuple(float(c) / len(self.x) for c in counts)

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        fgsm_accuracy, pgd_accuracy = self.measure()
        collapsed = overfitting = False
        if self._best is not None:
            best_pgd, fgsm_at_best, best_epoch, _ = self._best
            collapsed = best_pgd - pgd_accuracy >= self.min_drop
            overfitting = collapsed and fgsm_accuracy >= fgsm_at_best
        if self._best is None or pgd_accuracy > self._best[0]:
            weights = self.model.get_weights() if self.on_overfitting == "stop" else None
            self._best = (pgd_accuracy, fgsm_accuracy, epoch, weights)
        figures = {"catastrophic_overfitting": float(overfitting), "robust_collapse": float(collapsed)}
        self.history.append({"epoch": epoch, "fgsm_accuracy": fgsm_accuracy, "pgd_accuracy": pgd_accuracy,
                             **figures})
        if logs is not None:
            logs.update(val_fgsm_accuracy=fgsm_accuracy, val_pgd_accuracy=pgd_accuracy, **figures)
        if not collapsed:
            return
        first_collapse = self.collapsed_epoch is None
        first_overfitting = overfitting and self.detected_epoch is None
        if first_collapse:
            self.collapsed_epoch = epoch
        if first_overfitting:
            self.detected_epoch = epoch
        best_pgd, fgsm_at_best, best_epoch, weights = self._best
        figures_text = (
            f"accuracy under PGD-{self.pgd.steps} on the held-out batch fell to {pgd_accuracy:.1%} from "
            f"{best_pgd:.1%} (epoch {best_epoch + 1}) while accuracy under FGSM is {fgsm_accuracy:.1%} "
            f"(was {fgsm_at_best:.1%})")
        if overfitting:
            message = (
                f"Catastrophic overfitting at epoch {epoch + 1}: {figures_text}: single-step training no longer "
                "finds the points PGD finds. Use N-FGSM or add GradAlign (harden(method='n_fgsm' or "
                "'n_fgsm_gradalign')), a smaller step, or PGD training.")
        else:
            message = (
                f"Robust accuracy collapsed at epoch {epoch + 1}: {figures_text}. FGSM accuracy fell too, so this "
                "is not single-step catastrophic overfitting: the model is losing robustness to every attack. "
                "Keep the best epoch (RobustEarlyStopping, or on_overfitting='stop'), or train with a stronger "
                "attack (more PGD steps) or without weight perturbation.")
        if self.on_overfitting == "stop":
            self.model.set_weights(weights)
            self.model.stop_training = True
            message += f" Training stopped; the weights of epoch {best_epoch + 1} are restored."
        if first_collapse or first_overfitting or self.on_overfitting == "stop":
            warnings.warn(message, stacklevel=2)


class TrainingCollapsedError(RuntimeError):
    """Training drove the model to a constant prediction (see `CollapseGuard`).

    Attributes:
        epoch: The epoch (0-based) at which the collapse was confirmed.
        top_class: The class most held-out predictions fall in.
        top_class_share: The share of held-out predictions in it.
        accuracy: The held-out accuracy.
        task_loss: The task loss on the held-out batch.
        chance_loss: The loss of the best constant prediction on it.
        penalty_weights: `{regularizer name: weight}` at that epoch.
    """

    def __init__(self, message, epoch, top_class, top_class_share, accuracy, task_loss, chance_loss,
                 penalty_weights):
        super().__init__(message)
        self.epoch = epoch
        self.top_class = top_class
        self.top_class_share = top_class_share
        self.accuracy = accuracy
        self.task_loss = task_loss
        self.chance_loss = chance_loss
        self.penalty_weights = penalty_weights


class CollapseGuard(keras.callbacks.Callback):
    """Stops training that has collapsed to a constant prediction, naming the penalty weight.

    A collapse (GFA with a large beta, docs/RESULTS.md: 10% clean accuracy on CIFAR-10
    at beta 0.05) shows on a held-out batch, measured at each epoch end, as:

    - predictions concentrated on one class: its share is >= `max_class_share`
      (default one half: with 10 classes a healthy model puts about a tenth in each);
    - the task loss at (or above) chance: at least `(1 - loss_tolerance)` times the
      loss of the best constant prediction for those labels (for cross-entropy the
      entropy of the label frequencies, log(10) for 10 balanced classes; for MSE on
      one-hot labels their variance, 0.09).

    A model can look like that after its first few steps, so both must hold for
    `patience` consecutive epochs (default 2: stuck, not slow to start). Then the guard
    raises a `TrainingCollapsedError` whose message names the penalty weights (beta),
    or with `on_collapse="stop"` warns and stops training. It logs
    `val_top_class_share`, `val_task_loss_to_chance` (the ratio of the two losses) and
    `val_accuracy_over_chance` (accuracy minus the most frequent label's share) every epoch.

    Args:
        data: `(x, y)` arrays of held-out points, labelled as for the compiled loss.
        max_class_share: In (0, 1]; the share of one class that counts as concentrated.
        loss_tolerance: In [0, 1); how close to chance the loss must be.
        patience: Consecutive collapsed epochs before acting (>= 1).
        loss: The task loss (a Keras loss object, name or function); default the
            model's compiled loss.
        on_collapse: "raise" (a `TrainingCollapsedError` out of `fit`) or "stop".

    Raises:
        ValueError: For a malformed held-out batch or out-of-range settings; at the
            start of training, for a model compiled with several losses and no `loss`.

    Example:

    ```python
    model = harden(base, layers=3, penalty_weight=0.3)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=10, callbacks=[CollapseGuard((x_val[:1000], y_val[:1000]))])
    # TrainingCollapsedError: Training collapsed to a constant prediction: ... penalty_weight=0.3 ...
    ```
    """

    def __init__(self, data, max_class_share=0.5, loss_tolerance=0.1, patience=2, loss=None, on_collapse="raise"):
        super().__init__()
        self.x, self.y, self.labels = _check_held_out(data, "CollapseGuard")
        self.max_class_share = check_number("max_class_share", max_class_share, low=0.0, high=1.0, low_open=True)
        self.loss_tolerance = check_number("loss_tolerance", loss_tolerance, low=0.0, high=1.0, high_open=True)
        self.patience = check_int("patience", patience, minimum=1)
        self.on_collapse = check_choice("on_collapse", on_collapse, ("raise", "stop"))
        self.loss = loss
        self.chance_loss = None
        self.chance_accuracy = float(np.max(np.bincount(self.labels))) / len(self.labels)
        self.collapsed_epochs = 0
        self._loss_fn = None

    def on_train_begin(self, logs=None):
        self.collapsed_epochs = 0
        loss = self.loss if self.loss is not None else getattr(self.model, "loss", None)
        if isinstance(loss, str):
            loss = keras.losses.get(loss)
        if not callable(loss):
            raise ValueError(
                "CollapseGuard compares the task loss with chance and needs one loss. Expected a model compiled "
                f"with a single loss, or CollapseGuard(..., loss=...). Received: loss={loss!r}"
            )
        self._loss_fn = loss
        self.chance_loss = self._chance_loss()

    def _mean_loss(self, outputs):
        return float(np.mean(keras.ops.convert_to_numpy(self._loss_fn(self.y, outputs))))

    def _chance_loss(self):
        """The loss of the best constant prediction: the label frequencies as probabilities,
        or their logarithm as logits, whichever the loss scores lower."""
        # From a prediction rather than `model.outputs`, which a subclassed model lacks.
        classes = int(keras.ops.shape(_classifier(self.model)(self.x[:1], training=False))[-1])
        prior = np.bincount(self.labels, minlength=classes)[:classes] / len(self.labels)
        candidates = [np.tile(prior, (len(self.x), 1)), np.tile(np.log(np.maximum(prior, 1e-12)), (len(self.x), 1))]
        return min(self._mean_loss(c.astype("float32")) for c in candidates)

    def _predict(self):
        classifier = _classifier(self.model)
        return np.concatenate([keras.ops.convert_to_numpy(classifier(self.x[s:s + _CHUNK], training=False))
                               for s in range(0, len(self.x), _CHUNK)]).astype("float32")

    def _penalty_weights(self):
        weights = getattr(self.model, "penalty_weights", {})
        return {name: float(keras.ops.convert_to_numpy(w)) for name, w in weights.items()}

    def on_epoch_end(self, epoch, logs=None):
        outputs = self._predict()
        predictions = np.argmax(outputs, axis=-1)
        counts = np.bincount(predictions, minlength=outputs.shape[-1])
        top_class = int(np.argmax(counts))
        share = float(counts[top_class]) / len(predictions)
        task_loss = self._mean_loss(outputs)
        ratio = task_loss / self.chance_loss if self.chance_loss > 0 else math.inf
        accuracy = float(np.mean(predictions == self.labels))
        over_chance = accuracy - self.chance_accuracy
        if logs is not None:
            logs["val_top_class_share"] = share
            logs["val_task_loss_to_chance"] = ratio
            logs["val_accuracy_over_chance"] = over_chance
        collapsed = share >= self.max_class_share and task_loss >= (1.0 - self.loss_tolerance) * self.chance_loss
        self.collapsed_epochs = self.collapsed_epochs + 1 if collapsed else 0
        if self.collapsed_epochs < self.patience:
            return
        weights = self._penalty_weights()
        message = (
            f"Training collapsed to a constant prediction: for {self.collapsed_epochs} epochs up to epoch "
            f"{epoch + 1}, most held-out predictions fell in one class ({share:.1%} of {len(predictions)} in class "
            f"{top_class}; accuracy {accuracy:.1%}) and the task loss {task_loss:.4g} stayed at chance level "
            f"({self.chance_loss:.4g}, the loss of the best constant prediction). " + _blame(weights)
        )
        if self.on_collapse == "stop":
            warnings.warn(message, stacklevel=2)
            self.model.stop_training = True
            return
        raise TrainingCollapsedError(message, epoch, top_class, share, accuracy, task_loss, self.chance_loss, weights)


def _blame(weights):
    """The sentence that names the penalty weights and what to do."""
    if not weights:
        return "The model has no penalty; check the learning rate and the data."
    if "gfa" in weights:
        beta = weights["gfa"]
        return (f"GFA's beta (penalty_weight={beta:g}) is large enough for the alignment to win by ignoring the "
                f"input. Expected a smaller beta, e.g. penalty_weight={beta / 10:g}.")
    named = ", ".join(f"{name} weight={value:g}" for name, value in weights.items())
    return f"The penalties may dominate the task loss ({named}). Expected smaller weights, e.g. a tenth."
