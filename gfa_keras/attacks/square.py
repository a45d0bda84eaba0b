"""Square Attack (Andriushchenko et al., 2020): a score-based black-box attack by
random search over square-shaped updates, in Linf and L2.

Follows the reference implementation, fra31/auto-attack `autoattack/square.py`, as
AutoAttack's standard version runs it: the same starting points, the same update per
query, the same window-size schedule (`rescale_schedule=False`), margin loss. The
random draws are per example instead of shared by the batch, so an example's result
does not depend on the rest of its batch.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from gfa_keras.attacks import _common
from gfa_keras.attacks.base import register_attack, validate_attack_inputs
from gfa_keras.validation import check_choice, check_number, check_positive_int

__all__ = ["square"]

# The reference's `p_selection`: p halves once the query index passes each of
# these points (10 < it <= 50: p_init / 2, ..., it > 8000: p_init / 512).
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
    rescale_schedule: bool = False,
    targets=None,
) -> tf.Tensor:
    """Square Attack: random square updates kept when they lower the margin.

    Uses only the model's outputs (no gradients). Linf: starts from random
    vertical stripes of +-eps and, each query, sets a random square window
    (per channel) to `x +- eps`. L2: starts from a centred grid of
    pseudo-Gaussian blocks (random sign per block and channel, randomly
    transposed) and, each query, moves perturbation mass from a second random
    window into a first one, where it adds a new pseudo-Gaussian bump; the
    result is rescaled onto the sphere of radius `eps`. An update is kept when
    it lowers the margin loss `z_y - max_{k != y} z_k` (with `targets`:
    `max_{k != t} z_k - z_t`, where the reference would use the cross-entropy to
    the target; AutoAttack's standard version runs Square untargeted). Only
    examples not yet fooled are queried.

    The window covers a fraction `p` of the image: `p_init` at first, halved
    after queries 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 (the
    reference's `p_selection`). With `rescale_schedule=True` these points are
    fractions of 10,000 of the budget `steps` instead (the reference's
    `resc_schedule=True`, which AutoAttack's "cheap" version uses), so the
    window ends at `p_init / 512` whatever the budget.

    Defaults are AutoAttack's standard version: 5,000 queries, `p_init=0.8`,
    the canonical schedule, margin loss, one run. As in the reference, a
    window's corner is drawn from `[0, height - side)`, so windows smaller than
    the image never touch its last row or column (the starting point does).

    Args:
        model: Callable mapping a batch of images to logits.
        x: Float images in `[clip_min, clip_max]`, shape `[batch, height, width,
            channels]` or `[batch, height, width]`.
        y: True integer labels, shape `[batch]`.
        eps: Radius of the `norm` ball.
        norm: `"linf"` or `"l2"`.
        steps: Queries per example after the initial one (AutoAttack: 5000).
        clip_min: Lower end of the input box.
        clip_max: Upper end of the input box.
        seed: Seed of the random search (stateless: same seed, same result).
        p_init: Initial fraction of the image covered by a window, in (0, 1].
        rescale_schedule: False (canonical, AutoAttack's standard version) halves
            `p` at fixed query numbers; True spreads the same halvings over the
            budget `steps`.
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
    steps = check_positive_int("steps", steps)
    p_init = check_number("p_init", p_init, low=0.0, high=1.0, low_open=True)
    rescale_schedule = bool(check_choice("rescale_schedule", rescale_schedule, (False, True)))
    _common.require_image_batch("square", x)
    if x.shape[0] == 0:
        return tf.identity(x)
    _, targets = _common.clean_logits(model, x, y, targets)
    if eps == 0:
        return tf.identity(x)
    images = x if x.shape.rank == 4 else x[..., None]
    height, width, channels = images.shape[1:]

    sizes = _window_sizes(steps, p_init, height, width, norm, rescale_schedule)
    distinct, size_index = np.unique(sizes, return_inverse=True)
    # Per window size, the L2 pattern and its transpose, at the top-left of an image.
    table = np.zeros([len(distinct), 2, height, width], "float32")
    if norm == "l2":
        for k, side in enumerate(distinct):
            table[k, 0, :side, :side] = _pseudo_gaussian_window(side)
            table[k, 1, :side, :side] = table[k, 0, :side, :side].T
    seed = tf.constant(seed, tf.int32)
    start = _initial_point(images, eps, norm, clip_min, clip_max, seed)
    run = _common.compiled(
        model, (norm, float(clip_min), float(clip_max), targets is not None, x.shape.rank == 3,
                (height, width, channels)),
        _build_square,
    )
    x_adv = run(
        images, y, y if targets is None else targets, start, tf.constant(eps, tf.float32),
        tf.constant(sizes, tf.int32), tf.constant(size_index.reshape(-1), tf.int32), tf.constant(table), seed,
    )
    return tf.reshape(x_adv, tf.shape(x))


def _p_schedule(steps, p_init, rescale_schedule):
    """The window's area fraction `p` for each query index `0 .. steps - 1` (numpy)."""
    it = np.arange(steps)
    if rescale_schedule:
        it = (it / steps * 10000).astype(int)
    # The number of halving points strictly below `it` is the number of halvings.
    return p_init / 2.0 ** np.searchsorted(_HALVING_POINTS, it, side="left")


def _window_sizes(steps, p_init, height, width, norm, rescale_schedule=False):
    """Side of the square window for each query (numpy, `[steps]`), as the reference.

    The reference never caps the side; the cap at the image's shorter side only
    matters for non-square images, where the reference would fail.
    """
    sides = np.round(np.sqrt(_p_schedule(steps, p_init, rescale_schedule) * height * width)).astype(int)
    largest = min(height, width)
    if norm == "linf":
        return np.clip(sides, 1, largest)
    # L2 windows are odd and at least 3 wide, so the pattern has a centre.
    sides = np.maximum(sides, 3)
    sides += 1 - sides % 2
    return np.maximum(np.minimum(sides, largest - (1 - largest % 2)), 1)


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
    """The L2 update pattern (the reference's `eta`, untransposed): a positive bump over a negative one, unit norm."""
    top = _centred_bumps(side // 2, side)
    bottom = -_centred_bumps(side - side // 2, side)
    pattern = np.concatenate([top, bottom], axis=0)
    return pattern / np.linalg.norm(pattern)


def _l2_start_blocks(height, width):
    """The reference's starting grid: `(side, [(top, left), ...])` of its square blocks.

    Blocks of side `height // 5` from `(height - 5 * side) // 2` on, `height // side`
    rows by `width // side` columns. Blocks are cut at the image border (the
    reference drops blocks wholly outside and fails on partial ones).
    """
    side = max(height // 5, 1)
    offset = max((height - 5 * side) // 2, 0)
    corners = [(offset + i * side, offset + j * side) for i in range(height // side) for j in range(width // side)]
    return side, [(top, left) for top, left in corners if top < height and left < width]


def _l2_start(x, eps, u_transpose, u_sign, clip_min, clip_max):
    """The L2 starting point from given uniform draws in [0, 1).

    Args:
        x: Images `[n, height, width, channels]`.
        u_transpose: `[n, blocks]`; a block's pattern is transposed where > 0.5.
        u_sign: `[n, blocks, channels]`; a block's sign per channel is `sign(2u - 1)`.
    """
    height, width = x.shape[1:3]
    side, corners = _l2_start_blocks(height, width)
    eta = _pseudo_gaussian_window(side)
    placed = np.zeros([2, len(corners), height, width], "float32")
    for b, (top, left) in enumerate(corners):
        rows, cols = min(side, height - top), min(side, width - left)
        placed[0, b, top:top + rows, left:left + cols] = eta[:rows, :cols]
        placed[1, b, top:top + rows, left:left + cols] = eta.T[:rows, :cols]
    signs = tf.sign(2.0 * u_sign - 1.0)
    transposed = tf.cast(u_transpose > 0.5, tf.float32)[..., None]
    delta = (tf.einsum("nbc,bhw->nhwc", signs * (1.0 - transposed), placed[0])
             + tf.einsum("nbc,bhw->nhwc", signs * transposed, placed[1]))
    return tf.clip_by_value(x + _normalize_l2(delta) * eps, clip_min, clip_max)


def _normalize_l2(delta):
    return delta / (tf.norm(tf.reshape(delta, [tf.shape(delta)[0], -1]), axis=1)[:, None, None, None] + 1e-12)


def _initial_point(images, eps, norm, clip_min, clip_max, seed):
    batch, height, width, channels = images.shape
    if norm == "linf":
        signs = _random_signs([batch, 1, width, channels], [seed, -1])
        return tf.clip_by_value(images + eps * signs, clip_min, clip_max)
    blocks = len(_l2_start_blocks(height, width)[1])
    u_transpose = tf.random.stateless_uniform([batch, blocks], tf.stack([seed, -2]))
    u_sign = tf.random.stateless_uniform([batch, blocks, channels], tf.stack([seed, -3]))
    return _l2_start(images, eps, u_transpose, u_sign, clip_min, clip_max)


def _random_signs(shape, seed):
    return tf.sign(tf.random.stateless_uniform(shape, tf.stack(seed), -1.0, 1.0) + 1e-12)


def _corner(u, limit):
    """The reference's `random_int(0, limit)`: `floor(u * limit)`, in `[0, limit)` (0 when limit is 0).

    As in the reference, a window never touches the last row or column unless it
    spans the image.
    """
    return tf.cast(tf.floor(u * tf.cast(limit, u.dtype)), tf.int32)


def _window(top, left, side, height, width):
    """`[n, height, width, 1]` float masks of the `side`-square at (top, left)."""
    rows = tf.range(height)[None, :]
    cols = tf.range(width)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + side)
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + side)
    return tf.cast(in_rows[:, :, None] & in_cols[:, None, :], tf.float32)[..., None]


def _place(pattern, top, left, height, width):
    """`pattern` (`[height, width]`, content in its top-left `side`-square, zero elsewhere)
    moved to (top, left) per example, `[n, height, width, 1]`, zero outside the window.

    A cyclic shift: since `top + side <= height`, the rows that wrap around come
    from the pattern's zero part (`height - top >= side`), never from its content.
    """
    rows = tf.math.floormod(tf.range(height)[None, :] - top[:, None], height)
    cols = tf.math.floormod(tf.range(width)[None, :] - left[:, None], width)
    placed = tf.gather(tf.gather(pattern, rows), cols, axis=2, batch_dims=1)
    return placed[..., None]


def _linf_step(x, x_best, eps, side, u_corner, u_sign, clip_min, clip_max):
    """One Linf candidate from given uniform draws in [0, 1) (the reference's update).

    Args:
        x, x_best: Clean and current images `[n, height, width, channels]`.
        side: Window side for this query.
        u_corner: `[n, 2]` draws for the window's top and left.
        u_sign: `[n, channels]`; the window moves by `2 * eps * sign(2u - 1)` per channel.
    """
    height, width = tf.shape(x)[1], tf.shape(x)[2]
    top, left = _corner(u_corner[:, 0], height - side), _corner(u_corner[:, 1], width - side)
    step = 2.0 * eps * tf.sign(2.0 * u_sign - 1.0)[:, None, None, :]
    candidate = x_best + _window(top, left, side, height, width) * step
    candidate = tf.minimum(tf.maximum(candidate, x - eps), x + eps)
    return tf.clip_by_value(candidate, clip_min, clip_max)


def _l2_step(x, x_best, eps, side, patterns, u_corner, u_transpose, u_sign, clip_min, clip_max):
    """One L2 candidate from given uniform draws in [0, 1) (the reference's update).

    Args:
        x, x_best: Clean and current images `[n, height, width, channels]`.
        side: Window side for this query.
        patterns: `[2, height, width]`: the side's pattern and its transpose, top-left.
        u_corner: `[n, 4]` draws for the first window's top, left, the second's top, left.
        u_transpose: `[n]`; the new bump is the transposed pattern where > 0.5.
        u_sign: `[n, channels]`; the bump's sign per channel is `sign(2u - 1)`.
    """
    height, width, channels = tf.shape(x)[1], tf.shape(x)[2], tf.shape(x)[3]
    corners = [_corner(u_corner[:, j], limit)
               for j, limit in enumerate([height - side, width - side] * 2)]
    first = _window(corners[0], corners[1], side, height, width)
    second = _window(corners[2], corners[3], side, height, width)
    delta = x_best - x

    def norm(v, axis):
        return tf.sqrt(tf.reduce_sum(tf.square(v), axis=axis, keepdims=True))

    window_norm = norm(delta * first, [1, 2])  # per channel
    image_norm = norm(delta, [1, 2, 3])
    windows_norm = norm(delta * tf.maximum(first, second), [1, 2, 3])
    bump = tf.where(u_transpose[:, None, None, None] > 0.5,
                    _place(patterns[1], corners[0], corners[1], height, width),
                    _place(patterns[0], corners[0], corners[1], height, width))
    new = bump * tf.sign(2.0 * u_sign - 1.0)[:, None, None, :] + delta * first / (1e-12 + window_norm)
    # Each channel of the new window gets an equal share of the unused budget plus
    # the mass of both windows (the reference's rule; the final rescale fixes the total).
    budget = tf.sqrt(tf.maximum(eps**2 - tf.square(image_norm), 0.0) / tf.cast(channels, tf.float32)
                     + tf.square(windows_norm))
    new = new / (1e-12 + norm(new, [1, 2])) * budget
    delta = delta * (1.0 - tf.maximum(first, second)) + new
    return tf.clip_by_value(x + _normalize_l2(delta) * eps, clip_min, clip_max)


def _build_square(model_ref, norm, clip_min, clip_max, hit_target, channel_added, image_shape):
    def logits(model, images):
        # The candidates' shape is lost in the loop (the random signs have a dynamic channel
        # count); restore it, or Keras runs a convolution whose input channels are unknown
        # through XLA, which took 40% of each query on CPU.
        images = tf.ensure_shape(images, [None, *image_shape])
        # The model sees the caller's shape: rank-3 batches get their channel axis only here.
        return tf.cast(model(images[..., 0] if channel_added else images), tf.float32)

    @tf.function(reduce_retracing=True)
    def run(x, y, targets, x_best, eps, sizes, size_index, table, seed):
        model = model_ref()
        channels = tf.shape(x)[3]
        margin = _common.margin(logits(model, x_best), y, targets if hit_target else None)
        for i in tf.range(tf.shape(sizes)[0]):
            active = tf.where(margin >= 0)[:, 0]
            if tf.size(active) == 0:
                break
            xa, best = tf.gather(x, active), tf.gather(x_best, active)
            ya, ta = tf.gather(y, active), tf.gather(targets, active)
            n = tf.shape(active)[0]

            def draw(shape, k):
                return tf.random.stateless_uniform(shape, tf.stack([seed, 8 * i + k]))

            u_sign = draw(tf.stack([n, channels]), 0)
            if norm == "linf":
                candidate = _linf_step(xa, best, eps, sizes[i], draw(tf.stack([n, 2]), 1), u_sign,
                                       clip_min, clip_max)
            else:
                candidate = _l2_step(xa, best, eps, sizes[i], table[size_index[i]], draw(tf.stack([n, 4]), 1),
                                     draw(tf.reshape(n, [1]), 2), u_sign, clip_min, clip_max)
            new_margin = _common.margin(logits(model, candidate), ya, ta if hit_target else None)
            old_margin = tf.gather(margin, active)
            kept = tf.where((new_margin < old_margin)[:, None, None, None], candidate, best)
            x_best = tf.tensor_scatter_nd_update(x_best, active[:, None], kept)
            margin = tf.tensor_scatter_nd_update(margin, active[:, None], tf.minimum(new_margin, old_margin))
        return x_best

    return run
