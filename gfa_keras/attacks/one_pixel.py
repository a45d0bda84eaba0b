"""OnePixel (Su et al., 2019): a score-based black-box attack that changes a few
pixels, found by differential evolution."""
from __future__ import annotations

import tensorflow as tf

from gfa_keras.attacks import _common
from gfa_keras.attacks.base import register_attack, validate_attack_inputs
from gfa_keras.validation import check_number, check_positive_int

__all__ = ["one_pixel"]


@register_attack("one_pixel", norms=("linf",), white_box=False)
def one_pixel(
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
    pixels: int = 1,
    population: int = 400,
    mutation: float = 0.5,
    targets=None,
) -> tf.Tensor:
    """OnePixel: differential evolution over the location and value of a few pixels.

    A candidate is `pixels` triples (row, column, per-channel change). Each
    generation every candidate `i` proposes `a + mutation * (b - c)` from three
    random members (DE/rand/1, no crossover, as in Su et al.) and is replaced
    when the proposal lowers the margin `z_y - max_{k != y} z_k` (with
    `targets`: `max_{k != t} z_k - z_t`). Examples stop once fooled.

    Threat model: an L0 attack (at most `pixels` pixels change) whose changes
    are also bounded by `eps` in Linf, so its results are valid for the Linf
    ball of radius `eps` and can join a Linf worst case honestly. The original
    attack, where a pixel may take any value, is `eps = clip_max - clip_min`.

    Memory grows as `batch * population * image size`: pass smaller batches
    for large images.

    Args:
        model: Callable mapping a batch of images to logits.
        x: Float images in `[clip_min, clip_max]`, shape `[batch, height, width,
            channels]` or `[batch, height, width]`.
        y: True integer labels, shape `[batch]`.
        eps: Linf bound of each pixel's change; `clip_max - clip_min` lifts it.
        norm: Must be `"linf"`.
        steps: Generations of the evolution (Su et al. use 100).
        clip_min: Lower end of the input box.
        clip_max: Upper end of the input box.
        seed: Seed of the evolution (stateless: same seed, same result).
        pixels: Number of pixels changed (1 in the paper's headline attack).
        population: Candidates per example, >= 4 (Su et al. use 400).
        mutation: Differential weight `F`, in (0, 2].
        targets: Optional integer target labels, shape `[batch]`; then only
            reaching the target counts.

    Returns:
        The adversarial batch, a float32 tensor of `x`'s shape: the best
        candidate per example, inside the eps-ball and the box.

    Raises:
        ValueError: for invalid inputs or options, a norm other than Linf, or
            `x` not a batch of images.

    Example:

    ```python
    # Su et al.'s unbounded one-pixel attack on images in [0, 1]:
    x_adv = one_pixel(model, x_test, y_test, eps=1.0, population=400, steps=100)
    ```
    """
    x, y = validate_attack_inputs(x, y, eps=eps, norm=norm, clip_min=clip_min, clip_max=clip_max)
    _common.require_norm("one_pixel", norm, "linf")
    steps = check_positive_int("steps", steps)
    pixels = check_positive_int("pixels", pixels)
    population = check_positive_int("population", population, minimum=4)
    mutation = check_number("mutation", mutation, low=0.0, high=2.0, low_open=True)
    _common.require_image_batch("one_pixel", x)
    if x.shape[0] == 0:
        return tf.identity(x)
    _, targets = _common.clean_logits(model, x, y, targets)
    if eps == 0:
        return tf.identity(x)
    images = x if x.shape.rank == 4 else x[..., None]
    change = min(float(eps), float(clip_max - clip_min))
    run = _common.compiled(
        model,
        (steps, pixels, population, mutation, change, float(clip_min), float(clip_max), targets is not None,
         x.shape.rank == 3),
        _build_evolution,
    )
    x_adv = run(images, y, y if targets is None else targets, tf.constant(seed, tf.int32))
    return tf.reshape(x_adv, tf.shape(x))


def _build_evolution(model_ref, steps, pixels, population, mutation, change, clip_min, clip_max, hit_target,
                     channel_added):
    def apply(x, candidates):
        """Images `[n, population, h, w, c]` with each candidate's pixels changed."""
        n, height, width, channels = (tf.shape(x)[i] for i in range(4))
        flat = tf.reshape(x, [n, height * width, channels])
        images = tf.tile(x[:, None], [1, population, 1, 1, 1])
        for k in range(pixels):  # Later pixels win where two coincide.
            row = tf.cast(candidates[:, :, k, 0], tf.int32)
            col = tf.cast(candidates[:, :, k, 1], tf.int32)
            where = row * width + col  # [n, population]
            value = tf.clip_by_value(tf.gather(flat, where, batch_dims=1) + candidates[:, :, k, 2:],
                                     clip_min, clip_max)
            mask = tf.reshape(tf.one_hot(where, height * width, on_value=True, off_value=False),
                              [n, population, height, width, 1])
            images = tf.where(mask, value[:, :, None, None, :], images)
        return images

    def fitness(model, x, y, targets, candidates):
        images = apply(x, candidates)
        shape = tf.shape(images)
        batch = tf.reshape(images, tf.concat([[-1], shape[2:]], 0))
        # The model sees the caller's shape: rank-3 batches get their channel axis only here.
        logits = tf.cast(model(batch[..., 0] if channel_added else batch), tf.float32)

        def repeat(v):
            return tf.reshape(tf.tile(v[:, None], [1, population]), [-1])

        return tf.reshape(_common.margin(logits, repeat(y), repeat(targets) if hit_target else None), [-1, population])

    @tf.function(reduce_retracing=True)
    def run(x, y, targets, seed):
        model = model_ref()
        batch, height, width, channels = (tf.shape(x)[i] for i in range(4))
        # Genes: row and column in [0, size) (floored when decoded), then per-channel changes.
        upper = tf.concat([[tf.cast(height, tf.float32) - 1e-3, tf.cast(width, tf.float32) - 1e-3],
                           tf.fill([channels], change)], axis=0)
        lower = tf.concat([[0.0, 0.0], tf.fill([channels], -change)], axis=0)
        shape = [batch, population, pixels, 2 + channels]
        members = lower + (upper - lower) * tf.random.stateless_uniform(shape, tf.stack([seed, -1]))
        scores = fitness(model, x, y, targets, members)
        for generation in tf.range(steps):
            active = tf.where(tf.reduce_min(scores, axis=1) >= 0)[:, 0]
            if tf.size(active) == 0:
                break
            current = tf.gather(members, active)
            parents = tf.random.stateless_uniform(
                [tf.size(active), population, 3], tf.stack([seed, generation]), 0, population, tf.int32)
            a, b, c = (tf.gather(current, parents[:, :, j], batch_dims=1) for j in range(3))
            proposals = tf.clip_by_value(a + mutation * (b - c), lower, upper)
            proposal_scores = fitness(model, tf.gather(x, active), tf.gather(y, active),
                                      tf.gather(targets, active), proposals)
            old_scores = tf.gather(scores, active)
            better = proposal_scores < old_scores
            members = tf.tensor_scatter_nd_update(
                members, active[:, None], tf.where(better[:, :, None, None], proposals, current))
            scores = tf.tensor_scatter_nd_update(scores, active[:, None], tf.minimum(proposal_scores, old_scores))
        best = tf.argmin(scores, axis=1, output_type=tf.int32)
        return tf.gather(apply(x, members), best, batch_dims=1)

    return run
