"""Small private helpers shared by the gradient-based and score-based attacks."""

import numpy as np
import tensorflow as tf

from gfa_keras.attacks.base import validate_attack_inputs


def num_classes_of(model, x):
    """Number of logits `model` outputs, read from its output shape when known."""
    shape = getattr(model, "output_shape", None)
    if isinstance(shape, tuple) and shape and isinstance(shape[-1], int):
        return shape[-1]
    # One forward pass on a single example; the inputs are validated right after.
    return int(model(tf.cast(tf.convert_to_tensor(x)[:1], tf.float32)).shape[-1])


def validate_for_model(model, x, y, **kwargs):
    """`validate_attack_inputs` with the label range taken from the model's logits.

    Returns `(x, y, num_classes)`.
    """
    num_classes = num_classes_of(model, x)
    x, y = validate_attack_inputs(x, y, num_classes=num_classes, **kwargs)
    return x, y, num_classes


def broadcast_per_example(v, rank):
    """Reshapes a `[batch]` vector to broadcast against a rank-`rank` batch."""
    return tf.reshape(v, [-1] + [1] * (rank - 1))


def select_per_example(take, new, old):
    """`new` where the `[batch]` mask `take` holds, else `old`, for batches of any rank."""
    return tf.where(broadcast_per_example(take, len(new.shape)), new, old)


def margin(logits, y):
    """Per-example `z_y - max_{j != y} z_j`: negative exactly when the model is fooled."""
    true_logit = tf.gather(logits, y, axis=1, batch_dims=1)
    others = tf.where(tf.one_hot(y, tf.shape(logits)[1]) > 0, -float("inf"), logits)
    return true_logit - tf.reduce_max(others, axis=1)


def check_positive_int(name, value):
    """Returns `value` as an int, or raises a ValueError naming `name`."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer. Received: {name}={value!r}")
    return int(value)


def adam_update(grad, m, v, t, learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-8):
    """One Adam step on plain tensors: returns `(update, m, v)`; subtract `update`.

    Kept out of `keras.optimizers`, whose optimizers bind to `tf.Variable`s and
    carry state between calls. `t` is the 1-based step number.
    """
    m = beta_1 * m + (1.0 - beta_1) * grad
    v = beta_2 * v + (1.0 - beta_2) * tf.square(grad)
    t = tf.cast(t, grad.dtype)
    m_hat = m / (1.0 - beta_1**t)
    v_hat = v / (1.0 - beta_2**t)
    return learning_rate * m_hat / (tf.sqrt(v_hat) + epsilon), m, v
