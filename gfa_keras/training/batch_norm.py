"""Batch normalization during adversarial training: whose statistics count.

The rule gfa_keras follows (Pang et al. 2021, "Bag of tricks for adversarial
training"): the inner attack runs the model in inference mode (`training=False`:
batch normalization uses and leaves its moving statistics), and the moving
statistics are updated ONLY by the one training forward pass on the batch the task
loss is computed on. Extra training-mode passes that a method makes for a penalty
(TRADES' pass on the adversarial batch, a weight-perturbation ascent step)
normalize with their own batch statistics, as the method prescribes, but must not
move the running averages; `frozen_moving_statistics` does that.

With adversarial weight perturbation (AWP) the one moving pass is the update's forward
pass, which runs at the perturbed weights w + delta, as in Wu et al.'s code; the ascent
pass at w that finds delta leaves the statistics alone (see `weight_perturbation`).
"""
from __future__ import annotations

import contextlib

import keras

__all__ = ["batch_normalization_layers", "frozen_moving_statistics"]


def batch_normalization_layers(model) -> list:
    """Every `BatchNormalization` layer of `model`, nested models included."""
    return [layer for layer in model._flatten_layers(include_self=True, recursive=True)
            if isinstance(layer, keras.layers.BatchNormalization)]


@contextlib.contextmanager
def frozen_moving_statistics(model):
    """Inside the block, training-mode calls of `model` leave its batch-norm moving
    statistics unchanged (they still normalize with the batch's own statistics).

    Batch normalization updates `moving = momentum * moving + (1 - momentum) * batch`;
    with the momentum at 1 while the call is traced (or run eagerly) the update writes
    back the old value exactly. The momentum is a Python attribute read when the layer
    is called, so this works inside a traced `train_step`, under `tf.distribute` and
    with XLA, at the cost of one no-op assignment per layer.

    Args:
        model: A Keras model or layer.

    Example:

    >>> import numpy as np
    >>> bn = keras.layers.BatchNormalization()
    >>> model = keras.Sequential([keras.Input((2,)), bn])
    >>> with frozen_moving_statistics(model):
    ...     _ = model(np.ones((4, 2), "float32") * 5, training=True)
    >>> np.asarray(bn.moving_mean).tolist()
    [0.0, 0.0]
    """
    layers = batch_normalization_layers(model)
    saved = [(layer.momentum, layer.renorm_momentum) for layer in layers]
    try:
        for layer in layers:
            layer.momentum = layer.renorm_momentum = 1.0
        yield
    finally:
        for layer, (momentum, renorm_momentum) in zip(layers, saved):
            layer.momentum, layer.renorm_momentum = momentum, renorm_momentum
