"""Square Attack (Andriushchenko et al., 2020): a score-based black-box attack by
random search over square-shaped updates, in Linf and L2."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from gfa_keras.attacks import _common
from gfa_keras.attacks.base import register_attack, validate_attack_inputs

__all__ = ["square"]

# The square's area shrinks (p halves) after these fractions of the query
# budget, in units of 1/10000 (the paper's schedule for 10,000 queries).
_HALVING_POINTS = np.array([10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000])


@register_attack("square", norms=("linf", "l2"), white_box=False)
def square(
    model,
    x,
    y,
    *,
    eps: float,
    norm: str = "linf",
    steps: int = 5000,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    seed: int = 0,
    p_init: float = 0.8,
    targets=None,
) -> tf.Tensor:
    """Square Attack: random square updates kept when they lower the margin.

    Uses only the model's outputs (no gradients). Linf: starts from random
    vertical stripes of +-eps and, each query, sets a random square window
    (per channel) to `x +- eps`. L2: starts from a grid of +-pseudo-Gaussian
    blocks and moves perturbation mass between two random windows, always on
    the sphere of radius `eps`. An update is kept when it lowers the margin
    loss `z_y - max_{k != y} z_k` (with `targets`: `max_{k != t} z_k - z_t`).
    The window's area is a fraction `p` of the image that starts at `p_init`
    and halves on the paper's schedule, rescaled to `steps`. Only examples not
    yet fooled are queried.

    Args:
        model: Callable mapping a batch of images to logits.
        x: Float images in `[clip_min, clip_max]`, shape `[batch, height, width,
            channels]` or `[batch, height, width]`.
        y: True integer labels, shape `[batch]`.
        eps: Radius of the `norm` ball.
        norm: `"linf"` or `"l2"`.
        steps: Queries per example after the initial one (AutoAttack uses 5000).
        clip_min: Lower end of the input box.
        clip_max: Upper end of the input box.
        seed: Seed of the random search (stateless: same seed, same result).
        p_init: Initial fraction of the image covered by a window, in (0, 1].
        targets: Optional integer target labels, shape `[batch]`; then only
            reaching the target counts.

    Returns:
        The adversarial batch, a float32 tensor of `x`'s shape, inside the
        eps-ball and the box.

    Raises:
        ValueError: for invalid inputs or options, or `x` not a batch of images.

    Example:

    ```python
    x_adv = square(model, x_test, y_test, eps=8 / 255, steps=5000)
    ```
    """
    x, y = validate_attack_inputs(x, y, eps=eps, norm=norm, clip_min=clip_min, clip_max=clip_max)
    steps = _common.check_positive_int("steps", steps)
    p_init = _common.check_number("p_init", p_init, low=0.0, high=1.0, low_open=True)
    _common.require_image_batch("square", x)
    if x.shape[0] == 0 or eps == 0:
        return tf.identity(x)
    _, targets = _common.clean_logits(model, x, y, targets)
    images = x if x.shape.rank == 4 else x[..., None]
    height, width, channels = images.shape[1:]

    sizes = _window_sizes(steps, p_init, height, width, norm)
    distinct, size_index = np.unique(sizes, return_inverse=True)
    # Per window size, the L2 pattern and its transpose, at the top-left of an image.
    table = np.zeros([len(distinct), 2, height, width], "float32")
    if norm == "l2":
        for k, side in enumerate(distinct):
            table[k, 0, :side, :side] = _pseudo_gaussian_window(side)
            table[k, 1, :side, :side] = table[k, 0, :side, :side].T
    seed = tf.constant(seed, tf.int32)
    start = _initial_point(images, eps, norm, clip_min, clip_max, seed)
    run = _common.compiled(model, (norm, float(clip_min), float(clip_max), targets is not None), _build_square)
    x_adv = run(
        images, y, y if targets is None else targets, start, tf.constant(eps, tf.float32),
        tf.constant(sizes, tf.int32), tf.constant(size_index, tf.int32), tf.constant(table), seed,
    )
    return tf.reshape(x_adv, tf.shape(x))


def _window_sizes(steps, p_init, height, width, norm):
    """Side of the square window for each query (numpy, `[steps]`)."""
    progress = (np.arange(steps) / steps * 10000).astype(int)
    p = p_init / 2.0 ** np.searchsorted(_HALVING_POINTS, progress, side="left")
    sides = np.round(np.sqrt(p * height * width)).astype(int)
    largest = min(height, width)
    if norm == "linf":
        return np.clip(sides, 1, largest)
    # L2 windows are odd and at least 3 wide, so the pattern has a centre.
    sides = np.maximum(sides, 3)
    sides += 1 - sides % 2
    return np.minimum(sides, largest - (1 - largest % 2))


def _centred_bumps(rows, cols):
    """Nested rectangles around the centre, weighted 1/(k+1)^2 for ring k, unit norm."""
    if rows == 0:
        return np.zeros([0, cols])
    rings = max(rows // 2 + 1, cols // 2 + 1)
    weights = np.cumsum((1.0 / np.arange(1, rings + 1) ** 2)[::-1])[::-1]  # sum from ring k outward
    ring = np.maximum(np.abs(np.arange(rows)[:, None] - rows // 2), np.abs(np.arange(cols)[None, :] - cols // 2))
    bumps = weights[ring]
    return bumps / np.linalg.norm(bumps)


def _pseudo_gaussian_window(side):
    """The L2 update pattern: a positive bump over a negative one, unit norm."""
    top = _centred_bumps(side // 2, side)
    bottom = -_centred_bumps(side - side // 2, side)
    pattern = np.concatenate([top, bottom], axis=0)
    return pattern / np.linalg.norm(pattern)


def _initial_point(images, eps, norm, clip_min, clip_max, seed):
    batch, height, width, channels = images.shape
    if norm == "linf":
        signs = _random_signs([batch, 1, width, channels], [seed, -1])
        return tf.clip_by_value(images + eps * signs, clip_min, clip_max)
    # A grid of pseudo-Gaussian blocks with random signs per block and channel.
    side = max(height // 5, 1)
    block = _pseudo_gaussian_window(side) if side > 1 else np.ones([1, 1])
    reps = (-(-height // side), -(-width // side))
    pattern = np.tile(block, reps)[:height, :width].astype("float32")
    block_id = (np.arange(height)[:, None] // side) * reps[1] + np.arange(width)[None, :] // side
    signs = _random_signs([batch, reps[0] * reps[1], channels], [seed, -1])
    delta = tf.gather(signs, block_id, axis=1) * pattern[None, :, :, None]
    delta *= eps / tf.norm(tf.reshape(delta, [batch, -1]), axis=1)[:, None, None, None]
    return tf.clip_by_value(images + delta, clip_min, clip_max)


def _random_signs(shape, seed):
    return tf.sign(tf.random.stateless_uniform(shape, tf.stack(seed), -1.0, 1.0) + 1e-12)


def _window(top, left, side, height, width):
    """`[n, height, width, 1]` float masks of the `side`-square at (top, left)."""
    rows = tf.range(height)[None, :]
    cols = tf.range(width)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + side)
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + side)
    return tf.cast(in_rows[:, :, None] & in_cols[:, None, :], tf.float32)[..., None]


def _place(pattern, top, left, height, width):
    """`pattern` (`[height, width]`, content at the top-left) moved to (top, left) per example."""
    rows = tf.clip_by_value(tf.range(height)[None, :] - top[:, None], 0, height - 1)
    cols = tf.clip_by_value(tf.range(width)[None, :] - left[:, None], 0, width - 1)
    placed = tf.gather(tf.gather(pattern, rows), cols, axis=2, batch_dims=1)
    return placed[..., None]


def _build_square(model_ref, norm, clip_min, clip_max, hit_target):
    def l2_update(x, delta, eps, side, patterns, seeds):
        n, height, width, channels = (tf.shape(x)[i] for i in range(4))
        corners = [tf.random.stateless_uniform([n], tf.stack([seeds[0], seeds[1] + j]), 0, limit, tf.int32)
                   for j, limit in enumerate([height - side + 1, width - side + 1] * 2)]
        first = _window(corners[0], corners[1], side, height, width)
        second = _window(corners[2], corners[3], side, height, width)
        both = tf.maximum(first, second)

        def energy(v):
            return tf.reduce_sum(tf.square(v), axis=[1, 2], keepdims=True)  # per channel

        slack = tf.maximum(eps ** 2 - tf.reduce_sum(energy(delta), axis=3, keepdims=True), 0.0)
        budget = tf.sqrt(slack / tf.cast(channels, tf.float32) + energy(delta * both))
        transpose = tf.random.stateless_uniform([n, 1, 1, 1], tf.stack([seeds[0], seeds[1] + 4])) < 0.5
        bump = tf.where(transpose, _place(patterns[1], corners[0], corners[1], height, width),
                        _place(patterns[0], corners[0], corners[1], height, width))
        signs = _random_signs([n, 1, 1, channels], [seeds[0], seeds[1] + 5])
        old = delta * first
        new = bump * signs + old / (tf.sqrt(energy(old)) + 1e-12)
        new *= budget / (tf.sqrt(energy(new)) + 1e-12)
        delta = delta * (1.0 - both) + new
        size = tf.norm(tf.reshape(delta, [n, -1]), axis=1)[:, None, None, None]
        return tf.clip_by_value(x + delta * eps / tf.maximum(size, 1e-12), clip_min, clip_max)

    def linf_update(x, x_best, eps, side, seeds):
        n, height, width, channels = (tf.shape(x)[i] for i in range(4))
        top = tf.random.stateless_uniform([n], tf.stack(seeds), 0, height - side + 1, tf.int32)
        left = tf.random.stateless_uniform([n], tf.stack([seeds[0], seeds[1] + 1]), 0, width - side + 1, tf.int32)
        signs = _random_signs([n, 1, 1, channels], [seeds[0], seeds[1] + 2])
        corner = tf.clip_by_value(x + eps * signs, clip_min, clip_max)
        return tf.where(_window(top, left, side, height, width) > 0, corner, x_best)

    @tf.function(reduce_retracing=True)
    def run(x, y, targets, x_best, eps, sizes, size_index, table, seed):
        model = model_ref()
        margin = _common.margin(tf.cast(model(x_best), tf.float32), y, targets if hit_target else None)
        for i in tf.range(tf.shape(sizes)[0]):
            active = tf.where(margin >= 0)[:, 0]
            if tf.size(active) == 0:
                break
            xa, best = tf.gather(x, active), tf.gather(x_best, active)
            ya, ta = tf.gather(y, active), tf.gather(targets, active)
            seeds = [seed, 8 * i]
            if norm == "linf":
                candidate = linf_update(xa, best, eps, sizes[i], seeds)
            else:
                candidate = l2_update(xa, best - xa, eps, sizes[i], table[size_index[i]], seeds)
            new_margin = _common.margin(tf.cast(model(candidate), tf.float32), ya, ta if hit_target else None)
            old_margin = tf.gather(margin, active)
            kept = tf.where((new_margin < old_margin)[:, None, None, None], candidate, best)
            x_best = tf.tensor_scatter_nd_update(x_best, active[:, None], kept)
            margin = tf.tensor_scatter_nd_update(margin, active[:, None], tf.minimum(new_margin, old_margin))
        return x_best

    return run
