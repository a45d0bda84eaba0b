"""Carlini & Wagner's L2 attack, a minimum-norm attack (Carlini & Wagner 2017).

Written here rather than taken from cleverhans: cleverhans' `carlini_wagner_l2`
fails on Keras 3 (it calls `optimizer.variables()`, a list in Keras 3) and, once
patched, silently returns `x`: resetting the optimizer's variables also zeroes
its learning rate, and a Keras 3 optimizer stays bound to the first variables
it sees. This version runs Adam by hand on plain tensors, so nothing is shared
between calls.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from gfa_keras.attacks import _common
from gfa_keras.attacks._common import adam_update, margin, select_per_example
from gfa_keras.attacks.base import register_attack, validate_attack_inputs
from gfa_keras.validation import check_number, check_positive_int

__all__ = ["cw_l2"]


def _build_cw_l2(model_ref, steps, binary_search_steps, initial_const, confidence, learning_rate, clip_min, clip_max):
    @tf.function(reduce_retracing=True)
    def run(x, y):
        return _cw_l2(model_ref(), x, y, steps=steps, binary_search_steps=binary_search_steps,
                      initial_const=initial_const, confidence=confidence, learning_rate=learning_rate,
                      clip_min=clip_min, clip_max=clip_max)

    return run


def _cw_l2(model, x, y, *, steps, binary_search_steps, initial_const, confidence, learning_rate, clip_min, clip_max):
    """Returns the smallest successful point per example, or `x` where none succeeded."""
    width = clip_max - clip_min

    # tanh space: any w maps into the box, so Adam needs no projection.
    def to_input(w):
        return (tf.tanh(w) + 1.0) / 2.0 * width + clip_min

    x_unit = (x - clip_min) / width
    w_start = tf.atanh(tf.clip_by_value(2.0 * x_unit - 1.0, -1.0 + 1e-6, 1.0 - 1e-6))

    # Built from y so the per-example vectors keep a static batch size (loop invariants).
    ones = tf.ones_like(y, tf.float32)
    const = initial_const * ones
    lower = 0.0 * ones
    upper = _common.NO_UPPER_BOUND * ones
    best_l2 = np.inf * ones
    x_best = x

    for _ in tf.range(binary_search_steps):
        w = w_start
        m = tf.zeros_like(w)
        v = tf.zeros_like(w)
        succeeded = tf.zeros_like(y, tf.bool)
        for t in tf.range(1, steps + 1):
            with tf.GradientTape() as tape:
                tape.watch(w)
                x_adv = to_input(w)
                logits = model(x_adv)
                l2 = tf.reduce_sum(tf.square(x_adv - x), axis=list(range(1, len(x.shape))))
                # f6: positive until the best other logit beats the true one by `confidence`.
                shortfall = margin(logits, y) + confidence
                total = tf.reduce_sum(l2 + const * tf.maximum(shortfall, 0.0))
            grad = tape.gradient(total, w)

            success = shortfall < 0
            improved = success & (l2 < best_l2)
            best_l2 = tf.where(improved, l2, best_l2)
            x_best = select_per_example(improved, x_adv, x_best)
            succeeded = succeeded | success

            update, m, v = adam_update(grad, m, v, t, learning_rate)
            w = w - update

        const, lower, upper = _common.bisect_constant(const, lower, upper, succeeded)

    return x_best


@register_attack("cw_l2", norms=("l2",), kind="minimum_norm")
def cw_l2(
    model,
    x,
    y,
    *,
    eps: float | None = None,
    norm: str = "l2",
    steps: int = 100,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    seed: int = 0,
    binary_search_steps: int = 6,
    initial_const: float = 1e-2,
    confidence: float = 0.0,
    learning_rate: float = 0.1,
) -> tf.Tensor:
    """Carlini-Wagner L2: the smallest L2 perturbation it finds that fools the model.

    Minimizes `||x' - x||_2^2 + c * max(z_y - max_{j != y} z_j + confidence, 0)`
    over `x' = (tanh(w) + 1) / 2` (scaled to the box) with Adam, and binary
    searches `c` per example. Keeps, per example, the smallest successful
    perturbation over all steps; examples never fooled are returned unchanged.

    Args:
        model: Callable mapping a batch to logits.
        x: Float batch in `[clip_min, clip_max]`.
        y: True integer labels, shape `[batch]`.
        eps: Optional upper bound on the L2 norm; examples whose smallest
            perturbation is larger are returned unchanged. None: no bound.
        norm: Must be `"l2"`.
        steps: Adam steps per value of the constant.
        clip_min: Lowest valid input value.
        clip_max: Highest valid input value.
        seed: Unused (deterministic); accepted for the uniform signature.
        binary_search_steps: Number of values of the constant tried.
        initial_const: First value of the constant `c`.
        confidence: Margin by which the best other logit must beat the true one.
        learning_rate: Adam's step size in tanh space. Larger than the paper's
            1e-2, which assumes thousands of steps.

    Returns:
        `x_adv`, a float32 tensor of the shape of `x`.

    Raises:
        ValueError: On invalid inputs, `norm != "l2"`, non-positive counts or
            rates, or a negative `confidence`.

    Example:

    >>> x_adv = cw_l2(model, x_test, y_test, steps=100, binary_search_steps=6)
    >>> norms = perturbation_norms(x_test, x_adv, "l2")
    """
    _common.require_norm("cw_l2", norm, "l2")
    x, y = validate_attack_inputs(
        x, y, eps=eps, norm=norm, clip_min=clip_min, clip_max=clip_max, allow_eps_none=True
    )
    steps = check_positive_int("steps", steps)
    binary_search_steps = check_positive_int("binary_search_steps", binary_search_steps)
    initial_const = check_number("initial_const", initial_const, low=0.0, low_open=True)
    learning_rate = check_number("learning_rate", learning_rate, low=0.0, low_open=True)
    confidence = check_number("confidence", confidence, low=0.0)
    if x.shape[0] == 0:
        return tf.identity(x)
    _common.clean_logits(model, x, y)
    if eps == 0:
        return tf.identity(x)
    run = _common.compiled(
        model,
        (steps, binary_search_steps, initial_const, confidence, learning_rate, float(clip_min), float(clip_max)),
        _build_cw_l2,
    )
    # The bound is measured on the returned points, exactly as the evaluation checks it.
    return _common.keep_within_eps(x, run(x, y), eps, "l2")
