"""FAB, the Fast Adaptive Boundary attack (Croce & Hein, 2020): minimum-norm
perturbations by projecting onto linearized decision boundaries, with a bias
toward the original point. `fab_t` is AutoAttack's targeted variant FAB-T."""
from __future__ import annotations

import tensorflow as tf

from gfa_keras.attacks import _common
from gfa_keras.attacks.base import perturbation_norms, register_attack, validate_attack_inputs
from gfa_keras.threat_model import per_example
from gfa_keras.validation import check_number, check_positive_int

__all__ = ["fab", "fab_t"]

# Radius of the random restarts before any adversarial point is known, as a
# fraction of the box width (AutoAttack's defaults for inputs in [0, 1]).
_RESTART_RADIUS = {"linf": 0.3, "l2": 1.0}


@register_attack("fab", norms=("linf", "l2"), kind="minimum_norm")
def fab(
    model,
    x,
    y,
    *,
    eps: float | None = None,
    norm: str = "linf",
    steps: int = 100,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    seed: int = 0,
    restarts: int = 1,
    alpha_max: float = 0.1,
    eta: float = 1.05,
    beta: float = 0.9,
    targets=None,
) -> tf.Tensor:
    """FAB: the smallest perturbation that crosses the nearest (linearized) boundary.

    Each step linearizes the logit differences at the current point, picks the
    closest hyperplane, projects both the current point and the original point
    onto it (within the box), and moves to a convex combination of the two
    (weight on the original point at most `alpha_max`), overshooting by `eta`.
    Whenever the point is adversarial it is recorded if it is the smallest so
    far, and pulled back toward the original by `beta`. Restarts after the first
    start from a random point at half the best norm found (or of `eps`).

    Without `targets` all classes' boundaries are considered (untargeted FAB);
    with `targets`, only the target's boundary, and only reaching the target
    counts. Examples the model already misclassifies are returned unchanged.

    Args:
        model: Callable mapping a batch to logits.
        x: Float batch in `[clip_min, clip_max]`.
        y: True integer labels, shape `[batch]`.
        eps: Optional bound. Examples whose best perturbation exceeds it are
            returned as `x`; restarts skip examples already within it.
        norm: `"linf"` or `"l2"`.
        steps: Iterations per restart (AutoAttack uses 100).
        clip_min: Lower end of the input box.
        clip_max: Upper end of the input box.
        seed: Seed of the random restarts.
        restarts: Number of runs; the first starts at `x`.
        alpha_max: Largest weight of the original point's projection, in [0, 1].
        eta: Overshoot of each projection step, >= 1.
        beta: Backward step toward `x` after a success, in (0, 1].
        targets: Optional integer target labels, shape `[batch]`, each different
            from `y`.

    Returns:
        The adversarial batch, a float32 tensor of `x`'s shape in the box.

    Raises:
        ValueError: for invalid inputs or options.

    Example:

    ```python
    x_adv = fab(model, x_test, y_test, norm="l2", steps=100)
    ```
    """
    x, y = validate_attack_inputs(
        x, y, eps=eps, norm=norm, clip_min=clip_min, clip_max=clip_max, allow_eps_none=True
    )
    options = _check_options(steps, restarts, alpha_max, eta, beta)
    if x.shape[0] == 0:
        return tf.identity(x)
    logits, targets = _common.clean_logits(model, x, y, targets)
    if eps == 0:
        return tf.identity(x)
    target_sets = [None] if targets is None else [targets]
    return _fab(model, x, y, logits, target_sets, eps, norm, clip_min, clip_max, seed,
                hit_target=targets is not None, **options)


@register_attack("fab_t", norms=("linf", "l2"), kind="minimum_norm")
def fab_t(
    model,
    x,
    y,
    *,
    eps: float | None = None,
    norm: str = "linf",
    steps: int = 100,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    seed: int = 0,
    restarts: int = 1,
    num_target_classes: int = 9,
    alpha_max: float = 0.1,
    eta: float = 1.05,
    beta: float = 0.9,
) -> tf.Tensor:
    """FAB-T as in AutoAttack "standard": targeted FAB against the top wrong classes.

    Runs targeted FAB toward the classes with the 2nd, 3rd, ... largest clean
    logits (`num_target_classes` of them, fewer if the model has fewer classes),
    where any misclassification counts, and keeps per example the smallest
    perturbation over all targets and restarts. With `eps`, later targets only
    run on the examples not yet fooled within `eps`.

    Args:
        model: Callable mapping a batch to logits.
        x: Float batch in `[clip_min, clip_max]`.
        y: True integer labels, shape `[batch]`.
        eps: Optional bound; examples whose best perturbation exceeds it are
            returned as `x`.
        norm: `"linf"` or `"l2"`.
        steps: Iterations per target and restart (AutoAttack uses 100).
        clip_min: Lower end of the input box.
        clip_max: Upper end of the input box.
        seed: Seed of the random restarts.
        restarts: Runs per target class; the first starts at `x`.
        num_target_classes: How many top-ranked wrong classes to target
            (AutoAttack uses 9).
        alpha_max: Largest weight of the original point's projection, in [0, 1].
        eta: Overshoot of each projection step, >= 1.
        beta: Backward step toward `x` after a success, in (0, 1].

    Returns:
        The adversarial batch, a float32 tensor of `x`'s shape in the box.

    Raises:
        ValueError: for invalid inputs or options.

    Example:

    ```python
    x_adv = fab_t(model, x_test, y_test, eps=0.1, norm="linf")
    ```
    """
    x, y = validate_attack_inputs(
        x, y, eps=eps, norm=norm, clip_min=clip_min, clip_max=clip_max, allow_eps_none=True
    )
    options = _check_options(steps, restarts, alpha_max, eta, beta)
    num_target_classes = check_positive_int("num_target_classes", num_target_classes)
    if x.shape[0] == 0:
        return tf.identity(x)
    logits, _ = _common.clean_logits(model, x, y)
    if eps == 0:
        return tf.identity(x)
    num_targets = min(num_target_classes, logits.shape[1] - 1)
    others = tf.where(tf.one_hot(y, logits.shape[1]) > 0, -float("inf"), logits)
    ranked = tf.math.top_k(others, k=num_targets).indices
    target_sets = [ranked[:, i] for i in range(num_targets)]
    return _fab(model, x, y, logits, target_sets, eps, norm, clip_min, clip_max, seed,
                hit_target=False, **options)


def _check_options(steps, restarts, alpha_max, eta, beta):
    return dict(
        steps=check_positive_int("steps", steps),
        restarts=check_positive_int("restarts", restarts),
        alpha_max=check_number("alpha_max", alpha_max, low=0.0, high=1.0),
        eta=check_number("eta", eta, low=1.0),
        beta=check_number("beta", beta, low=0.0, high=1.0, low_open=True),
    )


def _fab(model, x, y, logits, target_sets, eps, norm, clip_min, clip_max, seed, *,
         hit_target, steps, restarts, alpha_max, eta, beta):
    """Runs FAB for each target set and restart on the examples still worth attacking."""
    run = _common.compiled(
        model,
        (norm, steps, alpha_max, eta, beta, float(clip_min), float(clip_max),
         target_sets[0] is not None, hit_target),
        _build_fab_run,
    )
    batch = x.shape[0]
    correct = tf.argmax(logits, axis=1, output_type=tf.int32) == y
    best_norm = tf.fill([batch], float("inf"))
    best_adv = x
    restart_radius = (eps if eps is not None else _RESTART_RADIUS[norm] * (clip_max - clip_min))
    for target_index, targets in enumerate(target_sets):
        for restart in range(restarts):
            todo = correct if eps is None else correct & (best_norm > eps)
            index = tf.where(todo)[:, 0]
            if index.shape[0] == 0:
                return _common.keep_within_eps(x, best_adv, eps, norm)
            x0, y0 = tf.gather(x, index), tf.gather(y, index)
            norm0 = tf.gather(best_norm, index)
            start = x0
            if restart > 0:
                radius = 0.5 * tf.minimum(norm0, restart_radius)
                start = _random_point(x0, radius, norm, [seed, target_index * restarts + restart])
                start = tf.clip_by_value(start, clip_min, clip_max)
            t0 = y0 if targets is None else tf.gather(targets, index)
            norm0, adv0 = run(x0, y0, t0, start, norm0, tf.gather(best_adv, index))
            best_norm = tf.tensor_scatter_nd_update(best_norm, index[:, None], norm0)
            best_adv = tf.tensor_scatter_nd_update(best_adv, index[:, None], adv0)
    return _common.keep_within_eps(x, best_adv, eps, norm)


def _random_point(x, radius, norm, seed):
    """A point at `norm`-distance `radius` (per example) from `x`, in a random direction."""
    if norm == "linf":
        direction = tf.random.stateless_uniform(tf.shape(x), seed, -1.0, 1.0)
    else:
        direction = tf.random.stateless_normal(tf.shape(x), seed)
    size = perturbation_norms(tf.zeros_like(x), direction, norm)
    return x + direction * per_example(radius / tf.maximum(size, 1e-12), len(x.shape))


def _build_fab_run(model_ref, norm, steps, alpha_max, eta, beta, clip_min, clip_max, targeted, hit_target):
    @tf.function(reduce_retracing=True)
    def run(x0, y, targets, start, best_norm, best_adv):
        model = model_ref()
        shape = tf.shape(x0)
        batch = shape[0]
        flat0 = tf.reshape(x0, [batch, -1])
        x1 = tf.reshape(start, [batch, -1])
        for _ in tf.range(steps):
            # With a batch of 1, tf.where's broadcasting makes the batch dimension unknown after one step.
            tf.autograph.experimental.set_loop_options(shape_invariants=[
                (x1, tf.TensorShape([None, *x1.shape[1:]])), (best_norm, tf.TensorShape([None])),
                (best_adv, tf.TensorShape([None, *best_adv.shape[1:]]))])
            diff, grad = _nearest_boundary(model, x1, shape, y, targets, targeted, hit_target, norm)
            # The hyperplane diff + grad . (z - x1) = 0, reached from x1 and from x0.
            required = tf.concat([-diff, -diff - tf.reduce_sum(grad * (flat0 - x1), axis=1)], axis=0)
            steps_both = _project_onto_hyperplane_in_box(
                tf.concat([x1, flat0], axis=0), tf.concat([grad, grad], axis=0), required,
                norm, clip_min, clip_max,
            )
            to_x1, to_x0 = steps_both[:batch], steps_both[batch:]
            size_x1 = tf.maximum(_flat_norm(to_x1, norm), 1e-8)
            size_x0 = tf.maximum(_flat_norm(to_x0, norm), 1e-8)
            alpha = tf.clip_by_value(size_x1 / (size_x1 + size_x0), 0.0, alpha_max)[:, None]
            x1 = (x1 + eta * to_x1) * (1.0 - alpha) + (flat0 + eta * to_x0) * alpha
            x1 = tf.clip_by_value(x1, clip_min, clip_max)

            pred = tf.argmax(model(tf.reshape(x1, shape)), axis=1, output_type=tf.int32)
            success = pred == targets if hit_target else pred != y
            size = _flat_norm(x1 - flat0, norm)
            better = success & (size < best_norm)
            best_norm = tf.where(better, size, best_norm)
            best_adv = tf.where(per_example(better, len(x0.shape)), tf.reshape(x1, shape), best_adv)
            x1 = tf.where(success[:, None], flat0 + beta * (x1 - flat0), x1)
        return best_norm, best_adv

    return run


def _nearest_boundary(model, x1, shape, y, targets, targeted, hit_target, norm):
    """Logit difference and its gradient (flattened) for the closest linearized boundary.

    Untargeted: the nearest of the boundaries `f_k = f_y`. Targeted: `f_t = f_y`
    as in AutoAttack, or, when the target itself must be reached, `f_t = f_j`
    against the target's current strongest rival `j`.
    """
    with tf.GradientTape() as tape:
        tape.watch(x1)
        logits = tf.cast(model(tf.reshape(x1, shape)), tf.float32)
        if targeted:
            rival = y
            if hit_target:
                is_target = tf.one_hot(targets, tf.shape(logits)[1]) > 0
                rival = tf.argmax(tf.where(is_target, -float("inf"), logits), axis=1, output_type=tf.int32)
            diffs = tf.gather(logits, targets[:, None], batch_dims=1) - tf.gather(logits, rival[:, None], batch_dims=1)
        else:
            diffs = logits - tf.gather(logits, y[:, None], batch_dims=1)
    if targeted:
        return diffs[:, 0], tape.gradient(diffs, x1)
    grads = tape.batch_jacobian(diffs, x1)  # [batch, classes, features]
    dual = tf.norm(grads, axis=2) if norm == "l2" else tf.reduce_sum(tf.abs(grads), axis=2)
    distance = tf.abs(diffs) / (dual + 1e-12)
    # The true class's own "boundary" (diff 0) is excluded.
    distance = tf.where(tf.one_hot(y, tf.shape(logits)[1]) > 0, float("inf"), distance)
    nearest = tf.argmin(distance, axis=1, output_type=tf.int32)
    return tf.gather(diffs, nearest, batch_dims=1), tf.gather(grads, nearest, batch_dims=1)


def _flat_norm(v, norm):
    return tf.norm(v, axis=1) if norm == "l2" else tf.reduce_max(tf.abs(v), axis=1)


def _project_onto_hyperplane_in_box(points, w, required, norm, clip_min, clip_max):
    """Smallest step `d` (in `norm`) with `w . d = required` and `points + d` in the box.

    Moving coordinate i toward sign(w_i) changes `w . d` by `|w_i| * |d_i|`, up
    to the room left in the box. The minimizer is `d_i = s_i min(lam a_i, room_i)`
    with `a_i = 1` (Linf) or `|w_i|` (L2), for the `lam` where the reached change
    equals `|required|`: a piecewise-linear, increasing function of `lam`, solved
    exactly from its sorted breakpoints. When the box makes the hyperplane
    unreachable, every coordinate goes all the way to the box.

    Args:
        points: `[n, d]` points in the box.
        w: `[n, d]` hyperplane normals.
        required: `[n]` change of `w . d` needed.

    Returns:
        `[n, d]` steps.
    """
    w = w * tf.sign(tf.where(required < 0, -1.0, 1.0))[:, None]
    target = tf.abs(required)[:, None]
    abs_w = tf.abs(w)
    room = tf.where(w > 0, clip_max - points, points - clip_min)
    if norm == "linf":
        scale, slope, breakpoint = tf.ones_like(w), abs_w, room
    else:
        scale, slope = abs_w, tf.square(w)
        breakpoint = tf.where(abs_w > 0, room / tf.where(abs_w > 0, abs_w, 1.0), 1e30)
    order = tf.argsort(breakpoint, axis=1)
    breakpoint = tf.gather(breakpoint, order, batch_dims=1)
    slope = tf.gather(slope, order, batch_dims=1)
    saturated = tf.cumsum(slope * breakpoint, axis=1)  # change from coordinates at their bound
    free_slope = tf.cumsum(slope, axis=1, reverse=True, exclusive=True)  # slope of the others
    reached = saturated + breakpoint * free_slope  # change at each breakpoint, increasing
    first = tf.reduce_sum(tf.cast(reached < target, tf.int32), axis=1, keepdims=True)
    dim = tf.shape(w)[1]
    feasible = first < dim
    first = tf.minimum(first, dim - 1)
    saturated_before = tf.gather(saturated - slope * breakpoint, first, batch_dims=1)
    slope_from = tf.gather(free_slope + slope, first, batch_dims=1)
    lam = tf.math.divide_no_nan(target - saturated_before, slope_from)
    lam = tf.where(feasible, lam, 1e30)
    return tf.sign(w) * tf.minimum(lam * scale, room)
