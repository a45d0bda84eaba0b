"""Shared fixtures: seeds, tiny data and a tiny trained model (session-scoped, a few seconds)."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras
import pytest
from sklearn.datasets import load_digits


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
