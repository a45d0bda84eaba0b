import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from gfa_keras.attacks import apgd_ce, get_attack, perturbation_norms, square
from gfa_keras.attacks.square import (
    _initial_point,
    _l2_start,
    _l2_step,
    _linf_step,
    _p_schedule,
    _place,
    _pseudo_gaussian_window,
    _window_sizes,
)

N = 50


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0), axis=1) == y))


def test_registered_as_black_box():
    spec = get_attack("square")
    assert spec.fn is square and not spec.white_box and spec.kind == "bounded"
    assert set(spec.norms) == {"linf", "l2"}


def test_window_schedule_halves_the_area_on_the_papers_schedule():
    # With 10,000 queries the area fraction p halves after query 10, 50, 200, ...
    sides = _window_sizes(10000, 0.8, 32, 32, "linf")
    expected_p = {0: 0.8, 10: 0.8, 11: 0.4, 51: 0.2, 201: 0.1, 9999: 0.8 / 512}
    for query, p in expected_p.items():
        assert sides[query] == max(round(np.sqrt(p * 32 * 32)), 1)
    l2_sides = _window_sizes(100, 0.8, 8, 8, "l2")
    assert np.all(l2_sides % 2 == 1) and l2_sides.min() >= 3 and l2_sides.max() <= 7


def test_l2_pattern_is_unit_norm_and_antisymmetric_in_sign():
    pattern = _pseudo_gaussian_window(5)
    np.testing.assert_allclose(np.linalg.norm(pattern), 1.0, rtol=1e-6)
    assert np.all(pattern[:2] > 0) and np.all(pattern[2:] < 0)
    # The peak of each half sits in its centre column.
    assert np.argmax(pattern[1]) == 2 and np.argmin(pattern[3]) == 2


def linear_image_model(gradient, rival=None):
    """Logits `[100, gradient . x]` (or `[100, 50 + rival . x, gradient . x]`) on 8x8x1 images.

    Class 0 keeps a margin of at least 40 in the tests' balls (|gradient . x| < 50),
    so no example is ever fooled and every query of the budget runs.
    """
    columns = [np.zeros(64, "float32")] + ([] if rival is None else [rival.reshape(-1)]) + [gradient.reshape(-1)]
    bias = [100.0] + ([] if rival is None else [50.0]) + [0.0]
    inputs = keras.Input((8, 8, 1))
    outputs = keras.layers.Dense(len(columns))(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, outputs)
    model.layers[-1].set_weights([np.stack(columns, 1), np.array(bias, "float32")])
    return model


# The Linf optimum on a linear model is known in closed form: each pixel at
# x + eps * sign(gradient). Square reaches it on every pixel its windows can cover:
# as the reference, a window's corner is drawn from [0, 8 - side), so on 8x8 images
# the windows cover rows and columns 0..6; the last row and column keep their
# initial +-eps stripes. With 2,000 queries, queries 1001..1999 use 1x1 windows
# (p = 0.8 / 32 and 0.8 / 64 give sides round(1.26) = round(0.89) = 1); a 1x1 window
# is kept exactly when it moves a wrong pixel to its optimum (the margin is a sum
# over pixels), which each query does for a given wrong pixel with probability
# 1 / (49 * 2). A pixel is left wrong with probability (1 - 1/98)^999 < 4e-5, so all
# 4 * 49 pixels reach the optimum with probability > 99.3% for any seed.
LINEAR_GRADIENT = (np.random.default_rng(0).choice([-1.0, 1.0], [8, 8, 1])
                   * np.random.default_rng(1).uniform(0.5, 2.0, [8, 8, 1])).astype("float32")
LINEAR_X = np.random.default_rng(2).uniform(0.2, 0.8, [4, 8, 8, 1]).astype("float32")  # the box never binds


def test_linf_reaches_the_closed_form_optimum_of_a_linear_model():
    eps = 0.1
    x_adv = square(linear_image_model(LINEAR_GRADIENT), LINEAR_X, np.zeros(4, "int32"), eps=eps, steps=2000).numpy()
    optimum = LINEAR_X + eps * np.sign(LINEAR_GRADIENT)
    np.testing.assert_allclose(x_adv[:, :7, :7], optimum[:, :7, :7], atol=1e-6)
    # Every pixel stays at a corner of the ball, from the stripes or the windows.
    np.testing.assert_allclose(np.abs(x_adv - LINEAR_X), eps, atol=1e-6)


def test_targets_decide_the_direction_of_the_search():
    # Logits [100, 50 - g . x, g . x] with |g . x| < 50: untargeted, the best rival is
    # class 1, so the search lowers g . x, toward x - eps * sign(g); aimed at class 2
    # it raises g . x, toward x + eps * sign(g) (both optima by the derivation above).
    eps = 0.1
    model = linear_image_model(LINEAR_GRADIENT, rival=-LINEAR_GRADIENT)
    assert np.abs(np.sum(LINEAR_X * LINEAR_GRADIENT, axis=(1, 2, 3))).max() + eps * np.abs(LINEAR_GRADIENT).sum() < 50
    labels = np.zeros(4, "int32")
    for targets, sign in [(None, -1.0), (np.full(4, 2, "int32"), 1.0)]:
        x_adv = square(model, LINEAR_X, labels, eps=eps, steps=2000, targets=targets).numpy()
        optimum = LINEAR_X + sign * eps * np.sign(LINEAR_GRADIENT)
        np.testing.assert_allclose(x_adv[:, :7, :7], optimum[:, :7, :7], atol=1e-6)


@pytest.mark.parametrize("norm, eps", [("linf", 0.2), ("l2", 1.0)])
def test_lies_between_its_start_and_the_white_box_attack(trained_digits_model, digits, norm, eps):
    # Square keeps a query only when it lowers the margin, so it fools every point its
    # starting point fools (accuracy at most the start's); a black-box search does not
    # beat the white-box APGD-CE (AutoAttack's own sanity check), up to one point of
    # the 50 found by chance.
    _, (x, y) = digits
    x, y = x[:N], y[:N]
    x_adv = square(trained_digits_model, x, y, eps=eps, norm=norm, steps=300, seed=3)
    assert x_adv.shape == x.shape and x_adv.dtype == tf.float32
    assert np.all(perturbation_norms(x, x_adv, norm).numpy() <= eps * (1 + 1e-6))
    assert float(tf.reduce_min(x_adv)) >= 0.0 and float(tf.reduce_max(x_adv)) <= 1.0
    start = _initial_point(tf.constant(x), eps, norm, 0.0, 1.0, tf.constant(3))
    white_box = apgd_ce(trained_digits_model, x, y, eps=eps, norm=norm, steps=100)
    robust = accuracy(trained_digits_model, x_adv, y)
    assert accuracy(trained_digits_model, white_box, y) - 1 / N <= robust < accuracy(trained_digits_model, start, y)


def test_same_seed_same_result(trained_digits_model, digits):
    _, (x, y) = digits
    x, y = x[:20], y[:20]
    first = square(trained_digits_model, x, y, eps=0.2, steps=50, seed=7).numpy()
    again = square(trained_digits_model, x, y, eps=0.2, steps=50, seed=7).numpy()
    np.testing.assert_array_equal(first, again)
    other = square(trained_digits_model, x, y, eps=0.2, steps=50, seed=8).numpy()
    assert np.any(first != other)


def test_only_examples_not_yet_fooled_are_queried(trained_digits_model, digits):
    _, (x, y) = digits
    x = x[:10]
    queries = tf.Variable(0)

    def counting_model(batch):
        queries.assign_add(tf.shape(batch)[0])
        return trained_digits_model(batch)

    logits = trained_digits_model.predict(x, verbose=0)
    # Labels the model finds least likely: fooled from the start, never queried after the initial point.
    least_likely = np.argmin(logits, axis=1).astype("int32")
    square(counting_model, x, least_likely, eps=0.05, steps=40)
    assert int(queries.numpy()) == 2 * len(x)  # the label check, then the initial point
    # True labels: every example is queried at most once per step.
    queries.assign(0)
    square(counting_model, x, y[:10], eps=0.05, steps=40)
    assert 2 * len(x) + 40 <= int(queries.numpy()) <= 2 * len(x) + 40 * len(x)


def test_eps_zero_returns_x(trained_digits_model, digits):
    _, (x, y) = digits
    np.testing.assert_array_equal(square(trained_digits_model, x[:5], y[:5], eps=0.0, steps=5).numpy(), x[:5])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"eps": None}, r"needs a perturbation bound\. Received: eps=None"),
        ({"eps": 0.1, "steps": 0}, r"steps must be a positive integer\. Received: steps=0"),
        ({"eps": 0.1, "p_init": 0.0}, r"p_init must be a finite number > 0 and <= 1\. Received: p_init=0\.0"),
        ({"eps": 0.1, "norm": "l1"}, r"Unknown norm\. Expected one of \['linf', 'l2'\]\. Received: norm='l1'"),
        ({"eps": 0.1, "rescale_schedule": "yes"}, r"Unknown rescale_schedule. Expected one of \[False, True\]"),
    ],
)
def test_invalid_options_raise(trained_digits_model, digits, kwargs, match):
    _, (x, y) = digits
    with pytest.raises(ValueError, match=match):
        square(trained_digits_model, x[:4], y[:4], **kwargs)


def test_non_image_input_raises(digits):
    _, (x, y) = digits
    with pytest.raises(ValueError, match=r"square needs a batch of images \[batch, height, width\(, channels\)\]\. "
                                         r"Received: x\.shape=\(4, 64\)"):
        square(lambda v: v, x[:4].reshape(4, -1), y[:4], eps=0.1)


# --- An independent NumPy transcription of the reference, fra31/auto-attack
# `autoattack/square.py` (SquareAttack), for one example in its CHW layout. The
# reference's random draws (`torch.rand`) are passed in as uniform numbers u in [0, 1):
# `random_int(0, n)` is `int(n * u)`, `random_choice` is `sign(2u - 1)`, and `eta`
# transposes its pattern when its draw is > 0.5.


def reference_p_selection(it, p_init, n_queries, rescale_schedule):
    if rescale_schedule:
        it = int(it / n_queries * 10000)
    if 10 < it <= 50:
        return p_init / 2
    elif 50 < it <= 200:
        return p_init / 4
    elif 200 < it <= 500:
        return p_init / 8
    elif 500 < it <= 1000:
        return p_init / 16
    elif 1000 < it <= 2000:
        return p_init / 32
    elif 2000 < it <= 4000:
        return p_init / 64
    elif 4000 < it <= 6000:
        return p_init / 128
    elif 6000 < it <= 8000:
        return p_init / 256
    elif 8000 < it:
        return p_init / 512
    return p_init


def reference_side(p, c, h, w, norm):
    n_features = c * h * w
    if norm == "linf":
        return max(int(round(math.sqrt(p * n_features / c))), 1)
    s = max(int(round(math.sqrt(p * n_features / c))), 3)
    return s + 1 if s % 2 == 0 else s


def reference_eta_rectangles(x, y):
    delta = np.zeros([x, y])
    x_c, y_c = x // 2 + 1, y // 2 + 1
    counter2 = [x_c - 1, y_c - 1]
    for counter in range(0, max(x_c, y_c)):
        delta[max(counter2[0], 0):min(counter2[0] + (2 * counter + 1), x),
              max(0, counter2[1]):min(counter2[1] + (2 * counter + 1), y)] += 1.0 / (counter + 1) ** 2
        counter2[0] -= 1
        counter2[1] -= 1
    return delta / np.sqrt((delta**2).sum())


def reference_eta(s, u_transpose):
    delta = np.zeros([s, s])
    delta[:s // 2] = reference_eta_rectangles(s // 2, s)
    delta[s // 2:] = -1.0 * reference_eta_rectangles(s - s // 2, s)
    delta /= np.sqrt((delta**2).sum())
    return delta.T if u_transpose > 0.5 else delta


def reference_linf_step(x, x_best, eps, s, u_vh, u_vw, u_sign):
    c, h, w = x.shape
    vh, vw = int((h - s) * u_vh), int((w - s) * u_vw)
    new_deltas = np.zeros([c, h, w])
    new_deltas[:, vh:vh + s, vw:vw + s] = 2.0 * eps * np.sign(2 * u_sign - 1).reshape(c, 1, 1)
    x_new = x_best + new_deltas
    x_new = np.minimum(np.maximum(x_new, x - eps), x + eps)
    return np.clip(x_new, 0.0, 1.0)


def reference_l2_step(x, x_best, eps, s, u_corner, u_transpose, u_sign):
    c, h, w = x.shape
    delta_curr = x_best - x
    vh, vw = int((h - s) * u_corner[0]), int((w - s) * u_corner[1])
    mask_1 = np.zeros_like(x)
    mask_1[:, vh:vh + s, vw:vw + s] = 1.0
    norms_window_1 = np.sqrt((delta_curr[:, vh:vh + s, vw:vw + s] ** 2).sum(axis=(-2, -1), keepdims=True))
    vh2, vw2 = int((h - s) * u_corner[2]), int((w - s) * u_corner[3])
    mask_2 = np.zeros_like(x)
    mask_2[:, vh2:vh2 + s, vw2:vw2 + s] = 1.0
    norms_image = np.sqrt(((x_best - x) ** 2).sum())
    norms_windows = np.sqrt(((delta_curr * np.maximum(mask_1, mask_2)) ** 2).sum())
    new_deltas = reference_eta(s, u_transpose)[None] * np.sign(2 * u_sign - 1).reshape(c, 1, 1)
    new_deltas = new_deltas + delta_curr[:, vh:vh + s, vw:vw + s] / (1e-12 + norms_window_1)
    new_deltas = new_deltas / (1e-12 + np.sqrt((new_deltas**2).sum(axis=(-2, -1), keepdims=True))) * np.sqrt(
        np.maximum(eps**2 - norms_image**2, 0.0) / c + norms_windows**2)
    delta_curr[:, vh2:vh2 + s, vw2:vw2 + s] = 0.0
    delta_curr[:, vh:vh + s, vw:vw + s] = new_deltas
    return np.clip(x + delta_curr / (np.sqrt((delta_curr**2).sum()) + 1e-12) * eps, 0.0, 1.0)


def reference_l2_start(x, eps, u_transpose, u_sign):
    c, h, w = x.shape
    delta_init = np.zeros_like(x)
    s = h // 5
    sp_init = (h - s * 5) // 2
    vh, k = sp_init, 0
    for _ in range(h // s):
        vw = sp_init
        for _ in range(w // s):
            delta_init[:, vh:vh + s, vw:vw + s] += (
                reference_eta(s, u_transpose[k])[None] * np.sign(2 * u_sign[k] - 1).reshape(c, 1, 1))
            vw += s
            k += 1
        vh += s
    return np.clip(x + delta_init / (np.sqrt((delta_init**2).sum()) + 1e-12) * eps, 0.0, 1.0)


def hwc(a):
    return np.moveaxis(a, 0, -1)


def chw(a):
    return np.moveaxis(a, -1, 0)


def points_in_ball(rng, n, h, w, c, eps, norm):
    """Clean images in [0, 1] and current points inside their eps-ball and the box (NHWC)."""
    x = rng.uniform(0.0, 1.0, [n, h, w, c]).astype("float32")
    if norm == "linf":
        # In float32 as the attack computes x +- eps, so x_best is exactly in the ball.
        corner = (rng.choice([-1.0, 1.0], [n, h, w, c]) * (rng.uniform(size=[n, h, w, c]) < 0.8)).astype("float32")
        x_best = x + np.float32(eps) * corner
    else:
        d = rng.normal(size=[n, h, w, c])
        x_best = x + eps * d / np.linalg.norm(d.reshape(n, -1), axis=1)[:, None, None, None]
    return x, np.clip(x_best, 0.0, 1.0).astype("float32")


@pytest.mark.parametrize("rescale_schedule", [False, True])
@pytest.mark.parametrize("steps", [100, 1000, 5000, 10000])
def test_window_schedule_is_the_references(steps, rescale_schedule):
    p = _p_schedule(steps, 0.8, rescale_schedule)
    expected = [reference_p_selection(it, 0.8, steps, rescale_schedule) for it in range(steps)]
    np.testing.assert_array_equal(p, expected)
    for norm in ("linf", "l2"):
        for h, c in [(28, 1), (32, 3)]:
            sides = _window_sizes(steps, 0.8, h, h, norm, rescale_schedule)
            np.testing.assert_array_equal(sides, [reference_side(q, c, h, h, norm) for q in expected])


def test_canonical_schedule_stops_halving_within_the_budget():
    # AutoAttack's standard run: 5,000 queries end at p_init / 128 (after query 4000);
    # rescaled to 5,000 they would end at p_init / 512.
    assert _p_schedule(5000, 0.8, False)[-1] == 0.8 / 128
    assert _p_schedule(5000, 0.8, True)[-1] == 0.8 / 512
    assert _p_schedule(1000, 0.8, False)[-1] == 0.8 / 16


@pytest.mark.parametrize("side", [1, 3, 4, 5, 7, 11])
def test_l2_pattern_is_the_references_eta(side):
    np.testing.assert_allclose(_pseudo_gaussian_window(side), reference_eta(side, 0.0), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("height, width", [(28, 28), (8, 13)])
def test_placed_l2_pattern_is_zero_outside_its_window(height, width):
    # The case: a 5x5 window low and right on a 28x28 image, where the clipped
    # lookup copied the pattern's first row and column over the rest of the image.
    rng = np.random.default_rng(0)
    for side in (3, 5, min(height, width) - (1 - min(height, width) % 2)):
        pattern = np.zeros([height, width], "float32")
        pattern[:side, :side] = _pseudo_gaussian_window(side)
        tops = tf.constant(np.r_[0, height - side, rng.integers(0, height - side + 1, 6)], tf.int32)
        lefts = tf.constant(np.r_[width - side, 0, rng.integers(0, width - side + 1, 6)], tf.int32)
        placed = _place(tf.constant(pattern), tops, lefts, height, width).numpy()[..., 0]
        for k, (top, left) in enumerate(zip(tops.numpy(), lefts.numpy())):
            outside = np.ones([height, width], bool)
            outside[top:top + side, left:left + side] = False
            assert np.count_nonzero(placed[k][outside]) == 0
            np.testing.assert_array_equal(placed[k][top:top + side, left:left + side], pattern[:side, :side])


def test_linf_update_is_zero_outside_its_window():
    rng = np.random.default_rng(1)
    n, h, w, c, eps, side = 6, 28, 28, 3, 0.1, 5
    x, x_best = points_in_ball(rng, n, h, w, c, eps, "linf")
    u_corner = rng.uniform(size=[n, 2]).astype("float32")
    u_corner[0] = [0.999, 0.999]  # the lowest, rightmost corner the reference draws
    candidate = _linf_step(x, x_best, eps, side, u_corner, rng.uniform(size=[n, c]).astype("float32"), 0.0, 1.0)
    changed = np.any(candidate.numpy() != x_best, axis=3)
    for k in range(n):
        top, left = int((h - side) * u_corner[k, 0]), int((w - side) * u_corner[k, 1])
        outside = np.ones([h, w], bool)
        outside[top:top + side, left:left + side] = False
        assert not np.any(changed[k][outside])


@pytest.mark.parametrize("h, w, c, side", [(28, 28, 1, 5), (32, 32, 3, 9), (10, 10, 3, 10)])
def test_linf_step_equals_the_reference(h, w, c, side):
    rng = np.random.default_rng(2)
    n, eps = 5, 0.1
    x, x_best = points_in_ball(rng, n, h, w, c, eps, "linf")
    u_corner = rng.uniform(size=[n, 2]).astype("float32")
    u_sign = rng.uniform(size=[n, c]).astype("float32")
    ours = _linf_step(x, x_best, eps, side, u_corner, u_sign, 0.0, 1.0).numpy()
    for k in range(n):
        expected = reference_linf_step(chw(x[k]).astype("float64"), chw(x_best[k]).astype("float64"), eps, side,
                                       u_corner[k, 0], u_corner[k, 1], u_sign[k])
        np.testing.assert_allclose(ours[k], hwc(expected), rtol=0, atol=1e-6)


@pytest.mark.parametrize("h, w, c, side", [(28, 28, 1, 5), (32, 32, 3, 9), (9, 9, 3, 9)])
def test_l2_step_equals_the_reference(h, w, c, side):
    rng = np.random.default_rng(3)
    n, eps = 6, 0.5
    x, x_best = points_in_ball(rng, n, h, w, c, eps, "l2")
    x_best[0] = np.clip(x[0] + 0.3 * (x_best[0] - x[0]), 0, 1)  # well inside the ball: unused budget
    u_corner = rng.uniform(size=[n, 4]).astype("float32")
    u_corner[1] = [0.999, 0.999, 0.0, 0.0]  # windows at opposite corners
    u_corner[2] = [0.5, 0.5, 0.5, 0.5]  # the same window twice
    u_transpose = np.array([0.2, 0.7, 0.9, 0.1, 0.6, 0.4], "float32")
    u_sign = rng.uniform(size=[n, c]).astype("float32")
    patterns = np.zeros([2, h, w], "float32")
    patterns[0, :side, :side] = _pseudo_gaussian_window(side)
    patterns[1, :side, :side] = patterns[0, :side, :side].T
    ours = _l2_step(x, x_best, eps, side, patterns, u_corner, u_transpose, u_sign, 0.0, 1.0).numpy()
    for k in range(n):
        expected = reference_l2_step(chw(x[k]).astype("float64"), chw(x_best[k]).astype("float64"), eps, side,
                                     u_corner[k], u_transpose[k], u_sign[k])
        np.testing.assert_allclose(ours[k], hwc(expected), rtol=0, atol=2e-6)


@pytest.mark.parametrize("h, w, c", [(28, 28, 1), (32, 32, 3)])
def test_l2_starting_point_equals_the_reference(h, w, c):
    rng = np.random.default_rng(4)
    n, eps = 3, 1.0
    x = rng.uniform(size=[n, h, w, c]).astype("float32")
    blocks = (h // (h // 5)) * (w // (h // 5))
    u_transpose = rng.uniform(size=[n, blocks]).astype("float32")
    u_sign = rng.uniform(size=[n, blocks, c]).astype("float32")
    ours = _l2_start(x, eps, u_transpose, u_sign, 0.0, 1.0).numpy()
    for k in range(n):
        expected = reference_l2_start(chw(x[k]).astype("float64"), eps, u_transpose[k], u_sign[k])
        np.testing.assert_allclose(ours[k], hwc(expected), rtol=0, atol=1e-6)


@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 0.5)])
def test_rank_3_batches_reach_a_model_that_expects_them(norm, eps):
    # The attack works on [batch, height, width, 1] internally; the model must still
    # be called with the caller's [batch, height, width] (a Keras model rejects rank 4).
    inputs = keras.Input((5, 7))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(inputs)))
    x = np.random.default_rng(0).uniform(size=(4, 5, 7)).astype("float32")
    y = np.argmax(model(x), axis=1)
    x_adv = square(model, x, y, eps=eps, norm=norm, steps=20)
    assert x_adv.shape == x.shape
    assert np.all(perturbation_norms(x, x_adv, norm).numpy() <= eps * (1 + 1e-6))


class _RecordShapes(keras.layers.Layer):
    """Passes its input through and records the static shape it was traced with."""

    def __init__(self, record, **kwargs):
        super().__init__(**kwargs)
        self.record = record  # a callable: Keras would copy a list into a tracked one

    def call(self, inputs):
        self.record(tuple(inputs.shape))
        return inputs


@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 0.5)])
def test_the_model_sees_the_images_static_shape_in_the_loop(norm, eps):
    # With an unknown channel count Keras runs Conv2D through XLA, which made every
    # query 40% slower on CPU; the candidates must keep the images' height, width, channels.
    # One channel: a dynamic channel count broadcast against 1 is what lost it.
    seen = []
    inputs = keras.Input((6, 6, 1))
    hidden = keras.layers.Conv2D(3, 3)(_RecordShapes(seen.append)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(4)(keras.layers.Flatten()(hidden)))
    x = np.random.default_rng(0).uniform(size=(5, 6, 6, 1)).astype("float32")
    y = np.argmax(model(x), axis=1)
    square(model, x, y, eps=eps, norm=norm, steps=5)
    assert len(seen) >= 3  # the clean pass, the start's margin and the candidates' inside the loop
    assert all(shape[1:] == (6, 6, 1) for shape in seen), seen
