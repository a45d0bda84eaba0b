"""Adversarial weight perturbation (AWP, Wu et al. 2020) and the weight updates it shares
with weight averaging.

AWP flattens the loss landscape in weight space: before each update the weights are
pushed, layer by layer, in the direction that most increases the training objective on
the batch's adversarial examples, by `gamma` times each layer's own norm; the update's
gradient is taken at those perturbed weights, the optimizer steps, and the perturbation
is removed again. `HardenedModel` runs it inside `train_step` when given a
`weight_perturbation`.

Only weights with two or more dimensions (kernels) are perturbed, as in the authors'
code: biases and normalisation scales stay put.

Batch normalization, also as in the authors' code: the ascent pass (at the weights w,
in training mode) leaves the moving statistics alone (they run it on a proxy copy of the
model, "which does not affect the statistics of BN"; `HardenedModel` puts them back);
the update's training forward pass runs at the perturbed weights w + delta and is the
one pass that moves them. So after a step the statistics are those of one training
forward pass at w + delta, not at w: in a deep network the two differ by far more than
rounding even for a tiny gamma (ResNet50V2 at 32x32, a batch of 4, gamma = 1e-7: 11 of
its 98 moving means and variances differ by more than 1e-4 relative, by up to 1.5e-3),
which is why the tests compare with a pass at w + delta.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from gfa_keras.validation import check_number

__all__ = ["AdversarialWeightPerturbation", "DEFAULT_AWP_GAMMA", "update_variables"]

DEFAULT_AWP_GAMMA = 5e-3  # Wu et al.'s value for PGD-AT and TRADES alike


@keras.saving.register_keras_serializable(package="gfa_keras")
class AdversarialWeightPerturbation:
    """One weight-ascent step per batch, of relative size `gamma` per layer.

    For each perturbed weight tensor w with gradient g of the training objective at
    the adversarial batch, the perturbation is `gamma * ||w|| * g / ||g||` (Frobenius
    norms, one layer at a time), so that every layer moves by the same fraction of its
    size whatever its scale.

    Args:
        gamma: The relative size, a finite number > 0 (Wu et al.: 5e-3 for PGD
            training and for TRADES).

    Raises:
        ValueError: For gamma <= 0, non-finite or not a number.

    Example:

    >>> awp = AdversarialWeightPerturbation(gamma=5e-3)
    >>> awp.get_config()
    {'gamma': 0.005}
    """

    def __init__(self, gamma: float = DEFAULT_AWP_GAMMA):
        self.gamma = check_number("gamma", gamma, low=0, low_open=True)

    @staticmethod
    def perturbed(variables):
        """The variables AWP moves: the trainable ones with two or more dimensions."""
        return [v for v in variables if len(v.shape) >= 2]

    def deltas(self, variables, gradients, gamma=None):
        """The weight perturbation for each variable (zeros where the gradient is None or 0).

        Args:
            variables: The perturbed variables.
            gradients: The objective's gradient for each, over the whole (global) batch.
            gamma: The relative size to use instead of `self.gamma`, e.g. a variable that a
                warm-up (`WeightPerturbationWarmup`) changes between epochs.

        Returns:
            A list of tensors shaped like the variables.
        """
        gamma = tf.cast(self.gamma if gamma is None else gamma, tf.float32)
        out = []
        for variable, gradient in zip(variables, gradients):
            weight = tf.cast(variable, tf.float32)
            if gradient is None:
                out.append(tf.zeros_like(weight))
                continue
            gradient = tf.cast(gradient, tf.float32)
            # The floor keeps a zero gradient (a dead layer) from becoming NaN.
            scale = gamma * tf.norm(weight) / tf.maximum(tf.norm(gradient), 1e-20)
            out.append(scale * gradient)
        return out

    def get_config(self):
        return {"gamma": self.gamma}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"AdversarialWeightPerturbation(gamma={self.gamma:g})"


def update_variables(variables, values, update):
    """Applies `update(variable, value)` to each variable, in or out of a replica context.

    Inside `strategy.run` (`train_step` under tf.distribute), a mirrored variable can only
    be written through the strategy, as Keras' optimizers do: a merge call hands each
    device its own copy of `value`. Every replica must pass the same values.

    Args:
        variables: Keras variables.
        values: One tensor per variable.
        update: `(tf.Variable, tensor) -> op`, e.g. `lambda v, d: v.assign_add(d)`.
    """
    variables = [getattr(v, "value", v) for v in variables]
    values = [tf.cast(value, v.dtype) for v, value in zip(variables, values)]
    context = tf.distribute.get_replica_context()
    if context is None or not tf.distribute.has_strategy():
        for variable, value in zip(variables, values):
            update(variable, value)
        return

    def merge(strategy, values):
        for variable, value in zip(variables, values):
            strategy.extended.update(variable, update, args=(value,), group=False)

    context.merge_call(merge, args=(values,))
