import numpy as np
import pytest
import tensorflow as tf

from gfa_keras.attacks import ATTACKS, deepfool, get_attack, perturbation_norms

from conftest import AFFINE_B as B
from conftest import AFFINE_W as W
from conftest import affine_model as linear_model
from conftest import affine_points as linear_points

BOX = (-10.0, 10.0)


def analytic_minimal(x, y, norm):
    """Distance to the nearest decision boundary of the affine model and its step."""
    f = x @ W + B
    dists, steps = [], []
    for xi, fi, yi in zip(x, f, y):
        best = (np.inf, None)
        for k in range(3):
            if k == yi:
                continue
            w, gap = W[:, k] - W[:, yi], fi[yi] - fi[k]
            dist = gap / (np.linalg.norm(w) if norm == "l2" else np.abs(w).sum())
            direction = w / np.linalg.norm(w) if norm == "l2" else np.sign(w)
            best = min(best, (dist, dist * direction), key=lambda t: t[0])
        dists.append(best[0])
        steps.append(best[1])
    return np.array(dists), np.array(steps)


def test_registered_as_minimum_norm():
    spec = get_attack("deepfool")
    assert spec.fn is deepfool and spec.kind == "minimum_norm"
    assert set(spec.norms) == {"linf", "l2"} and "deepfool" in ATTACKS


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_linear_model_gives_analytic_minimal_perturbation(norm):
    x, y = linear_points()
    x_adv = deepfool(linear_model(), x, y, norm=norm, clip_min=BOX[0], clip_max=BOX[1]).numpy()
    dists, steps = analytic_minimal(x, y, norm)
    # One step lands on the nearest hyperplane (plus 1e-4 in logit units), times (1 + overshoot).
    np.testing.assert_allclose(x_adv - x, 1.02 * steps, rtol=1e-3, atol=1e-3)
    measured = perturbation_norms(x, x_adv, norm).numpy()
    np.testing.assert_allclose(measured, 1.02 * dists, rtol=1e-3, atol=1e-3)
    assert np.all(np.argmax(x_adv @ W + B, axis=1) != y)


def test_misclassified_points_and_eps_zero_return_x():
    x, y = linear_points()
    wrong = (y + 1) % 3
    np.testing.assert_array_equal(deepfool(linear_model(), x, wrong, clip_min=-10, clip_max=10).numpy(), x)
    np.testing.assert_array_equal(deepfool(linear_model(), x, y, eps=0.0, clip_min=-10, clip_max=10).numpy(), x)


def test_eps_keeps_only_perturbations_within_eps():
    x, y = linear_points(n=8)
    dists, _ = analytic_minimal(x, y, "l2")
    eps = float(np.median(1.02 * dists))
    x_adv = deepfool(linear_model(), x, y, eps=eps, norm="l2", clip_min=-10, clip_max=10).numpy()
    changed = np.any(x_adv != x, axis=1)
    np.testing.assert_array_equal(changed, 1.02 * dists <= eps * (1 - 1e-3))
    assert np.all(np.linalg.norm(x_adv - x, axis=1) <= eps + 1e-6)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_unbounded_deepfool_fools_trained_model_everywhere(trained_digits_model, digits, norm):
    _, (x, y) = digits
    x, y = x[:100], y[:100]
    x_adv = deepfool(trained_digits_model, x, y, norm=norm)
    pred = np.argmax(trained_digits_model.predict(x_adv, verbose=0), axis=1)
    clean = np.argmax(trained_digits_model.predict(x, verbose=0), axis=1)
    assert np.mean(pred != y) == 1.0
    assert float(tf.reduce_min(x_adv)) >= 0.0 and float(tf.reduce_max(x_adv)) <= 1.0
    # Already-misclassified points are not moved.
    np.testing.assert_array_equal(x_adv.numpy()[clean != y], x[clean != y])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"steps": 0}, r"steps must be a positive integer\. Received: steps=0"),
        ({"overshoot": -0.1}, r"overshoot must be a finite number >= 0\. Received: overshoot=-0\.1"),
        ({"num_candidate_classes": 1},
         r"num_candidate_classes must be an integer >= 2\. Received: num_candidate_classes=1"),
        ({"norm": "l1"}, r"Unknown norm\. Expected one of \['linf', 'l2'\]\. Received: norm='l1'"),
        ({"eps": -1.0}, r"eps must be a finite number >= 0\. Received: eps=-1\.0"),
    ],
)
def test_invalid_options_raise(kwargs, message):
    x, y = linear_points()
    with pytest.raises(ValueError, match=message):
        deepfool(linear_model(), x, y, clip_min=-10, clip_max=10, **kwargs)


def test_label_out_of_range_raises():
    x, y = linear_points()
    with pytest.raises(ValueError, match="num_classes"):
        deepfool(linear_model(), x, np.full_like(y, 3), clip_min=-10, clip_max=10)


def test_compiled_attack_is_cached_per_model_without_keeping_it_alive():
    import gc
    import weakref

    from gfa_keras.attacks import _common

    model = linear_model()
    x, y = linear_points()
    deepfool(model, x, y, norm="l2", clip_min=-10, clip_max=10)
    run = next(iter(_common._COMPILED[model].values()))
    deepfool(model, x[:3], y[:3], norm="l2", clip_min=-10, clip_max=10)
    assert list(_common._COMPILED[model].values()) == [run]  # same settings, same compiled function
    alive = weakref.ref(model)
    del model, run
    gc.collect()
    assert alive() is None
