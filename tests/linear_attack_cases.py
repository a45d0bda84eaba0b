"""Shared cases for the attack tests: a binary linear model with hand-set weights
whose answers are known in closed form, and invalid inputs every attack must reject."""

import keras
import numpy as np

# Class 0 wins everywhere in the balls the tests use (bias 5), so every
# iterate's gradient has the same sign and the optima are known corners.
W = np.array([[1.0, -1.0], [-2.0, 0.5], [0.5, 1.0], [0.0, -3.0]], dtype="float32")
BIAS = np.array([5.0, 0.0], dtype="float32")
X = np.array([[0.5, 0.4, 0.6, 0.5], [0.3, 0.7, 0.5, 0.2]], dtype="float32")
Y = np.array([0, 0], dtype="int32")
EPS = 0.1
# Unit vector along which the loss of class 0 grows fastest (in L2).
L2_DIRECTION = (W[:, 1] - W[:, 0]) / np.linalg.norm(W[:, 1] - W[:, 0])
# The Linf optimum: the corner x + eps * sign(w_1 - w_0).
LINF_CORNER = X + EPS * np.sign(W[:, 1] - W[:, 0])


def linear_model(kernel=W, bias=BIAS):
    """A Dense layer with the given weights, outputting logits."""
    inputs = keras.Input((kernel.shape[0],))
    outputs = keras.layers.Dense(kernel.shape[1])(inputs)
    model = keras.Model(inputs, outputs)
    model.layers[-1].set_weights([kernel, bias])
    return model


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model(x), axis=1) == y))


# (override of x, y, eps, ..., the phrase the ValueError must contain)
BAD_INPUTS = [
    (dict(eps=-0.1), "eps must be"),
    (dict(clip_min=1.0, clip_max=0.0), "clip_min must be smaller"),
    (dict(y=np.zeros(3, "int32")), "same number of examples"),
    (dict(y=np.array([0, 2], "int32")), "num_classes=2"),
    (dict(y=np.array([0.0, 0.5], "float32")), "integer class labels"),
    (dict(x=np.where(np.eye(2, 4) > 0, np.nan, X).astype("float32")), "NaN"),
]
BAD_INPUT_IDS = ["eps", "clip", "length", "label_range", "label_float", "nan"]


def call_with(attack, model, override, **defaults):
    """Calls `attack` on X, Y with `defaults` updated by `override`."""
    kwargs = dict(x=X, y=Y, eps=EPS, **defaults)
    kwargs.update(override)
    return attack(model, kwargs.pop("x"), kwargs.pop("y"), **kwargs)
