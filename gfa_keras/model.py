"""`GFAModel`: a Keras model that trains a wrapped classifier with the GFA penalty.

`model.fit` stays `model.fit`: the wrapper overrides `train_step` (second-order
autodiff with nested tapes) and `test_step` (the same alignment on validation
data); `call` forwards to the wrapped model, whose weights are shared, not copied.
"""
from __future__ import annotations

import math

import keras
import tensorflow as tf

from gfa_keras.alignment import alignment_penalty
from gfa_keras.taps import (
    MODEL_INPUT,
    build_feature_extractor,
    is_graph_model,
    resolve_tapped_layers,
)

__all__ = ["GFAModel", "harden"]

DEFAULT_PENALTY_WEIGHT = 0.01


def _require_tensorflow_backend():
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(
            "gfa_keras trains with nested tf.GradientTape and needs the TensorFlow backend. "
            "Set the environment variable KERAS_BACKEND=tensorflow before importing keras. "
            f"Received: keras.backend.backend()={backend!r}"
        )


def _check_penalty_weight(penalty_weight):
    if isinstance(penalty_weight, bool) or not isinstance(penalty_weight, (int, float)):
        raise ValueError(
            f"penalty_weight must be a finite number >= 0. Received: penalty_weight={penalty_weight!r}"
        )
    if not math.isfinite(penalty_weight) or penalty_weight < 0:
        raise ValueError(
            f"penalty_weight must be a finite number >= 0. Received: penalty_weight={penalty_weight}"
        )
    return float(penalty_weight)


def _check_base_model(model):
    if not isinstance(model, keras.Model):
        raise ValueError(
            "Expected a Keras 3 model (keras.Model, Sequential or Functional). "
            f"Received: model of type {type(model).__name__}"
        )
    if not model.built:
        raise ValueError(
            f"Model '{model.name}' is not built: its layers have no weights yet. Build it first, e.g. "
            "with keras.Input in a Sequential/Functional model, model.build(input_shape), or by "
            "calling it on a batch. Received: an unbuilt model"
        )


def _replica_mean_scale(value):
    """Scales a per-replica mean so that summing gradients over replicas averages them
    (what Keras does to the compiled loss under tf.distribute)."""
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return value / replicas if replicas > 1 else value


def _sanitize_metric_name(layer_name):
    return "".join(c if c.isalnum() or c == "_" else "_" for c in layer_name)


@keras.saving.register_keras_serializable(package="gfa_keras")
class GFAModel(keras.Model):
    """Wraps a classifier so that `fit` adds the layer-wise GFA penalty.

    total = task_loss + penalty_weight * mean_over_batch(sum_l (1 - cos(dL/dh_l, h_l)))

    Args:
        base_model: A built Keras classifier (Sequential or Functional; a subclassed
            model only with `layers=1`, the alignment at its input).
        layers: An int N (the inputs of the first N layers with trainable weights,
            normalisation excluded; 1 = the input image, the paper's FIRST; 3 = DEEP) or
            a list of layer names or layer objects.
        penalty_weight: beta, the weight of the penalty; 0 gives plain training.
        epsilon: Added to the norms' product in the cosine.
        **kwargs: Passed to `keras.Model` (e.g. `name`).

    Logged metrics: `loss` (total), `task_loss`, `gfa_penalty`, and `alignment_<layer>`
    for each tapped layer (the batch-mean cosine, 1 = fully aligned), plus the compiled
    metrics; the same with `val_` on validation data.

    Example:

    >>> base = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> model = GFAModel(base, layers=1, penalty_weight=0.1)
    >>> model.tapped_layers
    ('dense',)
    """

    def __init__(self, base_model, layers=3, penalty_weight=DEFAULT_PENALTY_WEIGHT,
                 epsilon=1e-12, **kwargs):
        _require_tensorflow_backend()
        _check_base_model(base_model)
        penalty_weight = _check_penalty_weight(penalty_weight)
        tapped = resolve_tapped_layers(base_model, layers)
        super().__init__(**kwargs)
        self.base_model = base_model
        self.tapped_layers = tapped
        self.penalty_weight = penalty_weight
        self.epsilon = float(epsilon)
        if is_graph_model(base_model):
            self._feature_extractor = build_feature_extractor(base_model, tapped)
        else:
            self._feature_extractor = None
        self.task_loss_tracker = keras.metrics.Mean(name="task_loss")
        self.penalty_tracker = keras.metrics.Mean(name="gfa_penalty")
        self.alignment_trackers = [
            keras.metrics.Mean(name=f"alignment_{_sanitize_metric_name(name)}") for name in tapped
        ]
        # The base model is built, so the wrapper is too: without this, save_weights,
        # ModelCheckpoint and Keras Tuner fail on a wrapper that was never called.
        self.built = True

    def call(self, inputs, training=None):
        return self.base_model(inputs, training=training)

    def _features_and_predictions(self, x, tape, training):
        """Forward pass giving (taps, y_pred) with the taps watched by `tape`."""
        for t in tf.nest.flatten(x):
            if t.dtype.is_floating:
                tape.watch(t)
        if self._feature_extractor is None:
            features = tf.nest.flatten(x)[:1]
            return features, self.base_model(x, training=training)
        features, y_pred = self._feature_extractor(x, training=training)
        return list(features), y_pred

    def _penalty(self, x, y, sample_weight, training):
        """Task loss, GFA penalty, per-layer alignments and predictions.

        The inner tape gives dL/dh_l for every tap in one backward pass; when this runs
        under an outer tape, the returned penalty stays differentiable (second order).
        """
        with tf.GradientTape() as inner:
            features, y_pred = self._features_and_predictions(x, inner, training)
            task_loss = self.compute_loss(
                x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training
            )
        gradients = inner.gradient(task_loss, features)
        missing = [n for n, g in zip(self.tapped_layers, gradients) if g is None]
        if missing:
            raise RuntimeError(
                f"The loss does not depend on the input of layer(s) {missing}: the gradient is None. "
                "Tap layers on the path from the input to the output."
            )
        penalty, alignments = alignment_penalty(gradients, features, sample_weight, self.epsilon)
        return task_loss, penalty, alignments, y_pred

    def _total(self, task_loss, penalty):
        penalty = tf.cast(_replica_mean_scale(penalty), task_loss.dtype)
        return task_loss + self.penalty_weight * penalty

    def _update_trackers(self, x, total, task_loss, penalty, alignments):
        batch_size = tf.shape(tf.nest.flatten(x)[0])[0]
        # compute_loss does not update the `loss` tracker in Keras 3.15; the built-in
        # train_step does it itself, so we do too (with Keras' distribution unscaling).
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        self._loss_tracker.update_state(total * replicas, sample_weight=batch_size)
        self.task_loss_tracker.update_state(task_loss * replicas, sample_weight=batch_size)
        self.penalty_tracker.update_state(penalty, sample_weight=batch_size)
        for tracker, value in zip(self.alignment_trackers, alignments):
            tracker.update_state(value, sample_weight=batch_size)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as outer:
            task_loss, penalty, alignments, y_pred = self._penalty(x, y, sample_weight, training=True)
            total = self._total(task_loss, penalty)
            scaled_total = self.optimizer.scale_loss(total)
        variables = self.trainable_variables
        gradients = outer.gradient(scaled_total, variables)
        self.optimizer.apply(gradients, variables)
        self._update_trackers(x, total, task_loss, penalty, alignments)
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        task_loss, penalty, alignments, y_pred = self._penalty(x, y, sample_weight, training=False)
        total = self._total(task_loss, penalty)
        self._update_trackers(x, total, task_loss, penalty, alignments)
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "base_model": keras.saving.serialize_keras_object(self.base_model),
                "layers": list(self.tapped_layers),
                "penalty_weight": self.penalty_weight,
                "epsilon": self.epsilon,
            }
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["base_model"] = keras.saving.deserialize_keras_object(
            config["base_model"], custom_objects=custom_objects
        )
        return cls(**config)


def harden(model, layers=3, penalty_weight: float = DEFAULT_PENALTY_WEIGHT, epsilon: float = 1e-12,
           name: str | None = None) -> GFAModel:
    """Wraps `model` so that `fit` trains it with layer-wise Gradient-Feature Alignment.

    Args:
        model: A built Keras 3 classifier whose weights the wrapper shares.
        layers: Which layer inputs to align: an int N (the first N weighted layers; 1 =
            the input image, the paper's FIRST; 3 = the paper's DEEP) or a list of layer
            names or layer objects.
        penalty_weight: beta, the penalty's weight (>= 0). Useful values are small:
            at initialisation the DEEP penalty is about 3 (cosines near 0).
        epsilon: Added to the norms' product in the cosine.
        name: The wrapper's name; default `"<model name>_gfa"`.

    Returns:
        A `GFAModel`; compile and fit it like any Keras model.

    Raises:
        ValueError: For a non-Keras or unbuilt model, a bad `layers` or `penalty_weight`.
        RuntimeError: When the Keras backend is not TensorFlow.

    Example:

    >>> base = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
    ...                          keras.layers.Dense(16, activation="relu"),
    ...                          keras.layers.Dense(10)])
    >>> model = harden(base, layers=2, penalty_weight=0.01)
    >>> model.compile(optimizer="adam",
    ...               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    """
    _require_tensorflow_backend()
    _check_base_model(model)
    return GFAModel(model, layers=layers, penalty_weight=penalty_weight, epsilon=epsilon,
                    name=name or f"{model.name}_gfa")
