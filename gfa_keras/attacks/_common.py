"""Private helpers shared by the attacks in this package: compiled-function cache,
option checks, label checks against the model, per-example selection, margins, a
hand-written Adam step and the final eps filter of minimum-norm attacks."""
from __future__ import annotations

import weakref

import tensorflow as tf

from gfa_keras.validation import check_number, check_positive_int  # noqa: F401 (re-exported to the attacks)
from gfa_keras.attacks.base import perturbation_norms, validate_attack_inputs
from gfa_keras.threat_model import per_example  # noqa: F401 (re-exported to the attacks)

# model -> {settings: compiled function}. Weak keys, and the compiled functions
# hold the model only weakly, so a cached attack never keeps a model alive.
_COMPILED = weakref.WeakKeyDictionary()


def compiled(model, settings, build):
    """Returns `build(model_ref, *settings)`, cached per model and settings.

    `build` receives a zero-argument callable that returns the model (a weak
    reference when possible) and must return a `tf.function`.
    """
    try:
        model_ref = weakref.WeakMethod(model) if hasattr(model, "__self__") else weakref.ref(model)
        per_model = _COMPILED.setdefault(model, {})
    except TypeError:  # Not weak-referenceable: compile without caching.
        return build(lambda: model, *settings)
    if settings not in per_model:
        per_model[settings] = build(model_ref, *settings)
    return per_model[settings]


def clean_logits(model, x, y, targets=None):
    """Runs the model once on `x` and checks the labels against its number of classes.

    Returns:
        `(logits, targets)`: the float32 logits and the targets as an int32
        tensor (None when not given).

    Raises:
        ValueError: if the model does not output `[batch, num_classes]` logits,
            a label or target is out of range, or a target equals its label.
    """
    logits = tf.cast(model(x), tf.float32)
    if logits.shape.rank != 2 or logits.shape[0] != x.shape[0]:
        raise ValueError(
            "The model must map a batch to logits of shape [batch, num_classes]. "
            f"Received: output shape {tuple(logits.shape)} for input shape {tuple(x.shape)}"
        )
    num_classes = logits.shape[1]
    if x.shape[0] and bool(tf.reduce_any(y >= num_classes)):
        raise ValueError(f"Labels must be < num_classes={num_classes}. Received: max(y)={int(tf.reduce_max(y))}")
    if targets is None:
        return logits, None
    targets = tf.convert_to_tensor(targets)
    if targets.dtype.is_floating or targets.dtype == tf.bool or targets.shape != y.shape:
        raise ValueError(
            "targets must be integer class labels of the shape of y. "
            f"Received: targets.dtype={targets.dtype.name}, targets.shape={tuple(targets.shape)}, "
            f"y.shape={tuple(y.shape)}"
        )
    targets = tf.cast(targets, tf.int32)
    if x.shape[0] and bool(tf.reduce_any((targets < 0) | (targets >= num_classes))):
        raise ValueError(f"targets must lie in [0, {num_classes - 1}]. Received: {targets.numpy().tolist()}")
    if bool(tf.reduce_any(targets == y)):
        raise ValueError("Each target must differ from the true label. Received a target equal to y.")
    return logits, targets


def keep_within_eps(x, x_adv, eps, norm):
    """Returns `x_adv` where its perturbation is within `eps`, else `x` (eps None: `x_adv`)."""
    if eps is None:
        return x_adv
    within = perturbation_norms(x, x_adv, norm) <= eps
    return tf.where(tf.reshape(within, [-1] + [1] * (len(x.shape) - 1)), x_adv, x)


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


def select_per_example(take, new, old):
    """`new` where the `[batch]` mask `take` holds, else `old`, for batches of any rank."""
    return tf.where(per_example(take, len(new.shape)), new, old)


def margin(logits, y, targets=None):
    """Per-example margin, negative exactly when the attack has succeeded.

    Untargeted: `z_y - max_{j != y} z_j` (negative once the model is fooled). With
    `targets`: `max_{j != t} z_j - z_t` (negative once the target wins).
    """
    wanted = y if targets is None else targets
    wanted_logit = tf.gather(logits, wanted, axis=1, batch_dims=1)
    rivals = tf.reduce_max(tf.where(tf.one_hot(wanted, tf.shape(logits)[1]) > 0, -float("inf"), logits), axis=1)
    return wanted_logit - rivals if targets is None else rivals - wanted_logit


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


def require_image_batch(attack, x):
    """Raises a ValueError unless `x` is `[batch, height, width(, channels)]` (patch-based attacks)."""
    if x.shape.rank not in (3, 4):
        raise ValueError(
            f"{attack} needs a batch of images [batch, height, width(, channels)]. "
            f"Received: x.shape={tuple(x.shape)}"
        )
