"""SPSA, a score-based black-box attack (Uesato et al. 2018).

"Adversarial Risk and the Dangers of Evaluating Against Weak Attacks", ICML 2018.
It reads only the logits: the gradient of the margin loss is estimated from
finite differences along random +-1 directions (simultaneous perturbation),
then followed with Adam and projected back into the eps-ball. Being gradient
free, it is not fooled by masked or obfuscated gradients; if it beats the
white-box attacks, the white-box gradients are suspect.

Written here rather than taken from cleverhans, whose SPSA builds a Keras 2
optimizer (`Adam(lr=...)`) that Keras 3 rejects, and attacks one example per call;
this one is batched.
"""

from __future__ import annotations

import tensorflow as tf

from gfa_keras.attacks import _common
from gfa_keras.attacks._common import adam_update, margin, select_per_example
from gfa_keras.attacks.base import project, register_attack, validate_attack_inputs
from gfa_keras.validation import check_number, check_positive_int

__all__ = ["spsa"]


def _build_spsa(model_ref, steps, num_samples, perturbation_size, learning_rate, clip_min, clip_max):
    @tf.function(reduce_retracing=True)
    def run(x, y, eps, seed):
        return _spsa(model_ref(), x, y, eps, seed, steps=steps, num_samples=num_samples,
                     perturbation_size=perturbation_size, learning_rate=learning_rate,
                     clip_min=clip_min, clip_max=clip_max)

    return run


def _spsa(model, x, y, eps, seed, *, steps, num_samples, perturbation_size, learning_rate, clip_min, clip_max):
    batch = tf.shape(x)[0]
    sample_shape = tf.concat([[batch, num_samples], tf.shape(x)[1:]], axis=0)
    # Each example's 2 * num_samples probes come in a row once flattened.
    y_probes = tf.repeat(y, 2 * num_samples)

    def margins(points):
        return margin(model(points), y)

    m = tf.zeros_like(x)
    v = tf.zeros_like(x)
    x_adv = x
    best_margin = margins(x)
    x_best = x

    for t in tf.range(1, steps + 1):
        step_seed = tf.stack([seed, tf.cast(t, tf.int64)])
        # Rademacher directions: each coordinate +1 or -1 with equal probability.
        directions = tf.where(tf.random.stateless_uniform(sample_shape, step_seed) < 0.5, -1.0, 1.0)
        probes = tf.concat([directions, -directions], axis=1) * perturbation_size
        probes = tf.expand_dims(x_adv, 1) + probes
        flat_probes = tf.reshape(probes, tf.concat([[-1], tf.shape(x)[1:]], axis=0))
        probe_margins = margin(model(flat_probes), y_probes)
        probe_margins = tf.reshape(probe_margins, [batch, 2, num_samples])
        # Antithetic finite differences: (f(x + c d) - f(x - c d)) / (2c) * d, averaged over d.
        slopes = (probe_margins[:, 0] - probe_margins[:, 1]) / (2.0 * perturbation_size)
        slopes = tf.reshape(slopes, tf.concat([[batch, num_samples], tf.ones_like(tf.shape(x)[1:])], axis=0))
        grad = tf.ensure_shape(tf.reduce_mean(slopes * directions, axis=1), x.shape)

        # Adam descent on the margin: it is negative once the model is fooled.
        update, m, v = adam_update(grad, m, v, t, learning_rate)
        x_adv = project(x_adv - update, x, eps, "linf", clip_min, clip_max)

        current = margins(x_adv)
        improved = current < best_margin
        best_margin = tf.where(improved, current, best_margin)
        x_best = select_per_example(improved, x_adv, x_best)

    return x_best


@register_attack("spsa", norms=("linf",), white_box=False)
def spsa(
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
    num_samples: int = 64,
    perturbation_size: float = 0.01,
    learning_rate: float = 0.01,
) -> tf.Tensor:
    """SPSA: Adam on a finite-difference estimate of the margin loss's gradient.

    Each step probes the model at `x_adv +- perturbation_size * d` for
    `num_samples` random Rademacher directions `d` per example (so
    `2 * num_samples * batch` inputs per forward pass: lower `num_samples` or
    the batch size for large inputs), takes an Adam step down the margin
    `z_y - max_{j != y} z_j`, and projects onto the Linf ball and the box.
    Returns, per example, the point of lowest margin it visited.

    Args:
        model: Callable mapping a batch to logits (only the outputs are used).
        x: Float batch in `[clip_min, clip_max]`.
        y: True integer labels, shape `[batch]`.
        eps: Radius of the Linf ball.
        norm: Must be `"linf"`.
        steps: Number of Adam steps.
        clip_min: Lowest valid input value.
        clip_max: Highest valid input value.
        seed: Seed of the random directions.
        num_samples: Random directions per example and step.
        perturbation_size: Finite-difference step `c`.
        learning_rate: Adam's step size, in input units.

    Returns:
        `x_adv`, a float32 tensor of the shape of `x`.

    Raises:
        ValueError: On invalid inputs, `norm != "linf"`, or non-positive counts,
            sizes or rates.

    Example:

    >>> x_adv = spsa(model, x_test, y_test, eps=0.1, steps=100, num_samples=64)
    """
    _common.require_norm("spsa", norm, "linf")
    x, y = validate_attack_inputs(x, y, eps=eps, norm=norm, clip_min=clip_min, clip_max=clip_max)
    steps = check_positive_int("steps", steps)
    num_samples = check_positive_int("num_samples", num_samples)
    perturbation_size = check_number("perturbation_size", perturbation_size, low=0.0, low_open=True)
    learning_rate = check_number("learning_rate", learning_rate, low=0.0, low_open=True)
    if x.shape[0] == 0:
        return tf.identity(x)
    _common.clean_logits(model, x, y)
    if eps == 0:
        return tf.identity(x)
    run = _common.compiled(
        model, (steps, num_samples, perturbation_size, learning_rate, float(clip_min), float(clip_max)), _build_spsa
    )
    return run(x, y, tf.constant(eps, tf.float32), tf.constant(seed, tf.int64))
