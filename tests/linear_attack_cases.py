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


# A 10-class linear model on flat inputs in [0, 1], for attacks whose exact answer
# is a small optimization problem: with logits z = x @ W10 + B10, the largest gain
# of class k over class y in the Linf ball intersected with the box is separable
# per coordinate, sum_i max(g_i * low_i, g_i * high_i) with g = W10[:, k] - W10[:, y].
_RNG = np.random.default_rng(0)
W10 = (0.3 * _RNG.normal(size=(64, 10))).astype("float32")
B10 = _RNG.normal(size=10).astype("float32")
X10 = _RNG.uniform(0.0, 1.0, size=(60, 64)).astype("float32")


def ten_class_case():
    """The model, the points and their labels (the model's clean predictions, so all start correct)."""
    model = linear_model(W10, B10)
    return model, X10, np.argmax(X10 @ W10 + B10, axis=1).astype("int32")


def linf_ball_bounds(x, eps, clip_min=0.0, clip_max=1.0):
    """Per-coordinate lowest and highest change allowed by the Linf ball and the box."""
    return np.maximum(-eps, clip_min - x), np.minimum(eps, clip_max - x)


def best_linf_gain(x, y, eps, kernel=W10, bias=B10):
    """`[n, classes]`: the largest `z_k - z_y` reachable in the Linf ball and the box (exact)."""
    low, high = linf_ball_bounds(x, eps)
    g = kernel[None, :, :] - kernel[:, y].T[:, :, None]  # [n, features, classes]
    gain = np.maximum(g * low[:, :, None], g * high[:, :, None]).sum(axis=1)
    z = x @ kernel + bias
    return z - z[np.arange(len(y)), y][:, None] + gain


def linf_breakable(x, y, eps, kernel=W10, bias=B10):
    """Whether some class can beat `y` in the ball (exact): the best gain over k != y is > 0."""
    best = best_linf_gain(x, y, eps, kernel, bias)
    best[np.arange(len(y)), y] = -np.inf
    return best.max(axis=1), best.max(axis=1) > 0


def linf_target_margin(x, y, targets, eps, kernel=W10, bias=B10):
    """The largest `min_{j != t} (z_t - z_j)` reachable in the ball and the box, by linear programming.

    Positive exactly when the target can be made the predicted class.
    """
    from scipy.optimize import linprog

    low, high = linf_ball_bounds(x, eps)
    z = x @ kernel + bias
    features, classes = kernel.shape
    result = []
    for n, t in enumerate(targets):
        others = [j for j in range(classes) if j != t]
        # Variables: the change d (features) and s. Maximize s subject to
        # (W_t - W_j) . d + z_t - z_j >= s for every j != t.
        a_ub = np.hstack([-(kernel[:, [t]] - kernel[:, others]).T, np.ones([len(others), 1])])
        b_ub = z[n, t] - z[n, others]
        bounds = list(zip(low[n], high[n])) + [(None, None)]
        c = np.zeros(features + 1)
        c[-1] = -1.0
        solution = linprog(c, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs")
        result.append(-solution.fun)
    return np.array(result)
