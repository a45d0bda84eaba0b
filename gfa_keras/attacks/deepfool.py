"""DeepFool (Moosavi-Dezfooli et al., 2016): a minimum-norm attack that walks to the
nearest linearized decision boundary, one step per iteration."""
from __future__ import annotations

import tensorflow as tf

from gfa_keras.attacks import _common
from gfa_keras.attacks.base import register_attack, validate_attack_inputs
from gfa_keras.validation import check_number, check_positive_int

__all__ = ["deepfool"]


@register_attack("deepfool", norms=("linf", "l2"), kind="minimum_norm")
def deepfool(
    model,
    x,
    y,
    *,
    eps: float | None = None,
    norm: str = "linf",
    steps: int = 50,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    seed: int = 0,
    overshoot: float = 0.02,
    num_candidate_classes: int = 10,
) -> tf.Tensor:
    """DeepFool: the smallest step to the nearest linearized decision boundary, repeated.

    Each iteration linearizes the logit differences `f_k - f_y` around the current
    point for the candidate classes `k` (the `num_candidate_classes - 1` classes
    with the largest clean logits besides `y`), steps onto the nearest of those
    hyperplanes (distance `|f_k - f_y| / ||grad(f_k - f_y)||_q`, `q` the dual norm),
    and stops for each example as soon as it is misclassified. The accumulated
    step is scaled by `1 + overshoot` to land past the boundary. Examples the
    model already misclassifies are returned unchanged.

    Args:
        model: Callable mapping a batch to logits.
        x: Float batch in `[clip_min, clip_max]`.
        y: True integer labels, shape `[batch]`.
        eps: Optional bound. Examples whose perturbation exceeds it are returned
            as `x`. None keeps every perturbation found.
        norm: `"l2"` (the original DeepFool) or `"linf"`.
        steps: Maximum iterations.
        clip_min: Lower end of the input box.
        clip_max: Upper end of the input box.
        seed: Unused (DeepFool is deterministic); kept for the uniform signature.
        overshoot: Relative overshoot past the linearized boundary, >= 0.
        num_candidate_classes: Classes considered, the true one included; values
            above the number of classes mean all of them.

    Returns:
        The adversarial batch, a float32 tensor of `x`'s shape in the box.

    Raises:
        ValueError: for invalid inputs or options.

    Example:

    ```python
    x_adv = deepfool(model, x_test, y_test, norm="l2")
    l2 = perturbation_norms(x_test, x_adv, "l2")
    ```
    """
    x, y = validate_attack_inputs(
        x, y, eps=eps, norm=norm, clip_min=clip_min, clip_max=clip_max, allow_eps_none=True
    )
    steps = check_positive_int("steps", steps)
    overshoot = check_number("overshoot", overshoot, low=0.0)
    num_candidate_classes = check_positive_int("num_candidate_classes", num_candidate_classes, minimum=2)
    if x.shape[0] == 0:
        return tf.identity(x)
    logits, _ = _common.clean_logits(model, x, y)
    if eps == 0:
        return tf.identity(x)
    num_others = min(num_candidate_classes, logits.shape[1]) - 1
    run = _common.compiled(
        model,
        (norm, steps, overshoot, num_others, float(clip_min), float(clip_max)),
        _build_deepfool,
    )
    x_adv = run(x, y)
    return _common.keep_within_eps(x, x_adv, eps, norm)


def _build_deepfool(model_ref, norm, steps, overshoot, num_others, clip_min, clip_max):
    @tf.function(reduce_retracing=True)
    def run(x, y):
        model = model_ref()
        batch = tf.shape(x)[0]
        clean = tf.cast(model(x), tf.float32)
        is_true = tf.one_hot(y, tf.shape(clean)[1], on_value=True, off_value=False)
        # Candidates are fixed from the clean logits, as in the original algorithm.
        candidates = tf.math.top_k(tf.where(is_true, -float("inf"), clean), k=num_others).indices
        active = tf.argmax(clean, axis=1, output_type=tf.int32) == y
        total_step = tf.zeros([batch, tf.reduce_prod(tf.shape(x)[1:])])
        x_adv = x
        for _ in tf.range(steps):
            with tf.GradientTape() as tape:
                tape.watch(x_adv)
                logits = tf.cast(model(x_adv), tf.float32)
                diffs = tf.gather(logits, candidates, batch_dims=1) - tf.gather(logits, y[:, None], batch_dims=1)
            active &= tf.argmax(logits, axis=1, output_type=tf.int32) == y
            if not tf.reduce_any(active):
                break
            grads = tf.reshape(tape.batch_jacobian(diffs, x_adv), [batch, num_others, -1])
            dual = tf.norm(grads, axis=2) if norm == "l2" else tf.reduce_sum(tf.abs(grads), axis=2)
            nearest = tf.argmin(tf.abs(diffs) / (dual + 1e-12), axis=1, output_type=tf.int32)
            diff = tf.gather(diffs, nearest[:, None], batch_dims=1)  # [batch, 1]
            dual = tf.gather(dual, nearest[:, None], batch_dims=1)
            grad = tf.gather(grads, nearest, batch_dims=1)
            # The 1e-4 pushes just across the hyperplane instead of onto it.
            if norm == "l2":
                step = (tf.abs(diff) + 1e-4) / (tf.square(dual) + 1e-12) * grad
            else:
                step = (tf.abs(diff) + 1e-4) / (dual + 1e-12) * tf.sign(grad)
            total_step += tf.where(active[:, None], step, 0.0)
            x_adv = tf.clip_by_value(x + (1.0 + overshoot) * tf.reshape(total_step, tf.shape(x)), clip_min, clip_max)
        return x_adv

    return run
