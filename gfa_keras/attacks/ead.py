"""EAD, the elastic-net attack (Chen et al., 2018): a Carlini-Wagner style attack
whose distortion is `beta * L1 + L2^2`, optimized by FISTA with a binary search
over the loss constant."""
from __future__ import annotations

import tensorflow as tf

from gfa_keras.attacks import _common
from gfa_keras.attacks.base import register_attack, validate_attack_inputs
from gfa_keras.threat_model import per_example
from gfa_keras.validation import check_choice, check_number, check_positive_int

__all__ = ["ead"]

_DECISION_RULES = ("EN", "L1")


@register_attack("ead", norms=("l2",), kind="minimum_norm")
def ead(
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
    beta: float = 1e-3,
    binary_search_steps: int = 9,
    initial_const: float = 1.0,
    confidence: float = 0.0,
    learning_rate: float = 1e-2,
    decision_rule: str = "EN",
    targets=None,
) -> tf.Tensor:
    """EAD: minimizes `c * f(x') + ||x' - x||_2^2 + beta * ||x' - x||_1` in the box.

    `f` is the Carlini-Wagner margin `max(z_y - max_{k != y} z_k, -confidence)`
    (with `targets`: `max(max_{k != t} z_k - z_t, -confidence)`). Each of the
    `binary_search_steps` rounds runs `steps` FISTA iterations (gradient step on
    the smooth part, then soft-thresholding by `beta` toward `x`, with
    momentum and a square-root decaying learning rate) and then bisects each
    example's constant `c`: smaller after a success, larger (x10 until a first
    success) after a failure. Among the successful iterates the one with the
    smallest distortion (`decision_rule`: elastic net or L1) is kept. Examples
    already successful at `x` are returned unchanged.

    EAD finds sparse perturbations with a small L1 norm; it is registered for
    the L2 threat model, whose `eps` it is checked against. Measure its L1 norm
    with `perturbation_norms(x, x_adv, "l1")`.

    Args:
        model: Callable mapping a batch to logits.
        x: Float batch in `[clip_min, clip_max]`.
        y: True integer labels, shape `[batch]`.
        eps: Optional bound in `norm`. Examples whose best perturbation exceeds
            it are returned as `x`.
        norm: Norm of the `eps` check, `"l2"` or `"linf"`; the attack itself
            always minimizes the elastic net.
        steps: FISTA iterations per binary-search round (the paper uses 1000).
        clip_min: Lower end of the input box.
        clip_max: Upper end of the input box.
        seed: Unused (EAD is deterministic); kept for the uniform signature.
        beta: Weight of the L1 term, >= 0 (beta 0 gives an L2 attack).
        binary_search_steps: Rounds of the search over the constant `c`.
        initial_const: Starting `c`, > 0. (IBM ART's 1e-3 is usually too small
            to find anything in few rounds.)
        confidence: Margin `kappa` >= 0 by which the attack must succeed.
        learning_rate: Initial FISTA step size, > 0.
        decision_rule: `"EN"` or `"L1"`: distortion used to choose the best
            successful iterate.
        targets: Optional integer target labels, shape `[batch]`, each different
            from `y`; then only reaching the target counts.

    Returns:
        The adversarial batch, a float32 tensor of `x`'s shape in the box.

    Raises:
        ValueError: for invalid inputs or options.

    Example:

    ```python
    x_adv = ead(model, x_test, y_test, beta=1e-2, binary_search_steps=5)
    l1 = perturbation_norms(x_test, x_adv, "l1")
    ```
    """
    x, y = validate_attack_inputs(
        x, y, eps=eps, norm=norm, clip_min=clip_min, clip_max=clip_max, allow_eps_none=True
    )
    steps = check_positive_int("steps", steps)
    binary_search_steps = check_positive_int("binary_search_steps", binary_search_steps)
    beta = check_number("beta", beta, low=0.0)
    initial_const = check_number("initial_const", initial_const, low=0.0, low_open=True)
    confidence = check_number("confidence", confidence, low=0.0)
    learning_rate = check_number("learning_rate", learning_rate, low=0.0, low_open=True)
    check_choice("decision_rule", decision_rule, _DECISION_RULES)
    if x.shape[0] == 0:
        return tf.identity(x)
    logits, targets = _common.clean_logits(model, x, y, targets)
    if eps == 0:
        return tf.identity(x)
    hit_target = targets is not None
    targets = y if targets is None else targets
    run = _common.compiled(
        model,
        (steps, beta, confidence, learning_rate, decision_rule, hit_target, float(clip_min), float(clip_max)),
        _build_fista,
    )
    batch = x.shape[0]
    already = _common.margin(logits, y, targets if hit_target else None) < 0
    best_distance = tf.where(already, 0.0, float("inf"))
    best_adv = x
    const = tf.fill([batch], initial_const)
    lower, upper = tf.zeros([batch]), tf.fill([batch], _common.NO_UPPER_BOUND)
    for _ in range(binary_search_steps):
        succeeded, best_distance, best_adv = run(x, y, targets, const, best_distance, best_adv)
        const, lower, upper = _common.bisect_constant(const, lower, upper, succeeded)
    return _common.keep_within_eps(x, best_adv, eps, norm)


def _build_fista(model_ref, steps, beta, confidence, learning_rate, decision_rule, hit_target, clip_min, clip_max):
    @tf.function(reduce_retracing=True)
    def run(x, y, targets, const, best_distance, best_adv):
        model = model_ref()
        rank = len(x.shape)
        axes = list(range(1, rank))
        current, slack = x, x
        succeeded = tf.zeros_like(best_distance, tf.bool)
        for k in tf.range(steps):
            progress = tf.cast(k, tf.float32) / steps
            with tf.GradientTape() as tape:
                tape.watch(slack)
                margin = _common.margin(tf.cast(model(slack), tf.float32), y, targets if hit_target else None)
                smooth = const * tf.maximum(margin, -confidence) + tf.reduce_sum(tf.square(slack - x), axis=axes)
            grad = tape.gradient(smooth, slack)
            moved = slack - learning_rate * tf.sqrt(1.0 - progress) * grad
            # Soft-thresholding toward x: the proximal step of beta * ||. - x||_1, kept in the box.
            shrunk = x + tf.sign(moved - x) * tf.maximum(tf.abs(moved - x) - beta, 0.0)
            shrunk = tf.clip_by_value(shrunk, clip_min, clip_max)
            momentum = tf.cast(k, tf.float32) / (tf.cast(k, tf.float32) + 3.0)
            slack = shrunk + momentum * (shrunk - current)
            current = shrunk

            margin_now = _common.margin(tf.cast(model(current), tf.float32), y, targets if hit_target else None)
            success = margin_now + confidence < 0
            l1 = tf.reduce_sum(tf.abs(current - x), axis=axes)
            distance = l1 if decision_rule == "L1" else beta * l1 + tf.reduce_sum(tf.square(current - x), axis=axes)
            better = success & (distance < best_distance)
            best_distance = tf.where(better, distance, best_distance)
            best_adv = tf.where(per_example(better, rank), current, best_adv)
            succeeded |= success
        return succeeded, best_distance, best_adv

    return run
