"""The Gradient-Feature Alignment (GFA) penalty as pure functions.

For a layer input h and the loss gradient g = dL/dh, the alignment of one example is
the cosine between the two, taken over the flattened feature:

    cos = <g, h> / (||g|| ||h|| + epsilon)

The penalty pushes it toward 1 (g parallel to h: the loss is flat in the directions
tangential to h), summed over the tapped layers and averaged over the batch:

    penalty = mean_over_batch( sum_over_layers (1 - cos_l) )

These functions use `keras.ops` only, so a custom training loop on any backend can
call them with gradients it computed itself.
"""
from __future__ import annotations

from typing import Sequence

from keras import ops

__all__ = ["gradient_feature_alignment", "alignment_penalty"]

# Floor under squared norms: keeps sqrt's derivative finite at a zero vector (dead
# ReLUs, a perfectly fitted batch) so that the second-order gradient never turns NaN.
_MIN_SQUARED_NORM = 1e-30


def _flatten_per_example(t):
    # Half-precision features (mixed precision) are aligned in float32: their squared
    # norms overflow or underflow in float16. float64 stays float64.
    if ops.dtype(t) != "float64":
        t = ops.cast(t, "float32")
    return ops.reshape(t, (ops.shape(t)[0], -1))


def _safe_norm(v):
    return ops.sqrt(ops.maximum(ops.sum(ops.square(v), axis=1), _MIN_SQUARED_NORM))


def gradient_feature_alignment(gradients, features, epsilon: float = 1e-12):
    """Per-example cosine between a loss gradient and the feature it was taken at.

    Args:
        gradients: dL/dh, a tensor of shape `[batch, ...]`.
        features: h, a tensor of the same shape.
        epsilon: Added to the product of norms; a zero gradient or feature gives 0, not NaN.

    Returns:
        A tensor of shape `[batch]` with values in [-1, 1], float32 (float64 for
        float64 inputs).

    Raises:
        ValueError: If the shapes differ.

    Example:

    >>> import numpy as np
    >>> g = np.array([[1.0, 0.0], [0.0, 2.0]], "float32")
    >>> h = np.array([[2.0, 0.0], [1.0, 0.0]], "float32")
    >>> np.round(np.asarray(gradient_feature_alignment(g, h)), 6).tolist()
    [1.0, 0.0]
    """
    if tuple(gradients.shape) != tuple(features.shape):
        raise ValueError(
            "gradients and features must have the same shape. "
            f"Received: gradients.shape={tuple(gradients.shape)}, features.shape={tuple(features.shape)}"
        )
    g = _flatten_per_example(gradients)
    h = _flatten_per_example(features)
    dot = ops.sum(g * h, axis=1)
    return dot / (_safe_norm(g) * _safe_norm(h) + epsilon)


def alignment_penalty(
    gradients: Sequence,
    features: Sequence,
    sample_weight=None,
    epsilon: float = 1e-12,
):
    """The GFA penalty over several layers, and each layer's mean alignment.

    Args:
        gradients: One dL/dh_l per tapped layer.
        features: The matching h_l.
        sample_weight: Optional `[batch]` weights; the batch mean becomes a weighted
            mean, so that examples with weight 0 (padding) do not count.
        epsilon: See `gradient_feature_alignment`.

    Returns:
        `(penalty, alignments)`: the scalar mean over the batch of sum_l (1 - cos_l), and
        a list with each layer's (weighted) mean cosine.

    Raises:
        ValueError: If the lists are empty or of different lengths.

    Example:

    >>> import numpy as np
    >>> g = [np.ones((2, 3), "float32")]
    >>> penalty, alignments = alignment_penalty(g, [np.ones((2, 3), "float32")])
    >>> round(float(penalty), 6), round(float(alignments[0]), 6)
    (0.0, 1.0)
    """
    if len(gradients) != len(features) or not gradients:
        raise ValueError(
            "Expected one gradient per feature and at least one of each. "
            f"Received: {len(gradients)} gradients, {len(features)} features"
        )
    cosines = [gradient_feature_alignment(g, h, epsilon) for g, h in zip(gradients, features)]
    if sample_weight is None:
        weights = ops.ones_like(cosines[0])
    else:
        weights = ops.reshape(ops.cast(sample_weight, cosines[0].dtype), (-1,))
    # A batch whose weights are all 0 contributes nothing rather than 0/0.
    total_weight = ops.maximum(ops.sum(weights), 1e-12)

    def weighted_mean(v):
        return ops.sum(v * weights) / total_weight

    per_example_penalty = sum(1.0 - c for c in cosines)
    return weighted_mean(per_example_penalty), [weighted_mean(c) for c in cosines]
