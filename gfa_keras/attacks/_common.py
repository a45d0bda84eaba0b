"""Private helpers shared by the attacks in this package, so that every attack has the same shape:

    x, y = validate_attack_inputs(x, y, eps=eps, norm=norm, clip_min=clip_min, clip_max=clip_max)
    steps = check_positive_int("steps", steps)          # options through gfa_keras.validation
    if x.shape[0] == 0:
        return tf.identity(x)                            # nothing to attack
    logits, targets = clean_logits(model, x, y, targets) # one forward pass checks labels and targets
    if eps == 0:
        return tf.identity(x)
    run = compiled(model, settings, _build_run)          # one tf.function per model and settings
    x_adv = run(x, y, ...)

and the pieces several attacks need are written once here: the keep-the-best-restart merge, the
binary search over the loss constant (Carlini-Wagner, EAD), margins, a hand-written Adam step and
the final eps filter of minimum-norm attacks.
"""
from __future__ import annotations

import weakref

import tensorflow as tf

from gfa_keras.attacks.base import perturbation_norms
from gfa_keras.threat_model import per_example

# model -> {settings: compiled function}. Weak keys, and the compiled functions
# hold the model only weakly, so a cached attack never keeps a model alive.
_COMPILED = weakref.WeakKeyDictionary()

# Upper bound of the loss constant before any success (Carlini & Wagner's 1e10).
NO_UPPER_BOUND = 1e10


def compiled(model, settings, build):
    """Returns `build(model_ref, *settings)`, cached per model and settings.

    `build` receives a zero-argument callable that returns the model (a weak
    reference when possible) and must return a `tf.function`. `settings` are the
    Python values the trace depends on (norm, step counts, ...); everything that
    varies between calls with the same trace (eps, seeds, data) is passed to the
    returned function as tensors.
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
    """Runs the model once on `x` and checks the labels (and targets) against its number of classes.

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
    return logits, check_targets(targets, y, num_classes)


def check_targets(targets, y, num_classes):
    """Returns `targets` as an int32 tensor, or raises unless they are valid target classes for `y`.

    Raises:
        ValueError: unless `targets` are integer labels of `y`'s shape in
            `[0, num_classes)`, each different from its true label.
    """
    targets = tf.convert_to_tensor(targets)
    if targets.dtype.is_floating or targets.dtype == tf.bool or targets.shape != y.shape:
        raise ValueError(
            "targets must be integer class labels of the shape of y. "
            f"Received: targets.dtype={targets.dtype.name}, targets.shape={tuple(targets.shape)}, "
            f"y.shape={tuple(y.shape)}"
        )
    targets = tf.cast(targets, tf.int32)
    if y.shape[0] and bool(tf.reduce_any((targets < 0) | (targets >= num_classes))):
        raise ValueError(f"targets must lie in [0, {num_classes - 1}]. Received: {targets.numpy().tolist()}")
    if bool(tf.reduce_any(targets == y)):
        raise ValueError("Each target must differ from the true label. Received a target equal to y.")
    return targets


def keep_within_eps(x, x_adv, eps, norm):
    """Returns `x_adv` where its perturbation is within `eps`, else `x` (eps None: `x_adv`)."""
    if eps is None:
        return x_adv
    within = perturbation_norms(x, x_adv, norm) <= eps
    return select_per_example(within, x_adv, x)


def select_per_example(take, new, old):
    """`new` where the `[batch]` mask `take` holds, else `old`, for batches of any rank."""
    return tf.where(per_example(take, len(new.shape)), new, old)


def no_restart_yet(x):
    """The `(x_adv, loss, fooled)` state `keep_best_restart` starts from: `x`, loss -inf, nothing fooled."""
    batch = tf.shape(x)[0]
    return x, tf.fill([batch], float("-inf")), tf.zeros([batch], tf.bool)


def keep_best_restart(best, candidate):
    """Merges one restart's `(x_adv, loss, fooled)` into the best so far, per example.

    A fooling point beats any other and is never replaced; among non-fooling
    ones the higher loss wins.
    """
    x_best, best_loss, best_fooled = best
    x_adv, loss, fooled = candidate
    take = ~best_fooled & (fooled | (loss > best_loss))
    return select_per_example(take, x_adv, x_best), tf.where(take, loss, best_loss), best_fooled | fooled


def bisect_constant(const, lower, upper, succeeded):
    """One step of the per-example binary search over a loss constant (Carlini-Wagner, EAD).

    After a success the constant's upper bound drops to it, after a failure its
    lower bound rises to it; the next constant is the midpoint once an upper
    bound is known, else ten times larger.

    Returns:
        `(const, lower, upper)` for the next round.
    """
    upper = tf.where(succeeded, tf.minimum(upper, const), upper)
    lower = tf.where(succeeded, lower, tf.maximum(lower, const))
    const = tf.where(upper < NO_UPPER_BOUND, (lower + upper) / 2.0, const * 10.0)
    return const, lower, upper


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


def require_norm(attack, norm, supported):
    """Raises a ValueError unless `norm` is `supported` (attacks defined for one norm only)."""
    if norm != supported:
        raise ValueError(f"{attack} supports only the {supported.capitalize()} threat model. "
                         f"Expected norm={supported!r}. Received: norm={norm!r}")
