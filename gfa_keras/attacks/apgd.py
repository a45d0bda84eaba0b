"""Auto-PGD (Croce & Hein 2020): PGD with momentum and a step size it tunes itself.

"Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020; reference code fra31/auto-attack
(`autoattack/autopgd_base.py`). The step size starts at `2 * eps` and is halved
at checkpoints where the loss stopped improving, restarting from the best point
so far. A whole run (all steps, all checkpoints) is one compiled `tf.function`
per model and settings, with `eps` as a tensor, so a sweep over eps does not retrace.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from gfa_keras.attacks import _common
from gfa_keras.attacks._common import select_per_example
from gfa_keras.attacks.base import project, register_attack, validate_attack_inputs
from gfa_keras.threat_model import per_example
from gfa_keras.validation import check_positive_int

__all__ = ["apgd_ce", "apgd_t"]

_MOMENTUM = 0.75  # weight of the new step; the rest follows the previous step
_RHO = 0.75  # halve the step if the loss rose in fewer than this share of the steps


def _checkpoint_schedule(steps):
    """Per step: whether it ends a checkpoint window, and that window's length.

    Windows shrink from 22% of the steps by 3% at a time down to 6%, the
    paper's checkpoints p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06).
    """
    window = max(int(0.22 * steps), 1)
    shrink = max(int(0.03 * steps), 1)
    smallest = max(int(0.06 * steps), 1)
    is_checkpoint = np.zeros(steps, dtype=bool)
    lengths = np.zeros(steps, dtype=np.float32)
    i = window - 1
    while i < steps:
        is_checkpoint[i] = True
        lengths[i] = window
        window = max(window - shrink, smallest)
        i += window
    return tf.constant(is_checkpoint), tf.constant(lengths)


def _cross_entropy(logits, y, target):
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)


def _targeted_dlr(logits, y, target):
    """Targeted Difference of Logits Ratio: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)."""
    top = tf.math.top_k(logits, k=4).values
    z_y = tf.gather(logits, y, axis=1, batch_dims=1)
    z_t = tf.gather(logits, target, axis=1, batch_dims=1)
    return -(z_y - z_t) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


_LOSSES = {"ce": _cross_entropy, "dlr_targeted": _targeted_dlr}


def _normalize(v, norm):
    flat = tf.reshape(v, [tf.shape(v)[0], -1])
    size = tf.reduce_max(tf.abs(flat), axis=1) if norm == "linf" else tf.norm(flat, axis=1)
    return v / per_example(size + 1e-12, len(v.shape))


def _build_apgd_run(model_ref, norm, steps, loss, hit_target, clip_min, clip_max):
    """Compiles one APGD run from a random start: `run(x, y, target, eps, noise)`.

    The run returns `(x_best, loss_best, fooled, x_fooled)`: the highest-loss
    point, its loss, whether any step fooled the model, and the first point that did.
    """

    @tf.function(reduce_retracing=True)
    def run(x, y, target, eps, noise):
        return _apgd_run(model_ref(), x, y, target, eps, noise, norm=norm, steps=steps, loss=loss,
                         hit_target=hit_target, clip_min=clip_min, clip_max=clip_max)

    return run


def _apgd_run(model, x, y, target, eps, noise, *, norm, steps, loss, hit_target, clip_min, clip_max):
    """The body of one APGD run (traced inside `_build_apgd_run`'s function), from
    `x + eps * noise / ||noise||` (see `_start_noise`)."""
    loss_fn = _LOSSES[loss]
    rank = len(x.shape)
    is_checkpoint, window_lengths = _checkpoint_schedule(steps)

    def evaluate(x_adv):
        with tf.GradientTape() as tape:
            tape.watch(x_adv)
            logits = model(x_adv)
            losses = loss_fn(logits, y, target)
            total = tf.reduce_sum(losses)
        grad = tape.gradient(total, x_adv)
        pred = tf.argmax(logits, axis=1, output_type=tf.int32)
        fooled = tf.equal(pred, target) if hit_target else tf.not_equal(pred, y)
        return losses, grad, fooled

    def ascend(x_adv, grad, step):
        direction = tf.sign(grad) if norm == "linf" else _normalize(grad, "l2")
        return project(
            x_adv + per_example(step, rank) * direction, x, eps, norm, clip_min, clip_max
        )

    x_adv = tf.clip_by_value(x + eps * _normalize(noise, norm), clip_min, clip_max)

    losses, grad, fooled = evaluate(x_adv)
    x_fooled, ever_fooled = x_adv, fooled
    x_best, loss_best, grad_best = x_adv, losses, grad
    step = 2.0 * eps * tf.ones_like(losses)
    x_prev = x_adv
    prev_losses = losses
    increases = tf.zeros_like(losses)
    loss_best_last_check = loss_best
    reduced_last_check = tf.ones_like(losses, dtype=tf.bool)

    for i in tf.range(steps):
        # Momentum: move part of the way to the plain PGD point, the rest along the last step.
        a = tf.where(i > 0, _MOMENTUM, 1.0)
        z = ascend(x_adv, grad, step)
        x_next = project(
            x_adv + a * (z - x_adv) + (1.0 - a) * (x_adv - x_prev), x, eps, norm, clip_min, clip_max
        )
        x_prev, x_adv = x_adv, x_next

        losses, grad, fooled = evaluate(x_adv)
        newly_fooled = fooled & ~ever_fooled
        x_fooled = select_per_example(newly_fooled, x_adv, x_fooled)
        ever_fooled = ever_fooled | fooled

        improved = losses > loss_best
        x_best = select_per_example(improved, x_adv, x_best)
        grad_best = select_per_example(improved, grad, grad_best)
        loss_best = tf.where(improved, losses, loss_best)
        increases += tf.cast(losses > prev_losses, losses.dtype)
        prev_losses = losses

        if is_checkpoint[i]:
            oscillating = increases <= _RHO * window_lengths[i]
            stalled = ~reduced_last_check & (loss_best_last_check >= loss_best)
            reduce = oscillating | stalled
            step = tf.where(reduce, step / 2.0, step)
            x_adv = select_per_example(reduce, x_best, x_adv)
            grad = select_per_example(reduce, grad_best, grad)
            reduced_last_check = reduce
            loss_best_last_check = loss_best
            increases = tf.zeros_like(increases)

    return x_best, loss_best, ever_fooled, x_fooled


def _start_noise(shape, seed, norm):
    """The random direction of a run's start: uniform in [-1, 1] (Linf) or Gaussian (L2)."""
    if norm == "linf":
        return tf.random.stateless_uniform(shape, seed, -1.0, 1.0)
    return tf.random.stateless_normal(shape, seed)


def _run_restarts(model, x, y, target, eps, seed, restarts, best, first_stream=0, todo=None, **options):
    """Runs `restarts` APGD runs and merges them into `best` = (x_adv, loss, fooled).

    Run `r` draws its start from the stateless seed `(seed, first_stream + r)`, for
    the whole batch `x`. With `todo` (indices into `x`), only those examples are
    attacked, from the same starts as in the whole batch, and `best` holds just
    them: an example's result does not depend on which others are attacked with it.
    """
    run = _common.compiled(model, tuple(options[k] for k in _RUN_SETTINGS), _build_apgd_run)
    eps = tf.constant(eps, tf.float32)
    if todo is not None:
        whole_shape = tf.shape(x)
        x, y, target = (tf.gather(t, todo) for t in (x, y, target))
    for restart in range(restarts):
        if bool(tf.reduce_all(best[2])):
            break
        run_seed = tf.constant([seed, first_stream + restart], tf.int64)
        if todo is None:
            noise = _start_noise(tf.shape(x), run_seed, options["norm"])
        else:
            noise = tf.gather(_start_noise(whole_shape, run_seed, options["norm"]), todo)
        x_best, loss_best, fooled, x_fooled = run(x, y, target, eps, noise)
        best = _common.keep_best_restart(best, (select_per_example(fooled, x_fooled, x_best), loss_best, fooled))
    return best


_RUN_SETTINGS = ("norm", "steps", "loss", "hit_target", "clip_min", "clip_max")


@register_attack("apgd_ce", norms=("linf", "l2"))
def apgd_ce(
    model,
    x,
    y,
    *,
    eps: float,
    norm: str = "linf",
    steps: int = 100,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    seed: int = 0,
    restarts: int = 1,
) -> tf.Tensor:
    """Untargeted APGD on the cross-entropy loss.

    Per example it returns the first point that fools the model, or else the
    highest-loss point of all restarts.

    Args:
        model: Callable mapping a batch to logits.
        x: Float batch in `[clip_min, clip_max]`.
        y: True integer labels, shape `[batch]`.
        eps: Radius of the `norm` ball.
        norm: `"linf"` or `"l2"`.
        steps: Iterations per restart (AutoAttack uses 100).
        clip_min: Lowest valid input value.
        clip_max: Highest valid input value.
        seed: Seed of the random starts.
        restarts: Number of random starts; later ones only matter for the
            examples not yet fooled.

    Returns:
        `x_adv`, a float32 tensor of the shape of `x`.

    Raises:
        ValueError: On invalid inputs, `steps < 1` or `restarts < 1`.

    Example:

    >>> x_adv = apgd_ce(model, x_test, y_test, eps=8 / 255, steps=100)
    """
    x, y = validate_attack_inputs(x, y, eps=eps, norm=norm, clip_min=clip_min, clip_max=clip_max)
    steps = check_positive_int("steps", steps)
    restarts = check_positive_int("restarts", restarts)
    if x.shape[0] == 0:
        return tf.identity(x)
    _common.clean_logits(model, x, y)
    if eps == 0:
        return tf.identity(x)
    options = dict(
        norm=norm,
        steps=steps,
        loss="ce",
        hit_target=False,
        clip_min=float(clip_min),
        clip_max=float(clip_max),
    )
    x_adv, _, _ = _run_restarts(model, x, y, y, eps, seed, restarts, _common.no_restart_yet(x), **options)
    return x_adv


@register_attack("apgd_t", norms=("linf", "l2"))
def apgd_t(
    model,
    x,
    y,
    *,
    eps: float,
    norm: str = "linf",
    steps: int = 100,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    seed: int = 0,
    restarts: int = 1,
    num_target_classes: int | None = None,
    targets=None,
) -> tf.Tensor:
    """Targeted APGD on the DLR loss, as in AutoAttack's APGD-T.

    Without `targets`, it attacks in turn the classes the model ranks 2nd,
    3rd, ... on the clean input (`num_target_classes` of them), each only on
    the examples no earlier target fooled, and any misclassification counts.
    With explicit `targets`, only reaching the target class counts. The model
    needs at least 4 classes (the DLR denominator).

    Args:
        model: Callable mapping a batch to logits.
        x: Float batch in `[clip_min, clip_max]`.
        y: True integer labels, shape `[batch]`.
        eps: Radius of the `norm` ball.
        norm: `"linf"` or `"l2"`.
        steps: Iterations per restart and target (AutoAttack uses 100).
        clip_min: Lowest valid input value.
        clip_max: Highest valid input value.
        seed: Seed of the random starts.
        restarts: Random starts per target class.
        num_target_classes: How many of the top-ranked wrong classes to target
            when `targets` is None. Default: AutoAttack's 9, or all the other
            classes if there are fewer.
        targets: Optional integer target labels, shape `[batch]`, each
            different from `y`.

    Returns:
        `x_adv`, a float32 tensor of the shape of `x`.

    Raises:
        ValueError: On invalid inputs, fewer than 4 classes, targets out of
            range or equal to `y`, or a `num_target_classes` outside
            `[1, num_classes - 1]`.

    Example:

    >>> x_adv = apgd_t(model, x_test, y_test, eps=8 / 255, num_target_classes=9)
    """
    x, y = validate_attack_inputs(x, y, eps=eps, norm=norm, clip_min=clip_min, clip_max=clip_max)
    steps = check_positive_int("steps", steps)
    restarts = check_positive_int("restarts", restarts)
    if num_target_classes is not None:
        num_target_classes = check_positive_int("num_target_classes", num_target_classes)
    if x.shape[0] == 0:
        return tf.identity(x)
    logits, targets = _common.clean_logits(model, x, y, targets)
    num_classes = logits.shape[1]
    if num_classes < 4:
        raise ValueError(
            "apgd_t's targeted DLR loss needs a model with at least 4 classes. "
            f"Received: num_classes={num_classes}"
        )
    if targets is None:
        if num_target_classes is None:
            num_target_classes = min(9, num_classes - 1)
        if num_target_classes > num_classes - 1:
            raise ValueError(
                f"num_target_classes must be at most num_classes - 1 = {num_classes - 1}. "
                f"Received: num_target_classes={num_target_classes}"
            )
    if eps == 0:
        return tf.identity(x)
    options = dict(
        norm=norm, steps=steps, loss="dlr_targeted", clip_min=float(clip_min), clip_max=float(clip_max)
    )

    if targets is not None:
        x_adv, _, _ = _run_restarts(
            model, x, y, targets, eps, seed, restarts, _common.no_restart_yet(x), hit_target=True, **options
        )
        return x_adv
    ranking = tf.argsort(logits, axis=1, direction="DESCENDING", stable=True)
    x_adv, fooled = x, tf.zeros([x.shape[0]], tf.bool)
    for rank in range(1, num_target_classes + 1):
        # As the reference, each target attacks only the examples no earlier target fooled
        # (a fooling point is final); a fresh loss for each target, since losses of
        # different targets are not comparable.
        todo = tf.where(~fooled)[:, 0]
        if todo.shape[0] == 0:
            break
        start = (tf.gather(x_adv, todo), tf.fill(tf.shape(todo), -np.inf), tf.zeros(tf.shape(todo), tf.bool))
        x_todo, _, fooled_todo = _run_restarts(
            model,
            x,
            y,
            ranking[:, rank],
            eps,
            seed,
            restarts,
            start,
            first_stream=rank * restarts,
            todo=todo,
            hit_target=False,
            **options,
        )
        x_adv = tf.tensor_scatter_nd_update(x_adv, todo[:, None], x_todo)
        fooled = tf.tensor_scatter_nd_update(fooled, todo[:, None], fooled_todo)
    return x_adv
