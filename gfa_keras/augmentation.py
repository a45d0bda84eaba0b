"""Training-data augmentation as the adversarial-training literature uses it: a random crop of
the image padded with zeros, and a random horizontal flip (Madry et al., Rice et al. and Rebuffi
et al. 2021 on CIFAR-10: 4 pixels of padding on 32).

It acts on whole batches (vectorised: one gather per axis) and is stateless: a batch's crops
and flips are a function of the seed it is given, so a training run resumed from a checkpoint
sees the same augmented batches as the run that was not interrupted. `as_tf_dataset(...,
augment=CropFlip(4))` applies it in the input pipeline, before the model and its attack.
"""
from __future__ import annotations

import tensorflow as tf

from gfa_keras.validation import check_int

__all__ = ["CropFlip"]


class CropFlip:
    """Pads each image with `padding` zero pixels on every side, crops a random window of
    the original size from it, and flips the result left-right with probability 1/2.

    Args:
        padding: Pixels of zero padding on each side (>= 0); each crop is shifted by up to
            this many pixels along each axis. 0 crops nothing.
        flip: Whether to flip at random.

    Raises:
        ValueError: For a negative or non-integer padding, or nothing to do (padding 0
            without flips); when called, for a batch that is not `(batch, height, width,
            channels)`.

    Example:

    >>> import numpy as np
    >>> images = np.random.default_rng(0).uniform(size=(8, 28, 28, 1)).astype("float32")
    >>> CropFlip(padding=2)(images, seed=(0, 1)).shape
    TensorShape([8, 28, 28, 1])
    """

    def __init__(self, padding: int = 4, flip: bool = True):
        self.padding = check_int("padding", padding, minimum=0)
        self.flip = bool(flip)
        if self.padding == 0 and not self.flip:
            raise ValueError("CropFlip with padding=0 and flip=False changes nothing. Expected padding > 0 or "
                             f"flip=True. Received: padding={padding!r}, flip={flip!r}")

    def __repr__(self):
        return f"CropFlip(padding={self.padding}, flip={self.flip})"

    def __call__(self, images, seed) -> tf.Tensor:
        """The augmented batch.

        Args:
            images: A batch `(batch, height, width, channels)`.
            seed: A stateless seed pair (two integers): the same seed gives the same batch.

        Returns:
            The batch, same shape and dtype.
        """
        images = tf.convert_to_tensor(images)
        if images.shape.rank != 4:
            raise ValueError("CropFlip augments image batches shaped (batch, height, width, channels). "
                             f"Received: shape {tuple(images.shape)}")
        seed = tf.cast(seed, tf.int64)
        shape = tf.shape(images)
        batch, height, width = shape[0], shape[1], shape[2]
        if self.padding:
            p = self.padding
            padded = tf.pad(images, [[0, 0], [p, p], [p, p], [0, 0]])
            offsets = tf.random.stateless_uniform([batch, 2], seed, minval=0, maxval=2 * p + 1, dtype=tf.int32)
            rows = offsets[:, :1] + tf.range(height)[None, :]
            columns = offsets[:, 1:] + tf.range(width)[None, :]
            images = tf.gather(padded, rows, axis=1, batch_dims=1)
            images = tf.gather(images, columns, axis=2, batch_dims=1)
        if self.flip:
            flips = tf.random.stateless_uniform([batch], seed + [0, 1]) < 0.5
            images = tf.where(flips[:, None, None, None], tf.reverse(images, axis=[2]), images)
        return images
