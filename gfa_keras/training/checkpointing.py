"""Resumable training: `fit` that saves a checkpoint every epoch and continues from the last one.

A checkpoint directory holds `checkpoint.keras` (the whole model, optimizer state included,
as `model.save` writes it) and `checkpoint.json` (the number of epochs finished, the
settings the run was started with, and the history of every epoch so far). Both are
written to a temporary file and renamed, so an interruption at any moment leaves the
previous epoch's pair intact. The `gfa-keras train` command is built on this module.

May import: keras, `gfa_keras.validation`.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Callable

import keras

from gfa_keras import atomic_files
from gfa_keras.validation import check_positive_int

__all__ = ["CHECKPOINT_MODEL", "CHECKPOINT_STATE", "Checkpoint", "ResumableCheckpoint", "read_checkpoint",
           "fit_resumable"]

CHECKPOINT_MODEL = "checkpoint.keras"
CHECKPOINT_STATE = "checkpoint.json"


@dataclasses.dataclass
class Checkpoint:
    """What `checkpoint.json` records about a resumable run.

    Attributes:
        directory: The checkpoint directory.
        epoch: The number of epochs finished (the next one to run, 0-based).
        settings: The settings the run was started with (a JSON object).
        history: `{metric: [one value per finished epoch]}`.
    """

    directory: Path
    epoch: int
    settings: dict
    history: dict

    @property
    def model_path(self) -> Path:
        return self.directory / CHECKPOINT_MODEL

    def differences(self, settings: dict) -> list[str]:
        """The settings that differ from the checkpoint's, one `"key: old in the checkpoint, new now"` each.

        Only the keys of `settings` are compared; a key the checkpoint lacks compares as None.
        """
        settings = _as_json(settings)
        return [
            f"{key}: {self.settings.get(key)!r} in the checkpoint, {value!r} now"
            for key, value in settings.items()
            if self.settings.get(key) != value
        ]

    def load_model(self, custom_objects=None, safe_mode=True) -> keras.Model:
        """Loads the checkpointed model, compiled with its optimizer state."""
        try:
            return keras.saving.load_model(self.model_path, custom_objects=custom_objects, compile=True,
                                           safe_mode=safe_mode)
        except Exception as e:  # noqa: BLE001 (Keras raises many types for a bad file; all mean "cannot load")
            message = " ".join(str(e).split())[:300]
            raise ValueError(
                f"Cannot load the checkpoint {self.model_path}: {type(e).__name__}: {message}. Expected the "
                "model written by fit_resumable; start again with overwrite=True."
            ) from None


def read_checkpoint(directory: str | os.PathLike) -> Checkpoint | None:
    """Reads the checkpoint state in `directory`, or returns None when there is none.

    Raises:
        ValueError: If `checkpoint.json` exists but cannot be read as a checkpoint state.
    """
    directory = Path(directory)
    path = directory / CHECKPOINT_STATE
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        return Checkpoint(directory, int(state["epoch"]), dict(state.get("settings", {})),
                          dict(state.get("history", {})))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"Cannot read {path}: {type(e).__name__}: {e}. Expected the state written by fit_resumable "
            "(or `gfa-keras train`); start again with overwrite=True (--overwrite)."
        ) from None


class ResumableCheckpoint(keras.callbacks.Callback):
    """After every epoch: saves the whole model, then the epochs finished, the settings and the history.

    Args:
        directory: Where to write `checkpoint.keras` and `checkpoint.json` (must exist).
        settings: A JSON object stored with the checkpoint, compared when resuming.
        history: The history of the epochs before this run (when resuming); this run's
            epochs are appended to it.
    """

    def __init__(self, directory, settings=None, history=None):
        super().__init__()
        self.directory = Path(directory)
        self.settings = _as_json(settings or {})
        self.history = {key: list(values) for key, values in (history or {}).items()}

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        # The model first: a state file never claims an epoch whose model is not on disk.
        atomic_files.save_model(self.model, self.directory / CHECKPOINT_MODEL)
        atomic_files.write_json(self.directory / CHECKPOINT_STATE,
                                {"epoch": epoch + 1, "settings": self.settings, "history": self.history})


def fit_resumable(
    model: keras.Model | Callable[[], keras.Model],
    x=None,
    y=None,
    *,
    directory: str | os.PathLike,
    epochs: int,
    settings: dict | None = None,
    overwrite: bool = False,
    custom_objects: dict | None = None,
    safe_mode: bool = True,
    callbacks=(),
    **fit_kwargs: Any,
) -> tuple[keras.Model, keras.callbacks.History]:
    """`model.fit` that checkpoints every epoch to `directory` and, when rerun, continues from the last one.

    On a fresh start (no checkpoint in `directory`, or `overwrite=True`) it fits `model`. When
    `directory` holds a checkpoint it loads the checkpointed model instead (weights and
    optimizer state, so Adam's moments and step count continue) and fits it from the epoch
    reached up to `epochs`; the `model` passed in is then not used (pass a function that builds
    and compiles the model to skip building it). Training that does not depend on random
    numbers (no shuffling, no random perturbation start) continued this way gives the same
    weights as training straight through; with shuffling, the resumed epochs see another order.

    Args:
        model: A compiled `keras.Model`, or a function without arguments returning one
            (called only when training starts from scratch).
        x, y: The training data, as for `model.fit`.
        directory: The checkpoint directory (created if needed).
        epochs: The total number of epochs, counting those already in the checkpoint.
        settings: A JSON object describing the run (method, learning rate, ...). It is stored
            with the checkpoint, and resuming with other settings is refused, so that a resumed
            run is the run that was interrupted. `epochs` may change between runs.
        overwrite: Start from scratch even if `directory` holds a checkpoint.
        custom_objects: Passed to `keras.saving.load_model` when resuming.
        safe_mode: Passed to `keras.saving.load_model`; False lets a `Lambda` layer's code run.
        callbacks: More Keras callbacks; they run before the checkpoint is written.
        **fit_kwargs: Passed to `model.fit` (`batch_size`, `validation_split`, `verbose`,
            `shuffle`, ...), all but `epochs` and `initial_epoch`.

    Returns:
        `(model, history)`: the trained model (the loaded one when resuming) and a
        `keras.callbacks.History` whose `history` holds every epoch, those of earlier runs
        included (`history.epoch` lists their indices).

    Raises:
        ValueError: If the checkpoint's settings differ from `settings`, the checkpoint cannot
            be read, `epochs` is below the epochs already trained, or `initial_epoch` is passed.

    Example:

    ```python
    def build():
        model = gfa_keras.harden(make_mlp(), layers=3, penalty_weight=0.01)
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])
        return model

    # Interrupted (Ctrl-C, a preempted job)? Run the same call again: it continues.
    model, history = fit_resumable(build, x_train, y_train, directory="runs/gfa", epochs=20,
                                   settings={"method": "gfa", "penalty_weight": 0.01},
                                   batch_size=128, validation_split=0.1)
    ```
    """
    epochs = check_positive_int("epochs", epochs)
    if "initial_epoch" in fit_kwargs:
        raise ValueError(
            "fit_resumable chooses the initial epoch from the checkpoint. Expected no initial_epoch. "
            f"Received: initial_epoch={fit_kwargs['initial_epoch']!r}"
        )
    if settings is not None and not isinstance(settings, dict):
        raise ValueError("settings must be a dict (a JSON object). "
                         f"Received: settings of type {type(settings).__name__}")
    settings = _as_json(settings or {})
    directory = Path(directory)
    checkpoint = None if overwrite else read_checkpoint(directory)
    if checkpoint is not None:
        differing = checkpoint.differences(settings)
        if differing:
            raise ValueError(
                f"Cannot resume {directory}: the settings differ from the checkpoint's ({'; '.join(differing)}). "
                "Expected the same settings (only epochs may change), or overwrite=True to start again."
            )
        if checkpoint.epoch > epochs:
            raise ValueError(
                f"Cannot resume {directory}: it is trained to epoch {checkpoint.epoch}, beyond epochs={epochs}. "
                f"Expected epochs >= {checkpoint.epoch}, or overwrite=True to start again."
            )
        model = checkpoint.load_model(custom_objects=custom_objects, safe_mode=safe_mode)
        initial_epoch, history = checkpoint.epoch, checkpoint.history
    else:
        model = model() if callable(model) and not isinstance(model, keras.Model) else model
        if not isinstance(model, keras.Model):
            raise ValueError(
                "model must be a compiled keras.Model or a function returning one. "
                f"Received: model of type {type(model).__name__}"
            )
        initial_epoch, history = 0, {}
    directory.mkdir(parents=True, exist_ok=True)
    saver = ResumableCheckpoint(directory, settings, history)
    model.fit(x, y, epochs=epochs, initial_epoch=initial_epoch, callbacks=[*callbacks, saver], **fit_kwargs)
    result = keras.callbacks.History()
    result.set_model(model)
    result.history = saver.history
    result.epoch = list(range(len(next(iter(saver.history.values()), []))))
    return model, result


def _as_json(settings):
    """`settings` as JSON would read it back (tuples become lists), so stored and given compare equal."""
    try:
        return json.loads(json.dumps(settings))
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"settings must be a JSON object (numbers, strings, lists, dicts). Received: {settings!r} ({e})"
        ) from None
