"""SPSA: finds the Linf optimum of a linear model from scores alone, fools the
trained digits MLP, is reproducible from its seed, and stays in the ball."""

import numpy as np
import pytest
from linear_attack_cases import BAD_INPUT_IDS, BAD_INPUTS, EPS, X, Y, accuracy, call_with, linear_model

from gfa_keras.attacks import ATTACKS, perturbation_norms, spsa

# Equal-magnitude weight differences keep the finite-difference estimate's sign reliable.
KERNEL = np.array([[1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, 1.0]], dtype="float32")


def test_registered_as_black_box_linf_attack():
    spec = ATTACKS["spsa"]
    assert (spec.white_box, spec.norms, spec.kind) == (False, ("linf",), "bounded")


def test_reaches_the_lowest_margin_corner_of_a_linear_model():
    # The margin z_0 - z_1 is linear, so its minimum over the Linf ball is the
    # corner x - eps * sign(w_0 - w_1); the bias keeps class 0 winning there.
    model = linear_model(KERNEL)
    x_adv = spsa(model, X, Y, eps=EPS, steps=40, num_samples=32)
    np.testing.assert_allclose(x_adv.numpy(), X - EPS * np.sign(KERNEL[:, 0] - KERNEL[:, 1]), atol=1e-6)


def test_fools_an_undefended_model(trained_digits_model, digits):
    _, (x, y) = digits
    x, y = x[:40], y[:40]
    x_adv = spsa(trained_digits_model, x, y, eps=0.2, steps=30, num_samples=32)
    assert accuracy(trained_digits_model, x_adv, y) <= accuracy(trained_digits_model, x, y) - 0.5
    assert float(np.max(perturbation_norms(x, x_adv))) <= 0.2 + 1e-6
    assert float(np.min(x_adv)) >= 0.0 and float(np.max(x_adv)) <= 1.0


def test_seed_makes_it_reproducible(trained_digits_model, digits):
    _, (x, y) = digits
    x, y = x[:20], y[:20]
    options = dict(eps=0.05, steps=3, num_samples=8)
    first = spsa(trained_digits_model, x, y, seed=1, **options).numpy()
    again = spsa(trained_digits_model, x, y, seed=1, **options).numpy()
    other = spsa(trained_digits_model, x, y, seed=2, **options).numpy()
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-4


def test_batches_of_one_and_of_varying_size(trained_digits_model, digits):
    # Loop variables must not pin the batch size: a batch of one once broke the trace.
    _, (x, y) = digits
    for n in (1, 3, 2):
        x_adv = spsa(trained_digits_model, x[:n], y[:n], eps=0.1, steps=2, num_samples=4)
        assert x_adv.shape == x[:n].shape
        assert float(np.max(perturbation_norms(x[:n], x_adv))) <= 0.1 + 1e-6


def test_eps_zero_returns_x_exactly():
    np.testing.assert_array_equal(spsa(linear_model(), X, Y, eps=0.0).numpy(), X)


@pytest.mark.parametrize("override,message", BAD_INPUTS, ids=BAD_INPUT_IDS)
def test_bad_inputs_raise_value_error(override, message):
    with pytest.raises(ValueError, match=message):
        call_with(spsa, linear_model(), override)


@pytest.mark.parametrize(
    "option,message",
    [
        (dict(norm="l2"), "only the Linf threat model"),
        (dict(steps=0), "steps must be a positive integer"),
        (dict(num_samples=0), "num_samples must be a positive integer"),
        (dict(perturbation_size=0.0),
         r"perturbation_size must be a finite number > 0\. Received: perturbation_size=0\.0"),
        (dict(learning_rate=0.0), r"learning_rate must be a finite number > 0\. Received: learning_rate=0\.0"),
    ],
)
def test_bad_options_raise_value_error(option, message):
    with pytest.raises(ValueError, match=message):
        spsa(linear_model(), X, Y, eps=EPS, **option)
