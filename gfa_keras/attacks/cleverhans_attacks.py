"""FGSM, PGD, BIM and MIM: cleverhans' own TF2 code behind the uniform signature.

The attacks run cleverhans' functions unchanged, compiled with `tf.function` (one
trace per model, norm and setting, cached like every attack's here), and always with
the true labels: cleverhans would otherwise attack the model's own predictions, which
lets a wrong clean prediction pass as robust. FGSM and MIM take eps as a tensor, so an eps sweep
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

from gfa_keras.attacks import _common
from gfa_keras.attacks.base import project, register_attack, validate_attack_inputs
from gfa_keras.validation import check_number, check_positive_int

__all__ = ["fgsm", "pgd", "bim", "mim"]

# cleverhans names norms by NumPy order.
_NORM_ORDER = {"linf": np.inf, "l2": 2}


def _build_fgm(model_ref, norm, clip_min, clip_max):
    @tf.function(reduce_retracing=True)
    def run(x, y, eps):
        return fast_gradient_method(
            model_ref(), x, eps, _NORM_ORDER[norm], clip_min=clip_min, clip_max=clip_max, y=y, sanity_checks=False
        )

    return run


def _build_pgd(model_ref, norm, eps, eps_iter, nb_iter, clip_min, clip_max):
    # cleverhans checks eps_iter <= eps in Python, so both are part of the trace.
    @tf.function(reduce_retracing=True)
    def run(x, y):
        return projected_gradient_descent(
            model_ref(), x, eps, eps_iter, nb_iter, _NORM_ORDER[norm], clip_min=clip_min, clip_max=clip_max,
            y=y, rand_init=True, sanity_checks=False,
        )

    return run


def _build_bim(model_ref, norm, eps, eps_iter, nb_iter, clip_min, clip_max):
    @tf.function(reduce_retracing=True)
    def run(x, y):
        return basic_iterative_method(
            model_ref(), x, eps, eps_iter, nb_iter, _NORM_ORDER[norm], clip_min=clip_min, clip_max=clip_max,
            y=y, sanity_checks=False,
        )

    return run


def _build_mim(model_ref, norm, nb_iter, decay_factor, clip_min, clip_max):
    @tf.function(reduce_retracing=True)
    def run(x, y, eps, eps_iter):
        return momentum_iterative_method(
            model_ref(), x, eps, eps_iter, nb_iter, _NORM_ORDER[norm], clip_min=clip_min, clip_max=clip_max,
            y=y, decay_factor=decay_factor, sanity_checks=False,
        )

    return run


def _build_loss_and_fooled(model_ref):
    @tf.function(reduce_retracing=True)
    def run(x, y):
        logits = model_ref()(x)
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
        return loss, tf.argmax(logits, axis=1, output_type=tf.int32) != y

    return run


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
    x, y = validate_attack_inputs(x, y, eps=eps, norm=norm, clip_min=clip_min, clip_max=clip_max)
    if x.shape[0] == 0:
        return tf.identity(x)
    _common.clean_logits(model, x, y)
    if eps == 0:
        return tf.identity(x)
    run = _common.compiled(model, (norm, float(clip_min), float(clip_max)), _build_fgm)
    return _finish(run(x, y, tf.constant(eps, tf.float32)), x, eps, norm, clip_min, clip_max)


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
    x, y = validate_attack_inputs(x, y, eps=eps, norm=norm, clip_min=clip_min, clip_max=clip_max)
    steps = check_positive_int("steps", steps)
    restarts = check_positive_int("restarts", restarts)
    eps_iter = _step_size(step_size, 2.5 * eps / steps, eps)
    if x.shape[0] == 0:
        return tf.identity(x)
    _common.clean_logits(model, x, y)
    if eps == 0:
        return tf.identity(x)
    run = _common.compiled(model, (norm, float(eps), eps_iter, steps, float(clip_min), float(clip_max)), _build_pgd)
    loss_and_fooled = _common.compiled(model, (), _build_loss_and_fooled)
    best = _common.no_restart_yet(x)
    for _ in range(restarts):
        x_adv = _finish(run(x, y), x, eps, norm, clip_min, clip_max)
        best = _common.keep_best_restart(best, (x_adv, *loss_and_fooled(x_adv, y)))
        if bool(tf.reduce_all(best[2])):
            break
    return best[0]


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
    x, y = validate_attack_inputs(x, y, eps=eps, norm=norm, clip_min=clip_min, clip_max=clip_max)
    steps = check_positive_int("steps", steps)
    eps_iter = _step_size(step_size, 2.5 * eps / steps, eps)
    if x.shape[0] == 0:
        return tf.identity(x)
    _common.clean_logits(model, x, y)
    if eps == 0:
        return tf.identity(x)
    run = _common.compiled(model, (norm, float(eps), eps_iter, steps, float(clip_min), float(clip_max)), _build_bim)
    return _finish(run(x, y), x, eps, norm, clip_min, clip_max)


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
        decay_factor: Momentum decay `mu`, >= 0.

    Returns:
        `x_adv`, a float32 tensor of the shape of `x`.

    Raises:
        ValueError: On invalid inputs, `steps < 1`, `step_size <= 0` or `decay_factor < 0`.

    Example:

    >>> x_adv = mim(model, x_test, y_test, eps=0.1, steps=10)
    """
    x, y = validate_attack_inputs(x, y, eps=eps, norm=norm, clip_min=clip_min, clip_max=clip_max)
    steps = check_positive_int("steps", steps)
    eps_iter = _step_size(step_size, eps / steps, eps)
    decay_factor = check_number("decay_factor", decay_factor, low=0.0)
    if x.shape[0] == 0:
        return tf.identity(x)
    _common.clean_logits(model, x, y)
    if eps == 0:
        return tf.identity(x)
    run = _common.compiled(model, (norm, steps, decay_factor, float(clip_min), float(clip_max)), _build_mim)
    x_adv = run(x, y, tf.constant(eps, tf.float32), tf.constant(eps_iter, tf.float32))
    return _finish(x_adv, x, eps, norm, clip_min, clip_max)
