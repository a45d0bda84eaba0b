import numpy as np
import pytest
import tensorflow as tf

from gfa_keras.attacks import deepfool, ead, get_attack, perturbation_norms

from conftest import AFFINE_B as B
from conftest import AFFINE_W as W
from conftest import affine_model as linear_model
from conftest import affine_points as linear_points

BOX = dict(clip_min=-10.0, clip_max=10.0)


def analytic_distance(x, y, dual_order):
    """Minimal distance to a wrong class of the affine model: min_k gap_k / ||w_k - w_y||_dual."""
    f = x @ W + B
    return np.array([
        min((fi[yi] - fi[k]) / np.linalg.norm(W[:, k] - W[:, yi], dual_order) for k in range(3) if k != yi)
        for fi, yi in zip(f, y)
    ])


def test_registered_as_minimum_norm_l2_attack():
    spec = get_attack("ead")
    assert spec.fn is ead and spec.kind == "minimum_norm" and spec.norms == ("l2",)


def test_without_l1_term_it_finds_the_minimal_l2_perturbation():
    x, y = linear_points()
    x_adv = ead(linear_model(), x, y, beta=0.0, **BOX)
    ratio = perturbation_norms(x, x_adv, "l2").numpy() / analytic_distance(x, y, 2)
    assert np.all(ratio >= 1 - 1e-4) and np.all(ratio <= 1.01)


def test_l1_rule_finds_a_near_minimal_sparse_perturbation():
    x, y = linear_points()
    x_adv = ead(linear_model(), x, y, beta=0.05, decision_rule="L1", **BOX).numpy()
    # The minimal L1 step moves the single coordinate with the largest |w_k - w_y|.
    ratio = np.abs(x_adv - x).sum(1) / analytic_distance(x, y, np.inf)
    assert np.all(ratio >= 1 - 1e-4) and np.all(ratio <= 1.03)
    assert np.all(np.argmax(x_adv @ W + B, axis=1) != y)


def test_l1_norm_helper_matches_numpy():
    x, y = linear_points()
    x_adv = ead(linear_model(), x, y, **BOX)
    np.testing.assert_allclose(perturbation_norms(x, x_adv, "l1").numpy(),
                               np.abs(x_adv.numpy() - x).sum(1), rtol=1e-6)


def test_fools_trained_model_with_smaller_l1_than_deepfool(trained_digits_model, digits):
    _, (x, y) = digits
    x, y = x[:100], y[:100]
    correct = np.argmax(trained_digits_model.predict(x, verbose=0), axis=1) == y
    x_adv = ead(trained_digits_model, x, y, steps=50, binary_search_steps=5)
    fooled = np.argmax(trained_digits_model.predict(x_adv, verbose=0), axis=1) != y
    assert fooled[correct].mean() >= 0.95
    assert float(tf.reduce_min(x_adv)) >= 0.0 and float(tf.reduce_max(x_adv)) <= 1.0
    x_deepfool = deepfool(trained_digits_model, x, y, norm="l2")
    both = correct & fooled
    for norm, factor in (("l1", 1.0), ("l2", 1.1)):
        ours = np.median(perturbation_norms(x, x_adv, norm).numpy()[both])
        theirs = np.median(perturbation_norms(x, x_deepfool, norm).numpy()[both])
        assert ours <= factor * theirs, (norm, ours, theirs)
    np.testing.assert_array_equal(x_adv.numpy()[~correct], x[~correct])


def test_explicit_targets_are_hit():
    x, y = linear_points()
    targets = (y + 1) % 3
    x_adv = ead(linear_model(), x, y, targets=targets, confidence=0.5, **BOX).numpy()
    logits = x_adv @ W + B
    np.testing.assert_array_equal(np.argmax(logits, axis=1), targets)
    rivals = np.where(np.eye(3, dtype=bool)[targets], -np.inf, logits).max(1)
    assert np.all(logits[np.arange(6), targets] - rivals >= 0.5 - 1e-4)


def test_eps_bounds_results_and_zero_eps_returns_x():
    x, y = linear_points(n=10)
    distances = analytic_distance(x, y, 2)
    eps = float(np.median(distances))
    x_adv = ead(linear_model(), x, y, eps=eps, beta=0.0, **BOX).numpy()
    l2 = np.linalg.norm(x_adv - x, axis=1)
    assert np.all(l2 <= eps + 1e-6)
    np.testing.assert_array_equal(l2 > 0, distances * 1.01 < eps)
    np.testing.assert_array_equal(ead(linear_model(), x, y, eps=0.0, **BOX).numpy(), x)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"steps": 0}, r"steps must be a positive integer\. Received: steps=0"),
        ({"binary_search_steps": 0},
         r"binary_search_steps must be a positive integer\. Received: binary_search_steps=0"),
        ({"beta": -1.0}, r"beta must be a finite number >= 0\. Received: beta=-1\.0"),
        ({"initial_const": 0.0}, r"initial_const must be a finite number > 0\. Received: initial_const=0\.0"),
        ({"confidence": -1.0}, r"confidence must be a finite number >= 0\. Received: confidence=-1\.0"),
        ({"learning_rate": 0.0}, r"learning_rate must be a finite number > 0\. Received: learning_rate=0\.0"),
        ({"decision_rule": "L2"},
         r"Unknown decision_rule\. Expected one of \['EN', 'L1'\]\. Received: decision_rule='L2'"),
        ({"targets": np.full(6, 7, "int32")}, r"targets must lie in \[0, 2\]\. Received: \[7, 7, 7, 7, 7, 7\]"),
    ],
)
def test_invalid_options_raise(kwargs, message):
    x, y = linear_points()
    with pytest.raises(ValueError, match=message):
        ead(linear_model(), x, y, **BOX, **kwargs)
