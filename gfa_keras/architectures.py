"""Built-in classifier architectures, by name, for the command line and the examples.

Both output logits (attacks need them, not probabilities) and take images in `[0, 1]`
pixel scale of any size, so the same name works on the 8x8 digits, 28x28
Fashion-MNIST and 32x32 CIFAR-10:

| name | the paper's | layers |
|---|---|---|
| `"mlp"` | Fashion-MNIST MLP | Flatten, Dense(256, relu), Dense(256, relu), Dense(classes) |
| `"small_cnn"` | CIFAR-10 CNN | Conv(32)-MaxPool-Conv(64)-MaxPool-Flatten-Dense(128, relu)-Dense(classes) |

Layers have fixed names (`hidden_1`, `hidden_2`, `logits`; `conv_1`, ..., `hidden`,
`logits`), so the logged `alignment_<layer>` metrics read the same in every run.
"""
from __future__ import annotations

import numbers
from typing import Callable

import keras

from gfa_keras.validation import check_choice, check_int

__all__ = ["ARCHITECTURES", "build_architecture"]


def _mlp(input_shape, num_classes, hidden=256):
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(hidden, activation="relu", name="hidden_1"),
            keras.layers.Dense(hidden, activation="relu", name="hidden_2"),
            keras.layers.Dense(num_classes, name="logits"),
        ],
        name="mlp",
    )


def _small_cnn(input_shape, num_classes, filters=(32, 64), dense=128):
    # "same" padding keeps the two poolings valid down to 4x4 inputs (the 8x8 digits).
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(filters[0], 3, activation="relu", padding="same", name="conv_1"),
            keras.layers.MaxPooling2D(name="pool_1"),
            keras.layers.Conv2D(filters[1], 3, activation="relu", padding="same", name="conv_2"),
            keras.layers.MaxPooling2D(name="pool_2"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(dense, activation="relu", name="hidden"),
            keras.layers.Dense(num_classes, name="logits"),
        ],
        name="small_cnn",
    )


ARCHITECTURES: dict[str, Callable[..., keras.Model]] = {"mlp": _mlp, "small_cnn": _small_cnn}


def build_architecture(name: str, input_shape, num_classes: int, seed: int | None = None) -> keras.Model:
    """Builds a fresh built-in classifier that outputs logits.

    Args:
        name: One of `ARCHITECTURES`: `"mlp"` or `"small_cnn"`.
        input_shape: Shape of one image, `(height, width, channels)`.
        num_classes: Number of output logits, at least 2.
        seed: If given, the global Keras seed is set first, so the initial weights
            are reproducible.

    Returns:
        A built, uncompiled `keras.Sequential`.

    Raises:
        ValueError: For an unknown name, an input shape that is not
            `(height, width, channels)` of positive sizes (or too small for the
            CNN's two poolings), or fewer than 2 classes.

    Example:

    >>> model = build_architecture("small_cnn", (32, 32, 3), 10, seed=0)
    >>> model.output_shape
    (None, 10)
    """
    check_choice("name", name, sorted(ARCHITECTURES), what="architecture")
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(s, numbers.Integral) and s > 0 for s in shape):
        raise ValueError(
            "input_shape must be (height, width, channels) of positive integers. "
            f"Received: input_shape={input_shape!r}"
        )
    if name == "small_cnn" and min(shape[:2]) < 4:
        raise ValueError(
            f"small_cnn pools twice by 2 and needs images of at least 4x4 pixels. Received: input_shape={shape}"
        )
    num_classes = check_int("num_classes", num_classes, minimum=2)
    if seed is not None:
        keras.utils.set_random_seed(seed)
    return ARCHITECTURES[name](tuple(int(s) for s in shape), num_classes)
