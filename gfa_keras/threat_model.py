"""The threat model's geometry: Lp norms of perturbations, projection onto the eps-ball
intersected with the clip box, and a random start inside it.

Shared by training-time perturbations and the attacks; it imports only TensorFlow, so
training never loads the attack suite.
"""
from __future__ import annotations

import tensorflow as tf

__all__ = ["NORMS", "perturbation_norms", "project", "random_start", "per_example"]

NORMS = ("linf", "l2")


def perturbation_norms(x, x_adv, norm="linf"):
    """Per-example norm of `x_adv - x` over all non-batch axes, shape `[batch]`.

    `norm` is one of `NORMS`, or `"l1"` to measure (not bound) sparse attacks such as EAD.
    """
    delta = tf.reshape(tf.cast(x_adv, tf.float32) - tf.cast(x, tf.float32), [tf.shape(x)[0], -1])
    if norm == "linf":
        return tf.reduce_max(tf.abs(delta), axis=1)
    if norm == "l2":
        return tf.norm(delta, axis=1)
    if norm == "l1":
        return tf.reduce_sum(tf.abs(delta), axis=1)
    # The message of gfa_keras.validation.check_choice (this module sits below it).
    raise ValueError(f"Unknown norm. Expected one of {[*NORMS, 'l1']}. Received: norm={norm!r}")


def per_example(v, rank):
    """Reshapes a `[batch]` vector to broadcast against a rank-`rank` batch."""
    return tf.reshape(v, [-1] + [1] * (rank - 1))


def project(x_adv, x, eps, norm, clip_min=0.0, clip_max=1.0):
    """Projects `x_adv` onto the eps-ball around `x` intersected with the clip box."""
    delta = x_adv - x
    if norm == "linf":
        delta = tf.clip_by_value(delta, -eps, eps)
    else:
        norms = perturbation_norms(x, x_adv, "l2")
        factor = tf.minimum(1.0, eps / tf.maximum(norms, 1e-12))
        delta = delta * per_example(factor, len(x.shape))
    return tf.clip_by_value(x + delta, clip_min, clip_max)


def random_start(x, eps, norm, clip_min=0.0, clip_max=1.0, seed=None):
    """A uniformly random point of the eps-ball around `x` (Linf: uniform per pixel;
    L2: uniform in the ball), clipped to the box. `seed` is a stateless seed pair or int."""
    seed = _seed_pair(seed)
    if norm == "linf":
        delta = tf.random.stateless_uniform(tf.shape(x), seed, -eps, eps, dtype=x.dtype)
    else:
        direction = tf.random.stateless_normal(tf.shape(x), seed, dtype=x.dtype)
        direction /= per_example(tf.maximum(perturbation_norms(0.0 * x, direction, "l2"), 1e-12), len(x.shape))
        dim = tf.cast(tf.reduce_prod(tf.shape(x)[1:]), x.dtype)
        radius = tf.random.stateless_uniform([tf.shape(x)[0]], seed + 1, dtype=x.dtype) ** (1.0 / dim)
        delta = direction * per_example(eps * radius, len(x.shape))
    return tf.clip_by_value(x + delta, clip_min, clip_max)


def _seed_pair(seed):
    if seed is None:
        seed = 0
    if isinstance(seed, int):
        return tf.constant([seed, 0], dtype=tf.int64)
    return tf.cast(seed, tf.int64)
