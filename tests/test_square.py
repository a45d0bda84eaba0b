import numpy as np
import pytest
import tensorflow as tf

from gfa_keras.attacks import get_attack, perturbation_norms, square
from gfa_keras.attacks.square import _pseudo_gaussian_window, _window_sizes

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


@pytest.mark.parametrize("norm, eps, max_accuracy", [("linf", 0.2, 0.3), ("l2", 1.0, 0.5)])
def test_lowers_accuracy_and_stays_in_ball_and_box(trained_digits_model, digits, norm, eps, max_accuracy):
    _, (x, y) = digits
    x, y = x[:N], y[:N]
    clean = accuracy(trained_digits_model, x, y)
    x_adv = square(trained_digits_model, x, y, eps=eps, norm=norm, steps=300, seed=3)
    assert x_adv.shape == x.shape and x_adv.dtype == tf.float32
    assert clean > 0.9 and accuracy(trained_digits_model, x_adv, y) <= max_accuracy
    assert np.all(perturbation_norms(x, x_adv, norm).numpy() <= eps * (1 + 1e-6))
    assert float(tf.reduce_min(x_adv)) >= 0.0 and float(tf.reduce_max(x_adv)) <= 1.0


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


def test_explicit_targets_are_reached(trained_digits_model, digits):
    _, (x, y) = digits
    x, y = x[:20], y[:20]
    targets = (y + 1) % 10
    x_adv = square(trained_digits_model, x, y, eps=0.3, steps=300, targets=targets, seed=1)
    pred = np.argmax(trained_digits_model.predict(x_adv, verbose=0), axis=1)
    assert np.mean(pred == targets) >= 0.5
    assert np.all(perturbation_norms(x, x_adv, "linf").numpy() <= 0.3 * (1 + 1e-6))


def test_eps_zero_returns_x(trained_digits_model, digits):
    _, (x, y) = digits
    np.testing.assert_array_equal(square(trained_digits_model, x[:5], y[:5], eps=0.0, steps=5).numpy(), x[:5])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"eps": None}, "eps"),
        ({"eps": 0.1, "steps": 0}, "steps"),
        ({"eps": 0.1, "p_init": 0.0}, "p_init"),
        ({"eps": 0.1, "norm": "l1"}, "norm"),
    ],
)
def test_invalid_options_raise(trained_digits_model, digits, kwargs, match):
    _, (x, y) = digits
    with pytest.raises(ValueError, match=match):
        square(trained_digits_model, x[:4], y[:4], **kwargs)


def test_non_image_input_raises(digits):
    _, (x, y) = digits
    with pytest.raises(ValueError, match="images"):
        square(lambda v: v, x[:4].reshape(4, -1), y[:4], eps=0.1)
