"""Built-in classifier architectures, by name, for the command line and the examples.

Both output logits (attacks need them, not probabilities) and take images in `[0, 1]`
pixel scale of any size, so the same name works on the 8x8 digits, 28x28
Fashion-MNIST and 32x32 CIFAR-10:

| name | the paper's | layers |
|---|---|---|
| `"mlp"` | Fashion-MNIST MLP | Flatten, Dense(256, relu), Dense(256, relu), Dense(classes) |
| `"small_cnn"` | CIFAR-10 CNN | Conv(32)-MaxPool-Conv(64)-MaxPool-Flatten-Dense(128, relu)-Dense(classes) |
| `"madry_cnn"` | (capacity) | Madry et al. (2018)'s MNIST CNN: small_cnn's layers with 5x5 kernels and Dense(1024): about 3x its compute, 8x its weights |
| `"resnet18"` | (ResNet scale) | CIFAR ResNet-18 (He et al. 2016): 3x3 stem, 4 stages of 2 basic blocks (64-512 filters), batch norm, global average pooling, Dense(classes) |

Layers have fixed names (`hidden_1`, `hidden_2`, `logits`; `conv_1`, ..., `hidden`,
`logits`; `stem_conv`, `stage1_block1_conv1`, ...), so the logged `alignment_<layer>`
metrics read the same in every run. For other real networks use `keras.applications`
or KerasHub models directly: taps reach into nested models.
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


def _small_cnn(input_shape, num_classes, filters=(32, 64), dense=128, kernel=3, name="small_cnn"):
    # "same" padding keeps the two poolings valid down to 4x4 inputs (the 8x8 digits).
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(filters[0], kernel, activation="relu", padding="same", name="conv_1"),
            keras.layers.MaxPooling2D(name="pool_1"),
            keras.layers.Conv2D(filters[1], kernel, activation="relu", padding="same", name="conv_2"),
            keras.layers.MaxPooling2D(name="pool_2"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(dense, activation="relu", name="hidden"),
            keras.layers.Dense(num_classes, name="logits"),
        ],
        name=name,
    )


def _madry_cnn(input_shape, num_classes):
    # The adversarially trained MNIST model of Madry et al. (2018): the same two conv-pool
    # stages, wider kernels and a wider dense layer (how much capacity buys robustness).
    return _small_cnn(input_shape, num_classes, dense=1024, kernel=5, name="madry_cnn")


def _basic_block(h, filters, stride, name):
    shortcut = h
    h = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv1")(h)
    h = keras.layers.BatchNormalization(name=f"{name}_bn1")(h)
    h = keras.layers.ReLU(name=f"{name}_relu1")(h)
    h = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(h)
    h = keras.layers.BatchNormalization(name=f"{name}_bn2")(h)
    if stride != 1 or shortcut.shape[-1] != filters:
        # The projection shortcut of the CIFAR ResNets that change shape (option B).
        shortcut = keras.layers.Conv2D(filters, 1, strides=stride, use_bias=False,
                                       name=f"{name}_shortcut_conv")(shortcut)
        shortcut = keras.layers.BatchNormalization(name=f"{name}_shortcut_bn")(shortcut)
    h = keras.layers.Add(name=f"{name}_add")([h, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(h)


def _resnet18(input_shape, num_classes, filters=(64, 128, 256, 512)):
    # The CIFAR variant: a 3x3 stride-1 stem and no max pooling, so 32x32 inputs reach
    # the last stage at 4x4 (the ImageNet stem would leave 1x1).
    inputs = keras.Input(input_shape)
    h = keras.layers.Conv2D(filters[0], 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    h = keras.layers.BatchNormalization(name="stem_bn")(h)
    h = keras.layers.ReLU(name="stem_relu")(h)
    for stage, width in enumerate(filters, start=1):
        for block in (1, 2):
            stride = 2 if stage > 1 and block == 1 else 1
            h = _basic_block(h, width, stride, name=f"stage{stage}_block{block}")
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    outputs = keras.layers.Dense(num_classes, name="logits")(h)
    return keras.Model(inputs, outputs, name="resnet18")


ARCHITECTURES: dict[str, Callable[..., keras.Model]] = {
    "mlp": _mlp, "small_cnn": _small_cnn, "madry_cnn": _madry_cnn, "resnet18": _resnet18}


def build_architecture(name: str, input_shape, num_classes: int, seed: int | None = None) -> keras.Model:
    """Builds a fresh built-in classifier that outputs logits.

    Args:
        name: One of `ARCHITECTURES`: `"mlp"`, `"small_cnn"`, `"madry_cnn"` or `"resnet18"`.
        input_shape: Shape of one image, `(height, width, channels)`.
        num_classes: Number of output logits, at least 2.
        seed: If given, the global Keras seed is set first, so the initial weights
            are reproducible.

    Returns:
        A built, uncompiled Keras model (`keras.Sequential` for "mlp" and the CNNs,
        Functional for "resnet18").

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
    if name in ("small_cnn", "madry_cnn") and min(shape[:2]) < 4:
        raise ValueError(
            f"{name} pools twice by 2 and needs images of at least 4x4 pixels. Received: input_shape={shape}"
        )
    if name == "resnet18" and min(shape[:2]) < 8:
        raise ValueError(
            f"resnet18 halves the image three times and needs images of at least 8x8 pixels. "
            f"Received: input_shape={shape}"
        )
    num_classes = check_int("num_classes", num_classes, minimum=2)
    if seed is not None:
        keras.utils.set_random_seed(seed)
    return ARCHITECTURES[name](tuple(int(s) for s in shape), num_classes)
