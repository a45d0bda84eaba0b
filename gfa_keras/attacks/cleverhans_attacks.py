"""FGSM, PGD, BIM and MIM: cleverhans' own TF2 code behind the uniform signature.

The attacks run cleverhans' functions unchanged, compiled with `tf.function` (one
trace per model, norm and setting), and always with the true labels: cleverhans
would otherwise attack the model's own predictions, which lets a wrong clean
prediction pass as robust. FGSM and MIM take eps as a tensor, so an eps sweep
reuses one trace; PGD and BIM need Python floats (cleverhans asserts
`eps_iter <= eps` in Python) and trace once per eps.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from cleverhans.tf2.attacks.basic_iterative_method import basic_iterative_method
from cleverhans.tf2.attacks.fast_gradient_method import fast_gradient_method
from cleverhans.tf2.attacks.momentum_iterative_method import momentum_iterative_method
from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent

from gfa_keras.attacks._common import check_number, check_positive_int, select_per_example, validate_for_model
from gfa_keras.attacks.base import project, register_attack

__all__ = ["fgsm", "pgd", "bim", "mim"]

# cleverhans names norms by NumPy order.
_NORM_ORDER = {"linf": np.inf, "l2": 2}


@tf.function(reduce_retracing=True)
def _fgm(model, x, y, eps, order, clip_min, clip_max):
    return fast_gradient_method(
        model, x, eps, order, clip_min=clip_min, clip_max=clip_max, y=y, sanity_checks=False
    )


@tf.function(reduce_retracing=True)
def _pgd(model, x, y, eps, eps_iter, nb_iter, order, clip_min, clip_max):
    return projected_gradient_descent(
        model,
        x,
        eps,
        eps_iter,
        nb_iter,
        order,
        clip_min=clip_min,
        clip_max=clip_max,
        y=y,
        rand_init=True,
        sanity_checks=False,
    )


@tf.function(reduce_retracing=True)
def _bim(model, x, y, eps, eps_iter, nb_iter, order, clip_min, clip_max):
    return basic_iterative_method(
        model,
        x,
        eps,
        eps_iter,
        nb_iter,
        order,
        clip_min=clip_min,
        clip_max=clip_max,
        y=y,
        sanity_checks=False,
    )


@tf.function(reduce_retracing=True)
def _mim(model, x, y, eps, eps_iter, nb_iter, order, clip_min, clip_max, decay_factor):
    return momentum_iterative_method(
        model,
        x,
        eps,
        eps_iter,
        nb_iter,
        order,
        clip_min=clip_min,
        clip_max=clip_max,
        y=y,
        decay_factor=decay_factor,
        sanity_checks=False,
    )


@tf.function(reduce_retracing=True)
def _loss_and_fooled(model, x, y):
    logits = model(x)
    loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
    return loss, tf.argmax(logits, axis=1, output_type=tf.int32) != y


def _step_size(step_size, default, eps):
    if step_size is None:
        step_size = default
    else:
        step_size = check_number("step_size", step_size, low=0.0, low_open=True)
    # cleverhans requires eps_iter <= eps; a larger step would be clipped anyway.
    return float(min(step_size, eps))


def _finish(x_adv, x, eps, norm, clip_min, clip_max):
    # Re-project: cleverhans' L2 clip is approximate (1e-12 inside the sqrt).
    return project(tf.cast(x_adv, tf.float32), x, eps, norm, clip_min, clip_max)


@register_attack("fgsm", norms=("linf", "l2"), source="cleverhans")
def fgsm(
    model,
    x,
    y,
    *,
    eps: float,
    norm: str = "linf",
    steps: int = 1,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    seed: int = 0,
) -> tf.Tensor:
    """Fast Gradient (Sign) Method: one step of size `eps` up the cross-entropy.

    Linf: `x + eps * sign(g)`; L2: `x + eps * g / ||g||`, then clipped to the box
    (Goodfellow et al. 2015). Runs `cleverhans.tf2.attacks.fast_gradient_method`.

    Args:
        model: Callable mapping a batch to logits.
        x: Float batch in `[clip_min, clip_max]`.
        y: True integer labels, shape `[batch]`.
        eps: Size of the step, the radius of the `norm` ball.
        norm: `"linf"` or `"l2"`.
        steps: Unused (a single step); accepted for the uniform signature.
        clip_min: Lowest valid input value.
        clip_max: Highest valid input value.
        seed: Unused (deterministic); accepted for the uniform signature.

    Returns:
        `x_adv`, a float32 tensor of the shape of `x`.

    Raises:
        ValueError: On invalid inputs (see `validate_attack_inputs`).

    Example:

    >>> x_adv = fgsm(model, x_test, y_test, eps=0.1)
    """
    x, y, _ = validate_for_model(model, x, y, eps=eps, norm=norm, clip_min=clip_min, clip_max=clip_max)
    if eps == 0:
        return x
    x_adv = _fgm(
        model, x, y, tf.constant(eps, tf.float32), _NORM_ORDER[norm], float(clip_min), float(clip_max)
    )
    return _finish(x_adv, x, eps, norm, clip_min, clip_max)


@register_attack("pgd", norms=("linf", "l2"), source="cleverhans")
def pgd(
    model,
    x,
    y,
    *,
    eps: float,
    norm: str = "linf",
    steps: int = 40,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    seed: int = 0,
    step_size: float | None = None,
    restarts: int = 1,
) -> tf.Tensor:
    """Projected Gradient Descent with a random start (Madry et al. 2018).

    Runs `cleverhans.tf2.attacks.projected_gradient_descent` `restarts` times and
    keeps, per example, the first restart that fools the model, or else the one
    with the highest cross-entropy.

    cleverhans draws the random start from TensorFlow's global random state
    (`keras.utils.set_random_seed` makes it reproducible); `seed` cannot reach it.

    Args:
        model: Callable mapping a batch to logits.
        x: Float batch in `[clip_min, clip_max]`.
        y: True integer labels, shape `[batch]`.
        eps: Radius of the `norm` ball.
        norm: `"linf"` or `"l2"`.
        steps: Gradient steps per restart.
        clip_min: Lowest valid input value.
        clip_max: Highest valid input value.
        seed: Unused (see above); accepted for the uniform signature.
        step_size: Size of each step; default `2.5 * eps / steps`, capped at `eps`.
        restarts: Number of random starts.

    Returns:
        `x_adv`, a float32 tensor of the shape of `x`.

    Raises:
        ValueError: On invalid inputs, `steps < 1`, `restarts < 1` or `step_size <= 0`.

    Example:

    >>> x_adv = pgd(model, x_test, y_test, eps=0.1, steps=40, restarts=5)
    """
    x, y, _ = validate_for_model(model, x, y, eps=eps, norm=norm, clip_min=clip_min, clip_max=clip_max)
    steps = check_positive_int("steps", steps)
    restarts = check_positive_int("restarts", restarts)
    eps_iter = _step_size(step_size, 2.5 * eps / steps, eps)
    if eps == 0:
        return x
    args = (float(eps), eps_iter, steps, _NORM_ORDER[norm], float(clip_min), float(clip_max))

    best, best_loss, best_fooled = None, None, None
    for _ in range(restarts):
        x_adv = _finish(_pgd(model, x, y, *args), x, eps, norm, clip_min, clip_max)
        loss, fooled = _loss_and_fooled(model, x_adv, y)
        if best is None:
            best, best_loss, best_fooled = x_adv, loss, fooled
        else:
            # A fooling restart beats any other; among non-fooling ones the higher loss wins.
            better = ~best_fooled & (fooled | (loss > best_loss))
            best = select_per_example(better, x_adv, best)
            best_loss = tf.where(better, loss, best_loss)
            best_fooled = best_fooled | fooled
        if bool(tf.reduce_all(best_fooled)):
            break
    return best


@register_attack("bim", norms=("linf", "l2"), source="cleverhans")
def bim(
    model,
    x,
    y,
    *,
    eps: float,
    norm: str = "linf",
    steps: int = 10,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    seed: int = 0,
    step_size: float | None = None,
) -> tf.Tensor:
    """Basic Iterative Method (Kurakin et al. 2017): PGD started at `x` itself.

    Runs `cleverhans.tf2.attacks.basic_iterative_method`.

    Args:
        model: Callable mapping a batch to logits.
        x: Float batch in `[clip_min, clip_max]`.
        y: True integer labels, shape `[batch]`.
        eps: Radius of the `norm` ball.
        norm: `"linf"` or `"l2"`.
        steps: Gradient steps.
        clip_min: Lowest valid input value.
        clip_max: Highest valid input value.
        seed: Unused (deterministic); accepted for the uniform signature.
        step_size: Size of each step; default `2.5 * eps / steps`, capped at `eps`.

    Returns:
        `x_adv`, a float32 tensor of the shape of `x`.

    Raises:
        ValueError: On invalid inputs, `steps < 1` or `step_size <= 0`.

    Example:

    >>> x_adv = bim(model, x_test, y_test, eps=0.1, steps=10)
    """
    x, y, _ = validate_for_model(model, x, y, eps=eps, norm=norm, clip_min=clip_min, clip_max=clip_max)
    steps = check_positive_int("steps", steps)
    eps_iter = _step_size(step_size, 2.5 * eps / steps, eps)
    if eps == 0:
        return x
    x_adv = _bim(
        model, x, y, float(eps), eps_iter, steps, _NORM_ORDER[norm], float(clip_min), float(clip_max)
    )
    return _finish(x_adv, x, eps, norm, clip_min, clip_max)


@register_attack("mim", norms=("linf", "l2"), source="cleverhans")
def mim(
    model,
    x,
    y,
    *,
    eps: float,
    norm: str = "linf",
    steps: int = 10,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    seed: int = 0,
    step_size: float | None = None,
    decay_factor: float = 1.0,
) -> tf.Tensor:
    """Momentum Iterative Method (Dong et al. 2018): iterative FGSM with momentum.

    Runs `cleverhans.tf2.attacks.momentum_iterative_method`.

    Args:
        model: Callable mapping a batch to logits.
        x: Float batch in `[clip_min, clip_max]`.
        y: True integer labels, shape `[batch]`.
        eps: Radius of the `norm` ball.
        norm: `"linf"` or `"l2"`.
        steps: Gradient steps.
        clip_min: Lowest valid input value.
        clip_max: Highest valid input value.
        seed: Unused (deterministic); accepted for the uniform signature.
        step_size: Size of each step; default `eps / steps` as in the paper.
        decay_factor: Momentum decay `mu`.

    Returns:
        `x_adv`, a float32 tensor of the shape of `x`.

    Raises:
        ValueError: On invalid inputs, `steps < 1` or `step_size <= 0`.

    Example:

    >>> x_adv = mim(model, x_test, y_test, eps=0.1, steps=10)
    """
    x, y, _ = validate_for_model(model, x, y, eps=eps, norm=norm, clip_min=clip_min, clip_max=clip_max)
    steps = check_positive_int("steps", steps)
    eps_iter = _step_size(step_size, eps / steps, eps)
    if eps == 0:
        return x
    x_adv = _mim(
        model,
        x,
        y,
        tf.constant(eps, tf.float32),
        tf.constant(eps_iter, tf.float32),
        steps,
        _NORM_ORDER[norm],
        float(clip_min),
        float(clip_max),
        float(decay_factor),
    )
    return _finish(x_adv, x, eps, norm, clip_min, clip_max)
