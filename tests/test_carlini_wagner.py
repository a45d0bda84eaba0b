"""Carlini-Wagner L2: the analytic minimum distance on a linear model, full success
on the trained digits MLP with small norms, the eps bound, and failures returned as x."""

import numpy as np
import pytest
from linear_attack_cases import B10, BAD_INPUT_IDS, BAD_INPUTS, W, W10, X, Y, call_with, linear_model

from gfa_keras.attacks import ATTACKS, cw_l2, deepfool, perturbation_norms

CW_OPTIONS = dict(steps=100, binary_search_steps=6)


def test_registered_as_minimum_norm_l2_attack():
    spec = ATTACKS["cw_l2"]
    assert (spec.kind, spec.norms, spec.source) == ("minimum_norm", ("l2",), "gfa_keras")


@pytest.mark.parametrize("confidence", [0.0, 1.0])
def test_finds_the_analytic_minimum_distance_on_a_linear_model(confidence):
    # Distance from x to where z_1 beats z_0 by `confidence` for a binary linear
    # model: (margin + confidence) / ||w_0 - w_1||, a point inside the box here.
    bias = np.array([0.5, 0.0], dtype="float32")
    x, y = X[:1], Y[:1]
    margin = float(x[0] @ (W[:, 0] - W[:, 1]) + bias[0] - bias[1])
    distance = (margin + confidence) / np.linalg.norm(W[:, 0] - W[:, 1])
    model = linear_model(bias=bias)
    x_adv = cw_l2(model, x, y, steps=200, binary_search_steps=9, confidence=confidence)
    norm = float(perturbation_norms(x, x_adv, "l2")[0])
    logits = model(x_adv).numpy()[0]
    assert logits[1] - logits[0] >= confidence
    assert distance - 1e-4 <= norm <= 1.01 * distance


def test_finds_the_nearest_boundary_of_a_ten_class_linear_model():
    # The smallest L2 perturbation that changes a linear model's prediction is, when
    # it stays inside the box, the step onto the nearest boundary: min over k != y of
    # (z_y - z_k) / ||w_y - w_k||. Points in [0.3, 0.7] keep every such step inside the
    # box (checked), so this is the exact optimum. No successful point can be closer
    # (the lower bound, exact up to float32); Adam's finite steps and the bisection
    # of the constant approach it from above, within 1% on the median point.
    x = (0.3 + 0.4 * np.random.default_rng(3).uniform(size=(60, 64))).astype("float32")
    y = np.argmax(x @ W10 + B10, axis=1).astype("int32")
    z = x @ W10 + B10
    g = W10[None, :, :] - W10[:, y].T[:, :, None]  # [n, features, classes]: w_k - w_y
    size = np.linalg.norm(g, axis=1)
    distance = (z[np.arange(60), y][:, None] - z) / np.where(size > 0, size, 1.0)
    distance[np.arange(60), y] = np.inf
    nearest = np.argmin(distance, axis=1)
    optimum = distance[np.arange(60), nearest]
    step = optimum[:, None] * g[np.arange(60), :, nearest] / size[np.arange(60), nearest][:, None]
    inside = np.all((x + step >= 0) & (x + step <= 1), axis=1)
    assert inside.sum() >= 55
    model = linear_model(W10, B10)
    x_adv = cw_l2(model, x, y, steps=200, binary_search_steps=9)
    assert np.all(np.argmax(model(x_adv), axis=1) != y)
    ratio = perturbation_norms(x, x_adv, "l2").numpy()[inside] / optimum[inside]
    assert ratio.min() >= 1.0 - 1e-4
    assert np.median(ratio) <= 1.01


def test_always_succeeds_on_an_undefended_model_with_smaller_norms_than_deepfool(trained_digits_model, digits):
    # Carlini & Wagner's comparison: their optimizer finds smaller perturbations than
    # DeepFool's one-step-per-boundary walk; here on the median point.
    _, (x, y) = digits
    x, y = x[:40], y[:40]
    model = trained_digits_model
    x_adv = cw_l2(model, x, y, **CW_OPTIONS)
    assert np.all(np.argmax(model(x_adv), axis=1) != y)
    assert float(np.min(x_adv)) >= 0.0 and float(np.max(x_adv)) <= 1.0
    x_deepfool = deepfool(model, x, y, norm="l2")
    assert np.all(np.argmax(model(x_deepfool), axis=1) != y)
    assert np.median(perturbation_norms(x, x_adv, "l2")) <= np.median(perturbation_norms(x, x_deepfool, "l2"))


def test_eps_bound_keeps_only_the_small_perturbations(trained_digits_model, digits):
    _, (x, y) = digits
    x, y = x[:40], y[:40]
    unbounded = cw_l2(trained_digits_model, x, y, **CW_OPTIONS).numpy()
    norms = perturbation_norms(x, unbounded, "l2").numpy()
    # The median norm as the bound: about half the perturbations are within it, half not.
    eps = float(np.median(norms[norms > 0]))
    bounded = cw_l2(trained_digits_model, x, y, eps=eps, **CW_OPTIONS).numpy()
    within = norms <= eps
    assert 0 < within.sum() < len(x)
    np.testing.assert_array_equal(bounded[within], unbounded[within])
    np.testing.assert_array_equal(bounded[~within], x[~within])


def test_failures_return_x_unchanged(trained_digits_model, digits):
    _, (x, y) = digits
    x, y = x[:20], y[:20]
    # One step with a negligible constant cannot flip a correct prediction.
    x_adv = cw_l2(trained_digits_model, x, y, steps=1, binary_search_steps=1, initial_const=1e-6).numpy()
    correct = np.argmax(trained_digits_model(x), axis=1) == y
    assert correct.sum() > 10
    np.testing.assert_array_equal(x_adv[correct], x[correct])


def test_batches_of_one_and_of_varying_size(trained_digits_model, digits):
    # Loop variables must not pin the batch size: a batch of one once broke the trace.
    _, (x, y) = digits
    for n in (1, 3, 2):
        x_adv = cw_l2(trained_digits_model, x[:n], y[:n], steps=20, binary_search_steps=2)
        assert x_adv.shape == x[:n].shape


def test_eps_zero_returns_x_exactly():
    np.testing.assert_array_equal(cw_l2(linear_model(), X, Y, eps=0.0).numpy(), X)


@pytest.mark.parametrize("override,message", BAD_INPUTS, ids=BAD_INPUT_IDS)
def test_bad_inputs_raise_value_error(override, message):
    with pytest.raises(ValueError, match=message):
        call_with(cw_l2, linear_model(), override, norm="l2")


@pytest.mark.parametrize(
    "option,message",
    [
        (dict(norm="linf"), "Expected norm='l2'"),
        (dict(steps=0), "steps must be a positive integer"),
        (dict(binary_search_steps=0), "binary_search_steps must be a positive integer"),
        (dict(initial_const=0.0), r"initial_const must be a finite number > 0\. Received: initial_const=0\.0"),
        (dict(learning_rate=-1.0), r"learning_rate must be a finite number > 0\. Received: learning_rate=-1\.0"),
        (dict(confidence=-1.0), r"confidence must be a finite number >= 0\. Received: confidence=-1\.0"),
    ],
)
def test_bad_options_raise_value_error(option, message):
    with pytest.raises(ValueError, match=message):
        cw_l2(linear_model(), X, Y, **option)
