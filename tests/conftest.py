"""Shared fixtures and helpers: seeds, tiny data, tiny linear models, and a tiny trained model
(session-scoped, a few seconds)."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    yield


@pytest.fixture(scope="session")
def digits():
    """The 8x8 digits in [0, 1], shape (n, 8, 8, 1): 1,500 train and 297 test examples."""
    bunch = load_digits()
    x = (bunch.images / 16.0).astype("float32")[..., None]
    y = bunch.target.astype("int32")
    return (x[:1500], y[:1500]), (x[1500:], y[1500:])


# A 4-input, 3-class affine model with hand-set weights, whose decision boundaries (and so
# the minimal perturbations of DeepFool, FAB and EAD) are known in closed form.
AFFINE_W = np.array([[1.0, -2.0, 0.5], [0.0, 1.0, -1.0], [2.0, 0.5, 0.0], [-1.0, 0.0, 1.5]], "float32")
AFFINE_B = np.array([0.3, -0.2, 0.1], "float32")


def affine_model():
    """The hand-set affine model: logits `x @ AFFINE_W + AFFINE_B` for x of shape (n, 4)."""
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.layers[0].set_weights([AFFINE_W, AFFINE_B])
    return model


def affine_points(n=6, seed=0):
    """`n` points of [-1, 1]^4 labelled with the affine model's own predictions."""
    x = np.random.default_rng(seed).uniform(-1, 1, (n, 4)).astype("float32")
    return x, np.argmax(x @ AFFINE_W + AFFINE_B, axis=1).astype("int32")


def random_linear_model(seed=0):
    """A seeded linear classifier of (2, 3) inputs into 4 logits: Flatten, then Dense named "logits"."""
    return keras.Sequential(
        [
            keras.Input((2, 3)),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(4, name="logits",
                               kernel_initializer=keras.initializers.RandomNormal(stddev=1.0, seed=seed),
                               bias_initializer=keras.initializers.RandomNormal(stddev=0.5, seed=seed + 1)),
        ],
        name="linear",
    )


def make_mlp(input_shape=(8, 8, 1), num_classes=10, hidden=32, seed=0):
    """A small Functional MLP that outputs logits."""
    init = keras.initializers.GlorotUniform(seed=seed)
    inputs = keras.Input(input_shape)
    h = keras.layers.Flatten()(inputs)
    h = keras.layers.Dense(hidden, activation="relu", kernel_initializer=init, name="dense_1")(h)
    h = keras.layers.Dense(hidden, activation="relu", kernel_initializer=init, name="dense_2")(h)
    outputs = keras.layers.Dense(num_classes, kernel_initializer=init, name="logits")(h)
    return keras.Model(inputs, outputs, name="mlp")


@pytest.fixture(scope="session")
def trained_digits_model(digits):
    """An undefended MLP trained to about 88% test accuracy on the digits (logits output)."""
    keras.utils.set_random_seed(0)
    (x, y), _ = digits
    model = make_mlp(hidden=64)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x, y, epochs=15, batch_size=64, verbose=0)
    return model
