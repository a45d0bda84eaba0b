"""Searching beta (`penalty_weight`) with Keras Tuner.

`GFAHyperModel` is a `keras_tuner.HyperModel`: `build(hp)` wraps a fresh base
classifier with `harden(...)` for the sampled values, and `fit(hp, model, ...)`
trains it with callbacks that write the objectives into the epoch logs, so any
Keras Tuner tuner (and its distributed mode) works with it unchanged. `tune()` is
the one call: it checks the settings before any trial runs, searches, checks that
trials completed, and returns a `TuningResult` (best values and model, every
trial's clean and robust accuracy, the Pareto front of the trade-off).

Objectives (log keys, computed at the end of each epoch on the validation data):

| objective           | log key               | direction | value |
|---------------------|-----------------------|-----------|-------|
| `"clean_accuracy"`  | `val_clean_accuracy`  | max | accuracy on all validation points |
| `"robust_accuracy"` | `val_robust_accuracy` | max | accuracy under `attack` at `eps` (`RobustAccuracy`) |
| `"tradeoff"`        | `val_tradeoff`        | max | (1 - w) * clean + w * robust, w = `tradeoff_weight` |
| `"alignment"`       | `val_alignment_gap`   | min | see below |

`val_alignment_gap = abs(mean_l val_alignment_l - target)
                     + lambda * max(0, val_task_loss / reference - 1)`

In `"alignment"`, target is `alignment_target` (0.93, the paper's), lambda is
`task_loss_weight` and reference is `reference_task_loss`: the best validation
task loss of the same network trained plainly (measured once by `tune()` when not
given). Each trial reports its best epoch for the objective; that epoch's weights
are the ones `best_model` holds.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import math
import os
import warnings

import keras
import keras_tuner as kt
import numpy as np

from gfa_keras.reports import plots
from gfa_keras.attacks import ATTACKS, NORMS, get_attack
from gfa_keras.validation import (
    check_choice,
    check_eps,
    check_int,
    check_labelled_data,
    check_number,
    check_positive_int,
)
from gfa_keras.evaluation.callbacks import RobustAccuracy
from gfa_keras.evaluation.report import format_number, markdown_table
from gfa_keras.training.methods import DEFAULT_PENALTY_WEIGHTS, METHODS, harden
from gfa_keras.training.model import check_base_model
from gfa_keras.training.monitors import CollapseGuard, TrainingCollapsedError

__all__ = ["OBJECTIVES", "TUNERS", "DEFAULT_PENALTY_RANGE", "GFAHyperModel", "TuningResult", "tune"]

OBJECTIVES = {
    "clean_accuracy": ("val_clean_accuracy", "max"),
    "robust_accuracy": ("val_robust_accuracy", "max"),
    "tradeoff": ("val_tradeoff", "max"),
    "alignment": ("val_alignment_gap", "min"),
}
TUNERS = ("random", "bayesian", "hyperband")
# At initialisation the DEEP penalty is about 3 (cosines near 0); beta = 1 already
# ruins training on the digits and useful values were 1e-3..3e-2.
DEFAULT_PENALTY_RANGE = (1e-4, 1.0)


def _weighted_methods():
    """The registered methods with a penalty weight to tune (read when used, so that
    methods registered later count)."""
    return tuple(DEFAULT_PENALTY_WEIGHTS)


def _aligned_methods():
    """The registered methods that log the GFA alignment."""
    return tuple(name for name, spec in METHODS.items() if spec.aligned)


_NEEDS_ATTACK = ("robust_accuracy", "tradeoff")
# Validation points the collapse guard predicts on after each epoch.
_COLLAPSE_POINTS = 1000


class GFAHyperModel(kt.HyperModel):
    """A Keras Tuner hypermodel over `harden(...)`: beta on a log scale, taps, method.

    Hyperparameters: `penalty_weight` (Float, log sampling over the range; only
    for methods that use it), `layers` (Choice, when more than one value is given;
    only for "gfa" and "gfa_pgd") and `method` (Choice, when more than one).

    Args:
        base_model: A function `() -> keras.Model` returning a fresh, built
            classifier with logits, or a built Functional/Sequential model that is
            cloned with `keras.models.clone_model` (new weights) for each trial.
        objective: A name in `OBJECTIVES` (see the module docstring), or a
            `keras_tuner.Objective` on any logged metric, e.g.
            `keras_tuner.Objective("val_loss", "min")`.
        penalty_weight: `(low, high)` with `0 < low < high`, searched on a log scale.
        layers: The `layers` values to try (1 = FIRST, 3 = DEEP).
        methods: The `harden` methods to try.
        method_options: Extra `harden` arguments, e.g. `{"eps": 0.1, "steps": 7}`
            for the adversarial methods.
        optimizer: An optimizer name, a function returning a fresh optimizer, or an
            optimizer (copied for each trial).
        loss: The compiled loss; default sparse cross-entropy on logits.
        metrics: The compiled metrics.
        attack: The attack of `val_robust_accuracy`, a bounded attack registered in
            `gfa_keras.attacks.ATTACKS` (`"apgd_ce"` is deterministic).
        eps: Its bound in pixel scale; required by the robust and trade-off
            objectives. `None` with another objective: no robust accuracy.
        norm: `"linf"` or `"l2"`.
        attack_steps: The attack's iterations.
        robust_points: Attack only the first `robust_points` validation points;
            `None`: all of them.
        seed: The attack's seed.
        tradeoff_weight: w in `"tradeoff"`, in [0, 1].
        alignment_target: The target of `"alignment"`, in [-1, 1].
        task_loss_weight: lambda in `"alignment"`, >= 0.
        reference_task_loss: The reference of `"alignment"`, > 0; `tune()`
            measures it when `None`.
        name: The hypermodel's name.

    Raises:
        ValueError: For an empty or inverted range, an unknown objective, method or
            attack, an objective that needs `eps` without it, or `"alignment"` with
            a method that has no alignment (checked here, before any trial).

    Example:

    ```python
    hypermodel = GFAHyperModel(make_mlp, objective="tradeoff", eps=0.1, layers=(1, 3))
    tuner = keras_tuner.RandomSearch(hypermodel, objective=hypermodel.keras_tuner_objective,
                                     max_trials=10, directory="search")
    tuner.search(x, y, validation_data=(x_val, y_val), epochs=10)
    ```
    """

    def __init__(self, base_model, *, objective="tradeoff", penalty_weight=DEFAULT_PENALTY_RANGE,
                 layers=(3,), methods=("gfa",), method_options: dict | None = None, optimizer="adam",
                 loss=None, metrics=("accuracy",), attack: str = "apgd_ce", eps: float | None = None,
                 norm: str = "linf", attack_steps: int = 10, robust_points: int | None = None, seed: int = 0,
                 tradeoff_weight: float = 0.5, alignment_target: float = 0.93, task_loss_weight: float = 1.0,
                 reference_task_loss: float | None = None, name: str | None = None):
        super().__init__(name=name or "gfa_hypermodel")
        if not (isinstance(base_model, keras.Model) or callable(base_model)):
            raise ValueError(
                "base_model must be a function returning a fresh built keras.Model, or a built keras.Model "
                f"to clone. Received: base_model of type {type(base_model).__name__}"
            )
        if isinstance(base_model, keras.Model):
            check_base_model(base_model)
        self.base_model = base_model
        self.objective_name, self.direction = _resolve_objective(objective)
        self.objective = objective
        named = objective if isinstance(objective, str) else None
        self.penalty_range = _check_range(penalty_weight)
        self.layers = _check_choices("layers", layers, lambda v: isinstance(v, int) and not isinstance(v, bool)
                                     and v >= 1, "positive integers (1 = FIRST, 3 = DEEP)")
        self.methods = _check_choices("methods", methods, lambda v: v in METHODS, f"names in {list(METHODS)}")
        self.method_options = dict(method_options or {})
        self.optimizer, self.loss, self.metrics = optimizer, loss, list(metrics)
        self.attack = _check_attack(attack, norm)
        self.eps = None if eps is None else check_eps(eps, allow_zero=False)
        self.norm, self.robust_points = norm, None
        self.attack_steps = check_positive_int("attack_steps", attack_steps)
        if robust_points is not None:
            self.robust_points = check_positive_int("robust_points", robust_points)
        self.seed = check_int("seed", seed)
        self.tradeoff_weight = check_number("tradeoff_weight", tradeoff_weight, 0.0, 1.0)
        self.alignment_target = check_number("alignment_target", alignment_target, -1.0, 1.0)
        self.task_loss_weight = check_number("task_loss_weight", task_loss_weight, 0.0)
        self.reference_task_loss = None
        if reference_task_loss is not None:
            self.reference_task_loss = check_number("reference_task_loss", reference_task_loss, 0.0,
                                                    low_open=True)
        if named in _NEEDS_ATTACK and self.eps is None:
            raise ValueError(
                f"objective={objective!r} needs the robust accuracy, which needs an attack bound. Expected "
                "eps > 0 in pixel scale, e.g. eps=0.1 for Fashion-MNIST or 8/255 for CIFAR-10. Received: eps=None"
            )
        unaligned = [m for m in self.methods if m not in _aligned_methods()]
        if named == "alignment" and unaligned:
            raise ValueError(
                f"objective='alignment' needs the alignment, which only {list(_aligned_methods())} log. "
                f"Received: methods={list(self.methods)}"
            )

    @property
    def keras_tuner_objective(self) -> kt.Objective:
        """The objective to give a Keras Tuner tuner."""
        return kt.Objective(self.objective_name, self.direction)

    def build(self, hp) -> keras.Model:
        """A fresh base model hardened with the values `hp` samples, compiled."""
        method = hp.Choice("method", list(self.methods)) if len(self.methods) > 1 else self.methods[0]
        weighted = [m for m in self.methods if m in _weighted_methods()]
        with _scope(hp, weighted, self.methods):
            beta = hp.Float("penalty_weight", *self.penalty_range, sampling="log") if weighted else None
        aligned = [m for m in self.methods if m in _aligned_methods()]
        layers = self.layers[0]
        if len(self.layers) > 1 and aligned:
            with _scope(hp, aligned, self.methods):
                layers = hp.Choice("layers", list(self.layers)) or self.layers[0]
        return self.build_model(method, beta, layers)

    def build_model(self, method: str, penalty_weight: float | None, layers: int) -> keras.Model:
        """A fresh base model hardened with these values and compiled (no hyperparameters)."""
        model = harden(self._fresh_base_model(), layers=layers, penalty_weight=penalty_weight, method=method,
                       **self.method_options)
        loss = self.loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model.compile(optimizer=self._fresh_optimizer(), loss=loss, metrics=list(self.metrics))
        return model

    def fit(self, hp, model, *args, validation_data=None, callbacks=None, **kwargs):
        """Trains `model` with the objective callbacks first; returns the `History`.

        Raises:
            keras_tuner.errors.FailedTrialError: When the loss becomes NaN or infinite, or
                when training collapses to a constant prediction (`CollapseGuard` on the
                first 1,000 validation points): the trial fails, the search goes on.
            keras_tuner.errors.FatalValueError: Without `validation_data`, or for the
                alignment objective without a reference task loss (the search stops).
        """
        try:
            x_val, y_val = _validation_arrays(validation_data)
        except ValueError as e:
            raise kt.errors.FatalValueError(str(e)) from None
        if self.objective_name == OBJECTIVES["alignment"][0] and self.reference_task_loss is None:
            raise kt.errors.FatalValueError(
                "The 'alignment' objective needs a reference task loss. Expected reference_task_loss=... or a "
                "call to measure_reference_task_loss(...) before the search (tune() does it). Received: None"
            )
        ours = [_FailOnDivergence(), CollapseGuard((x_val[:_COLLAPSE_POINTS], y_val[:_COLLAPSE_POINTS]))]
        if self.eps is not None:
            ours.append(RobustAccuracy((x_val, y_val), self.attack, self.eps, self.norm, steps=self.attack_steps,
                                       num_points=self.robust_points, seed=self.seed))
        ours.append(_TrialObjectives(self, x_val, y_val))
        # Keras runs callbacks in list order: ours write the objectives before the
        # user's, Keras Tuner's and its checkpoint read them.
        try:
            return model.fit(*args, validation_data=validation_data, callbacks=ours + list(callbacks or []),
                             **kwargs)
        except TrainingCollapsedError as e:
            # A collapsed model scores chance on every objective; failing the trial keeps
            # it out of the ranking and its message (naming beta) in the summary.
            raise kt.errors.FailedTrialError(str(e)) from e

    def logged_metrics(self, method: str, validation_data, batch_size: int = 32) -> list[str]:
        """The epoch-log keys a trial of `method` reports, from one validation batch (no training).

        Builds the model for each `layers` value too, so that a bad one fails here.
        """
        x_val, y_val = _validation_arrays(validation_data)
        beta = self.penalty_range[0] if method in _weighted_methods() else None
        for layers in self.layers[1:] if method in _aligned_methods() else ():
            self.build_model(method, beta, layers)
        model = self.build_model(method, beta, self.layers[0])
        n = min(len(x_val), batch_size)
        keys = list(model.evaluate(x_val[:n], y_val[:n], batch_size=n, verbose=0, return_dict=True))
        keys += [f"val_{k}" for k in keys] + ["val_clean_accuracy"]
        if self.eps is not None:
            keys += ["val_robust_accuracy", "val_tradeoff"]
        if method in _aligned_methods():
            keys.append("val_alignment_gap")
        return sorted(set(keys))

    def measure_reference_task_loss(self, *args, validation_data=None, **fit_kwargs) -> float:
        """Trains the base model plainly (`method="standard"`) and returns its best validation task loss."""
        model = self.build_model("standard", None, self.layers[0])
        history = model.fit(*args, validation_data=validation_data, **fit_kwargs)
        losses = [v for v in history.history.get("val_task_loss", []) if math.isfinite(v)]
        if not losses:
            raise kt.errors.FatalRuntimeError(
                "Plain training gave no finite validation task loss, so the 'alignment' objective has no "
                "reference. Pass reference_task_loss=... or fix the training settings."
            )
        self.reference_task_loss = float(min(losses))
        return self.reference_task_loss

    def _fresh_base_model(self):
        if isinstance(self.base_model, keras.Model):
            try:
                model = keras.models.clone_model(self.base_model)
            except Exception as e:
                raise kt.errors.FatalValueError(
                    f"Could not clone base_model '{self.base_model.name}' ({e}). Expected a Functional or "
                    "Sequential model, or pass a function that returns a fresh model."
                ) from e
        else:
            model = self.base_model()
        try:
            check_base_model(model)
        except ValueError as e:
            raise kt.errors.FatalValueError(f"base_model() must return a built keras.Model. {e}") from None
        return model

    def _fresh_optimizer(self):
        if isinstance(self.optimizer, str):
            return keras.optimizers.get(self.optimizer)
        if isinstance(self.optimizer, keras.optimizers.Optimizer):
            return keras.optimizers.deserialize(keras.optimizers.serialize(self.optimizer))
        if callable(self.optimizer):
            return self.optimizer()
        raise kt.errors.FatalValueError(
            "optimizer must be a name, a function returning an optimizer, or an optimizer. "
            f"Received: optimizer={self.optimizer!r}"
        )


class _FailOnDivergence(keras.callbacks.Callback):
    """Fails the trial (not the search) as soon as the training loss is not finite."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise kt.errors.FailedTrialError(
                f"Training diverged: loss={float(loss)} at batch {batch}. Expected a finite loss; a smaller "
                "penalty_weight or learning rate usually helps."
            )


class _TrialObjectives(keras.callbacks.Callback):
    """Writes val_clean_accuracy, val_tradeoff and val_alignment_gap into the epoch logs."""

    def __init__(self, hypermodel, x_val, y_val):
        super().__init__()
        self.hypermodel = hypermodel
        self.x_val = np.asarray(x_val, dtype="float32")
        y_val = np.asarray(y_val)
        self.labels = np.argmax(y_val, axis=-1) if y_val.ndim == 2 else y_val

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        h = self.hypermodel
        predictions = np.concatenate([
            np.argmax(keras.ops.convert_to_numpy(self.model(self.x_val[s:s + 256], training=False)), axis=-1)
            for s in range(0, len(self.x_val), 256)
        ])
        logs["val_clean_accuracy"] = clean = float(np.mean(predictions == self.labels))
        if "val_robust_accuracy" in logs:
            w = h.tradeoff_weight
            logs["val_tradeoff"] = (1.0 - w) * clean + w * float(logs["val_robust_accuracy"])
        alignments = [float(v) for k, v in logs.items()
                      if k.startswith("val_alignment_") and k != "val_alignment_gap"]
        if alignments and h.reference_task_loss is not None and "val_task_loss" in logs:
            increase = max(0.0, float(logs["val_task_loss"]) / h.reference_task_loss - 1.0)
            logs["val_alignment_gap"] = abs(float(np.mean(alignments)) - h.alignment_target) \
                + h.task_loss_weight * increase


@dataclasses.dataclass
class TuningResult:
    """What a search found.

    Attributes:
        objective: The objective's log key, e.g. `"val_tradeoff"`.
        direction: `"max"` or `"min"`.
        best_hyperparameters: The best trial's values, e.g. `{"penalty_weight": 0.004}`
            (Hyperband adds its `tuner/...` bookkeeping values).
        best_model: The best trial's model (a compiled `HardenedModel`; its
            `base_model` is the classifier) with the weights of its best epoch.
        trials: One dict per trial, in id order: `trial_id`, `status` ("COMPLETED",
            "FAILED", ...), `hyperparameters`, `clean_accuracy`, `robust_accuracy`
            (None without eps), `objective` (the reported value), `message` (why a
            trial failed, else None).
        tuner: The Keras Tuner tuner, for anything else.
    """

    objective: str
    direction: str
    best_hyperparameters: dict
    best_model: keras.Model
    trials: list
    tuner: kt.Tuner = dataclasses.field(repr=False, default=None)

    def pareto_front(self) -> list[dict]:
        """The completed trials no other trial beats in both clean and robust accuracy, by clean accuracy.

        Returns:
            Trial dicts (see `trials`); empty when no trial has a robust accuracy.
        """
        points = [t for t in self.trials if t["status"] == "COMPLETED"
                  and t["clean_accuracy"] is not None and t["robust_accuracy"] is not None]
        front = plots.pareto_front_indices([(t["clean_accuracy"], t["robust_accuracy"]) for t in points])
        return [points[i] for i in front]

    def to_markdown(self) -> str:
        """A Markdown table: one row per trial, the Pareto-front trials marked."""
        names = sorted({k for t in self.trials for k in t["hyperparameters"] if not k.startswith("tuner/")})
        front = {t["trial_id"] for t in self.pareto_front()}
        header = ["trial", "status", *names, "clean", "robust", self.objective, "Pareto"]
        # A hyperparameter outside a trial's method's scope shows as n/a.
        rows = [[t["trial_id"], t["status"], *(format_number(t["hyperparameters"].get(n)) for n in names),
                 format_number(t["clean_accuracy"]), format_number(t["robust_accuracy"]),
                 format_number(t["objective"]), "yes" if t["trial_id"] in front else ""]
                for t in self.trials]
        return "\n".join(markdown_table(header, rows))

    def plot_tradeoff(self, path=None):
        """Clean vs robust accuracy per trial, the Pareto front highlighted (`plots.plot_tuning_trials`).

        Args:
            path: Where to save the figure as PNG; None: not saved.

        Returns:
            The `matplotlib.figure.Figure`, points coloured by `penalty_weight`.

        Raises:
            ValueError: When no completed trial has a robust accuracy (no eps).
        """
        return plots.plot_tuning_trials([t for t in self.trials if t["status"] == "COMPLETED"], path)


def tune(model, x=None, y=None, *, validation_data, tuner: str = "random", max_trials: int = 10,
         epochs: int = 10, batch_size: int = 32, directory="gfa_tuning", project_name: str = "beta_search",
         overwrite: bool = False, seed: int = 0, callbacks=(), verbose: int = 1,
         max_consecutive_failed_trials: int = 3, hyperband_factor: int = 3, **hypermodel_options):
    """Searches beta (and optionally taps and method) with Keras Tuner; one call.

    Checks everything before any trial runs, then searches (`"random"`,
    `"bayesian"` or `"hyperband"`), then checks that trials completed. Rerunning
    with the same `directory`/`project_name` and `overwrite=False` resumes: completed
    trials are kept, a trial interrupted mid-way runs again. With the environment
    variables KERASTUNER_TUNER_ID / KERASTUNER_ORACLE_IP / KERASTUNER_ORACLE_PORT set,
    the process is the chief oracle (id "chief") or a worker of Keras Tuner's
    distributed mode (see docs/TUNING.md).

    Args:
        model: A `GFAHyperModel`, or its `base_model` (a function returning a fresh
            classifier, or a built model to clone) with `hypermodel_options`.
        x: Training inputs (or a `tf.data.Dataset`), passed to `fit`.
        y: Training labels.
        validation_data: `(x_val, y_val)` arrays (labels integer or one-hot): the
            objectives are measured on them.
        tuner: One of `TUNERS`.
        max_trials: Trials for random and Bayesian search (Hyperband sets its own).
        epochs: Epochs per trial (Hyperband's `max_epochs`).
        batch_size: Passed to `fit`.
        directory: The search's folder (trials, checkpoints, state).
        project_name: Its subfolder.
        overwrite: Start over instead of resuming.
        seed: The tuner's sampling seed.
        callbacks: More Keras callbacks for each trial (deep-copied per trial);
            they run after the objective callbacks, so they can monitor the objectives.
        verbose: Passed to `search`/`fit`: 0 silent, 1 or 2 Keras Tuner's per-trial output.
        max_consecutive_failed_trials: Stop after this many failures in a row.
        hyperband_factor: Hyperband's reduction factor.
        **hypermodel_options: `GFAHyperModel` arguments (objective, penalty_weight,
            layers, methods, eps, attack, ...).

    Returns:
        A `TuningResult`; `None` in a distributed worker (the chief's call returns
        the result once every trial has ended).

    Raises:
        ValueError: For bad settings, including an objective no trial would report
            (found by one validation batch per method, before any trial).
        ImportError: When tensorboard, which Keras Tuner imports in every trial, is missing.
        RuntimeError: When no trial completed, or too many failed in a row, with why.

    Example:

    ```python
    result = gfa_keras.tune(make_mlp, x, y, validation_data=(x_val, y_val), eps=0.1,
                            objective="tradeoff", layers=(1, 3), max_trials=20, epochs=10)
    print(result.best_hyperparameters, result.to_markdown())
    result.plot_tradeoff("tradeoff.png")
    ```
    """
    check_choice("tuner", tuner, TUNERS)
    for name, value in (("max_trials", max_trials), ("epochs", epochs), ("batch_size", batch_size),
                        ("max_consecutive_failed_trials", max_consecutive_failed_trials)):
        check_positive_int(name, value)
    check_int("seed", seed)
    if isinstance(model, GFAHyperModel):
        if hypermodel_options:
            raise ValueError(
                "Pass the options to GFAHyperModel(...) or a base model to tune(), not both. "
                f"Received: a GFAHyperModel and {sorted(hypermodel_options)}"
            )
        hypermodel = model
    else:
        hypermodel = GFAHyperModel(model, **hypermodel_options)
    _require_tensorboard()
    distributed = "KERASTUNER_ORACLE_IP" in os.environ
    is_worker = distributed and "chief" not in os.environ.get("KERASTUNER_TUNER_ID", "")
    needs_reference = hypermodel.objective_name == OBJECTIVES["alignment"][0] \
        and hypermodel.reference_task_loss is None
    if distributed and (overwrite or needs_reference):
        raise ValueError(
            "In distributed mode every process must share one search and one objective. Expected "
            "overwrite=False (a process with overwrite=True deletes the shared folder) and, for "
            "objective='alignment', an explicit reference_task_loss. "
            f"Received: overwrite={overwrite}, reference_task_loss={hypermodel.reference_task_loss}"
        )
    _check_objective_is_reported(hypermodel, validation_data, batch_size)

    fit_kwargs = dict(validation_data=validation_data, epochs=epochs, batch_size=batch_size,
                      callbacks=list(callbacks), verbose=verbose)
    if needs_reference:
        if verbose:
            print("Measuring the reference task loss of the 'alignment' objective (plain training)...")
        hypermodel.measure_reference_task_loss(x, y, **{**fit_kwargs, "callbacks": []})

    search_tuner = _make_tuner(tuner, hypermodel, max_trials, epochs, directory, project_name, overwrite, seed,
                               max_consecutive_failed_trials, hyperband_factor)
    try:
        search_tuner.search(x, y, **fit_kwargs)
    except RuntimeError as e:
        if is_worker:  # a worker sees only its own trials
            raise
        raise RuntimeError(f"The search stopped: {e}\n{_failure_summary(search_tuner)}") from e
    if is_worker:
        return None
    trials = _trial_rows(search_tuner)
    if not any(t["status"] == "COMPLETED" for t in trials):
        raise RuntimeError(f"No trial completed. {_failure_summary(search_tuner)}")
    best = search_tuner.oracle.get_best_trials(1)[0]
    with warnings.catch_warnings():
        # The checkpoint holds the trial's optimizer state; the fresh model's unbuilt optimizer skips it.
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        best_model = search_tuner.get_best_models(1)[0]
    return TuningResult(
        objective=hypermodel.objective_name,
        direction=hypermodel.direction,
        best_hyperparameters=dict(best.hyperparameters.values),
        best_model=best_model,
        trials=trials,
        tuner=search_tuner,
    )


def _check_objective_is_reported(hypermodel, validation_data, batch_size):
    _validation_arrays(validation_data)
    for method in hypermodel.methods:
        reported = hypermodel.logged_metrics(method, validation_data, batch_size)
        if hypermodel.objective_name not in reported:
            raise ValueError(
                f"No trial of method {method!r} would report the objective {hypermodel.objective_name!r}. "
                f"Expected one of its logged metrics: {reported}. Received: objective={hypermodel.objective!r}"
            )


def _require_tensorboard():
    # Keras Tuner 1.4.8 imports this in every trial on TensorFlow; when it fails,
    # every trial is marked FAILED and search() still returns normally.
    try:
        importlib.import_module("tensorboard.plugins.hparams.api")
    except ImportError as e:
        raise ImportError(
            "Keras Tuner imports tensorboard.plugins.hparams in every trial and, without it, marks every trial "
            f"FAILED. Expected an importable tensorboard: pip install tensorboard. Received: {e}"
        ) from e


def _make_tuner(name, hypermodel, max_trials, epochs, directory, project_name, overwrite, seed,
                max_consecutive_failed_trials, hyperband_factor):
    common = dict(objective=hypermodel.keras_tuner_objective, seed=seed, directory=os.fspath(directory),
                  project_name=project_name, overwrite=overwrite,
                  max_consecutive_failed_trials=max_consecutive_failed_trials)
    if name == "random":
        return kt.RandomSearch(hypermodel, max_trials=max_trials, **common)
    if name == "bayesian":
        return kt.BayesianOptimization(hypermodel, max_trials=max_trials, **common)
    return kt.Hyperband(hypermodel, max_epochs=epochs, factor=hyperband_factor, **common)


def _trial_rows(search_tuner):
    rows = []
    objective = search_tuner.oracle.objective.name
    for trial_id in sorted(search_tuner.oracle.trials):
        trial = search_tuner.oracle.trials[trial_id]
        message = trial.message.strip().splitlines()[-1] if trial.message else None
        rows.append({
            "trial_id": trial_id,
            "status": trial.status,
            "hyperparameters": dict(trial.hyperparameters.values),
            "clean_accuracy": _metric(trial, "val_clean_accuracy"),
            "robust_accuracy": _metric(trial, "val_robust_accuracy"),
            "objective": _metric(trial, objective),
            "message": message,
        })
    return rows


def _metric(trial, name):
    if not trial.metrics.exists(name):
        return None
    value = trial.metrics.get_last_value(name)
    return None if value is None else float(value)


def _failure_summary(search_tuner):
    trials = list(search_tuner.oracle.trials.values())
    statuses = {}
    for t in trials:
        statuses[t.status] = statuses.get(t.status, 0) + 1
    failed = [t for t in trials if t.message]
    why = failed[-1].message.strip().splitlines()[-1] if failed else "no trial recorded an error"
    return f"Trials by status: {statuses}. The last failure: {why}"


def _scope(hp, methods, all_methods):
    """Makes the hyperparameters inside active only for `methods`, when others are searched too."""
    if len(all_methods) > 1 and list(methods) != list(all_methods):
        return hp.conditional_scope("method", list(methods))
    return contextlib.nullcontext()


def _resolve_objective(objective):
    if isinstance(objective, kt.Objective):
        return objective.name, objective.direction
    if isinstance(objective, str) and objective in OBJECTIVES:
        return OBJECTIVES[objective]
    raise ValueError(
        f"Unknown objective. Expected one of {list(OBJECTIVES)} or a keras_tuner.Objective on a logged "
        f"metric, e.g. keras_tuner.Objective('val_loss', 'min'). Received: objective={objective!r}"
    )


def _check_range(value):
    ok = isinstance(value, (tuple, list)) and len(value) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    if not ok or not 0 < value[0] < value[1]:
        raise ValueError(
            "penalty_weight must be a search range (low, high) with 0 < low < high (it is searched on a log "
            f"scale), e.g. {DEFAULT_PENALTY_RANGE}. Received: penalty_weight={value!r}"
        )
    return float(value[0]), float(value[1])


def _check_choices(name, values, valid, expected):
    values = list(values) if isinstance(values, (tuple, list)) else [values]
    bad = [v for v in values if not valid(v)]
    if not values or bad or len(set(values)) != len(values):
        raise ValueError(f"{name} must be a non-empty list of distinct {expected}. Received: {name}={values!r}")
    return values


def _check_attack(attack, norm):
    check_choice("norm", norm, NORMS)
    spec = get_attack(attack)
    bounded = sorted(n for n, s in ATTACKS.items() if s.kind == "bounded" and norm in s.norms)
    if spec.name not in bounded:
        raise ValueError(
            f"The robust accuracy needs a bounded attack that supports norm={norm!r}. Expected one of "
            f"{bounded}. Received: attack={attack!r}"
        )
    return spec.name


def _validation_arrays(validation_data):
    # The objectives are measured on it; fit gets the labels as given (one-hot stays one-hot).
    check_labelled_data("validation_data", validation_data)
    return np.asarray(validation_data[0]), np.asarray(validation_data[1])
