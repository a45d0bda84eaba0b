"""FGSM, PGD, BIM and MIM (cleverhans' code): analytic answers on linear models,
the eps-ball, and the ordering of attack strengths on the trained digits MLP."""

import numpy as np
import pytest
from linear_attack_cases import (
    BAD_INPUT_IDS,
    BAD_INPUTS,
    BIAS,
    EPS,
    L2_DIRECTION,
    LINF_CORNER,
    W,
    X,
    Y,
    accuracy,
    call_with,
    linear_model,
)

from gfa_keras.attacks import ATTACKS, bim, fgsm, mim, perturbation_norms, pgd


def cross_entropy_gradient(x, y, kernel=W, bias=BIAS):
    """d CE / dx of a linear softmax model, computed independently in NumPy."""
    logits = x @ kernel + bias
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    return p @ kernel.T


def test_registered_as_cleverhans_attacks():
    for name in ("fgsm", "pgd", "bim", "mim"):
        assert ATTACKS[name].source == "cleverhans"
        assert ATTACKS[name].norms == ("linf", "l2")
        assert ATTACKS[name].kind == "bounded"


def test_fgsm_linf_is_eps_times_gradient_sign_clipped():
    model = linear_model()
    x = np.array([[0.5, 0.05, 0.98, 0.5]], dtype="float32")  # two coordinates near the box edges
    y = np.array([1], dtype="int32")
    expected = np.clip(x + EPS * np.sign(cross_entropy_gradient(x, y)), 0.0, 1.0)
    np.testing.assert_allclose(fgsm(model, x, y, eps=EPS).numpy(), expected, atol=1e-6)


def test_fgsm_l2_is_eps_times_normalized_gradient():
    model = linear_model()
    g = cross_entropy_gradient(X, Y)
    expected = X + EPS * g / np.linalg.norm(g, axis=1, keepdims=True)
    np.testing.assert_allclose(fgsm(model, X, Y, eps=EPS, norm="l2").numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("attack", [pgd, bim, mim])
def test_iterative_linf_reaches_the_corner(attack):
    # Cross-entropy of a binary linear model grows with (w_1 - w_0) . x, so the
    # Linf optimum is the corner x + eps * sign(w_1 - w_0).
    x_adv = attack(linear_model(), X, Y, eps=EPS, steps=10)
    np.testing.assert_allclose(x_adv.numpy(), LINF_CORNER, atol=1e-6)


def test_bim_l2_reaches_the_optimum_along_the_weight_difference():
    x_adv = bim(linear_model(), X, Y, eps=EPS, norm="l2", steps=10)
    np.testing.assert_allclose(x_adv.numpy(), X + EPS * L2_DIRECTION, atol=1e-5)


def test_pgd_l2_ends_on_the_sphere_along_the_weight_difference():
    # From a random start the perpendicular part shrinks at each projection,
    # by a factor of about 1/sqrt(2) with steps as large as eps.
    delta = pgd(linear_model(), X, Y, eps=EPS, norm="l2", steps=20, step_size=EPS).numpy() - X
    np.testing.assert_allclose(np.linalg.norm(delta, axis=1), EPS, rtol=1e-4)
    assert np.all(delta @ L2_DIRECTION / EPS > 0.999)


@pytest.mark.parametrize("attack", [fgsm, pgd, bim, mim])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_eps_zero_returns_x_exactly(attack, norm):
    np.testing.assert_array_equal(attack(linear_model(), X, Y, eps=0.0, norm=norm).numpy(), X)


@pytest.mark.parametrize("attack", [fgsm, pgd, bim, mim])
@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.8)])
def test_stays_in_the_ball_and_the_box(attack, norm, eps, trained_digits_model, digits):
    _, (x, y) = digits
    x, y = x[:40], y[:40]
    x_adv = attack(trained_digits_model, x, y, eps=eps, norm=norm, steps=5)
    assert x_adv.shape == x.shape and x_adv.dtype == "float32"
    assert float(np.max(perturbation_norms(x, x_adv, norm))) <= eps + 1e-5
    assert float(np.min(x_adv)) >= 0.0 and float(np.max(x_adv)) <= 1.0


def test_custom_box_is_respected():
    model = linear_model()
    x = 2.0 * X - 1.0  # the box [-1, 1]
    x_adv = pgd(model, x, Y, eps=0.5, steps=5, clip_min=-1.0, clip_max=1.0).numpy()
    assert x_adv.min() >= -1.0 and x_adv.max() <= 1.0
    assert float(np.max(perturbation_norms(x, x_adv))) <= 0.5 + 1e-6


def test_iterative_attacks_beat_fgsm_and_large_eps_breaks_the_model(trained_digits_model, digits):
    _, (x, y) = digits
    x, y = x[:200], y[:200]
    clean = accuracy(trained_digits_model, x, y)
    after_fgsm = accuracy(trained_digits_model, fgsm(trained_digits_model, x, y, eps=0.1), y)
    after_pgd = accuracy(trained_digits_model, pgd(trained_digits_model, x, y, eps=0.1, steps=20), y)
    assert after_pgd <= after_fgsm < clean - 0.3
    after_large = accuracy(trained_digits_model, pgd(trained_digits_model, x, y, eps=0.3, steps=20), y)
    assert after_large <= 0.02


def test_restarts_keep_the_restart_that_fools():
    # One feature, z_1 - z_0 = x - 0.5 and x = 0.4: with a negligible step, PGD
    # ends where its random start in [0.2, 0.6] fell and fools with probability
    # about 1/4, so 5 restarts should fool about 1 - (3/4)^5 = 76% of 400 copies.
    model = linear_model(np.array([[0.0, 1.0]], "float32"), np.array([0.5, 0.0], "float32"))
    x, y = np.full((400, 1), 0.4, "float32"), np.zeros(400, "int32")
    one = pgd(model, x, y, eps=0.2, steps=1, step_size=1e-3)
    five = pgd(model, x, y, eps=0.2, steps=1, step_size=1e-3, restarts=5)
    assert 0.15 <= 1.0 - accuracy(model, one, y) <= 0.35
    assert 0.66 <= 1.0 - accuracy(model, five, y) <= 0.86


def test_attacks_use_the_true_labels():
    # The point is misclassified (class 0 wins but the label is 1); attacking the
    # model's own prediction would push toward class 1, the true labels away from it.
    model = linear_model()
    x, y = X[:1], np.array([1], dtype="int32")
    x_adv = fgsm(model, x, y, eps=EPS).numpy()
    np.testing.assert_allclose(x_adv, x + EPS * np.sign(W[:, 0] - W[:, 1]), atol=1e-6)


@pytest.mark.parametrize("attack", [fgsm, pgd, bim, mim])
@pytest.mark.parametrize("override,message", BAD_INPUTS, ids=BAD_INPUT_IDS)
def test_bad_inputs_raise_value_error(attack, override, message):
    with pytest.raises(ValueError, match=message):
        call_with(attack, linear_model(), override)


@pytest.mark.parametrize("attack", [fgsm, pgd, bim, mim])
def test_unknown_norm_raises_value_error(attack):
    with pytest.raises(ValueError, match=r"Unknown norm\. Expected one of \['linf', 'l2'\]\. Received: norm='l1'"):
        attack(linear_model(), X, Y, eps=EPS, norm="l1")


@pytest.mark.parametrize(
    "option, message",
    [
        (dict(steps=0), r"steps must be a positive integer\. Received: steps=0"),
        (dict(restarts=0), r"restarts must be a positive integer\. Received: restarts=0"),
        (dict(step_size=-1.0), r"step_size must be a finite number > 0\. Received: step_size=-1\.0"),
    ],
)
def test_bad_pgd_options_raise_value_error(option, message):
    with pytest.raises(ValueError, match=message):
        pgd(linear_model(), X, Y, eps=EPS, **option)


def test_bad_mim_decay_factor_raises_value_error():
    with pytest.raises(ValueError, match=r"decay_factor must be a finite number >= 0\. Received: decay_factor=-0\.5"):
        mim(linear_model(), X, Y, eps=EPS, decay_factor=-0.5)


@pytest.mark.parametrize("attack", [pgd, bim, mim])
@pytest.mark.parametrize("eps", [0.0, EPS])
def test_bad_step_size_raises_even_at_eps_zero(attack, eps):
    with pytest.raises(ValueError, match=r"step_size must be a finite number > 0\. Received: step_size="):
        attack(linear_model(), X, Y, eps=eps, step_size=0.0)
