import numpy as np
import pytest
import tensorflow as tf

from gfa_keras.attacks import deepfool, fab, fab_t, get_attack, perturbation_norms
from gfa_keras.attacks.fab import _project_onto_hyperplane_in_box

from conftest import AFFINE_B as B
from conftest import AFFINE_W as W
from conftest import affine_model as linear_model
from conftest import affine_points as linear_points


def analytic_distance(x, y, norm, classes=(0, 1, 2)):
    """Distance to the nearest boundary f_k = f_y of the affine model (no box)."""
    f = x @ W + B
    dual = (lambda w: np.linalg.norm(w)) if norm == "l2" else (lambda w: np.abs(w).sum())
    return np.array([
        min((fi[yi] - fi[k]) / dual(W[:, k] - W[:, yi]) for k in classes if k != yi)
        for fi, yi in zip(f, y)
    ])


def test_registered_as_minimum_norm():
    for name, fn in (("fab", fab), ("fab_t", fab_t)):
        spec = get_attack(name)
        assert spec.fn is fn and spec.kind == "minimum_norm" and set(spec.norms) == {"linf", "l2"}


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_projection_solves_the_box_constrained_problem(norm):
    rng = np.random.default_rng(1)
    points = rng.uniform(0, 1, (50, 6)).astype("float32")
    w = rng.normal(size=(50, 6)).astype("float32")
    required = rng.normal(size=50).astype("float32")
    d = _project_onto_hyperplane_in_box(tf.constant(points), tf.constant(w), tf.constant(required),
                                        norm, 0.0, 1.0).numpy()
    # Independent answer: bisection on the multiplier of d_i = s_i min(lam a_i, room_i).
    signed_w = w * np.sign(required)[:, None]
    room = np.where(signed_w > 0, 1 - points, points)
    scale = np.ones_like(w) if norm == "linf" else np.abs(w)
    low, high = np.zeros(50), np.full(50, 1e4)
    for _ in range(100):
        mid = (low + high) / 2
        short = (np.abs(w) * np.minimum(mid[:, None] * scale, room)).sum(1) < np.abs(required)
        low, high = np.where(short, mid, low), np.where(short, high, mid)
    expected = np.sign(signed_w) * np.minimum(high[:, None] * scale, room)
    np.testing.assert_allclose(d, expected, atol=1e-5)
    reachable = (np.abs(w) * room).sum(1) >= np.abs(required)
    assert 0 < reachable.sum() < 50
    np.testing.assert_allclose((w * d).sum(1)[reachable], required[reachable], atol=1e-5)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_linear_model_gives_near_analytic_minimal_perturbation(norm):
    x, y = linear_points()
    x_adv = fab(linear_model(), x, y, norm=norm, clip_min=-10.0, clip_max=10.0)
    measured = perturbation_norms(x, x_adv, norm).numpy()
    exact = analytic_distance(x, y, norm)
    assert np.all(measured >= exact * (1 - 1e-4))
    assert np.all(measured <= exact * 1.01)
    assert np.all(np.argmax(x_adv.numpy() @ W + B, axis=1) != y)


def test_explicit_targets_are_hit_at_the_targets_boundary():
    x, y = linear_points()
    targets = (y + 1) % 3
    x_adv = fab(linear_model(), x, y, norm="l2", targets=targets, clip_min=-10.0, clip_max=10.0).numpy()
    logits = x_adv @ W + B
    np.testing.assert_array_equal(np.argmax(logits, axis=1), targets)
    # Minimal distance to the region where the target wins is at least the
    # distance to its own pairwise boundary with y.
    pairwise = np.array([analytic_distance(x[i:i + 1], y[i:i + 1], "l2", (y[i], t))[0]
                         for i, t in enumerate(targets)])
    assert np.all(np.linalg.norm(x_adv - x, axis=1) >= pairwise * (1 - 1e-4))


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_fab_t_fools_trained_model_with_norms_no_larger_than_deepfool(trained_digits_model, digits, norm):
    _, (x, y) = digits
    x, y = x[:100], y[:100]
    correct = np.argmax(trained_digits_model.predict(x, verbose=0), axis=1) == y
    x_adv = fab_t(trained_digits_model, x, y, norm=norm, steps=50, num_target_classes=3)
    fooled = np.argmax(trained_digits_model.predict(x_adv, verbose=0), axis=1) != y
    assert fooled[correct].mean() >= 0.95
    assert float(tf.reduce_min(x_adv)) >= 0.0 and float(tf.reduce_max(x_adv)) <= 1.0
    fab_norms = perturbation_norms(x, x_adv, norm).numpy()[correct & fooled]
    deepfool_norms = perturbation_norms(x, deepfool(trained_digits_model, x, y, norm=norm), norm).numpy()
    assert np.median(fab_norms) <= np.median(deepfool_norms[correct & fooled])
    np.testing.assert_array_equal(x_adv.numpy()[~correct], x[~correct])


def test_eps_bounds_results_and_zero_eps_returns_x(trained_digits_model, digits):
    _, (x, y) = digits
    x, y = x[:40], y[:40]
    eps = 0.08
    x_adv = fab_t(trained_digits_model, x, y, eps=eps, norm="linf", steps=30, restarts=2, num_target_classes=2)
    linf = perturbation_norms(x, x_adv, "linf").numpy()
    assert np.all(linf <= eps + 1e-6) and float(tf.reduce_min(x_adv)) >= 0.0
    changed = linf > 0
    fooled = np.argmax(trained_digits_model.predict(x_adv, verbose=0), axis=1) != y
    assert 0 < changed.sum() < len(x)
    assert np.all(fooled[changed])
    np.testing.assert_array_equal(fab(trained_digits_model, x, y, eps=0.0).numpy(), x)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"steps": 0}, r"steps must be a positive integer\. Received: steps=0"),
        ({"restarts": 0}, r"restarts must be a positive integer\. Received: restarts=0"),
        ({"alpha_max": 1.5}, r"alpha_max must be a finite number >= 0 and <= 1\. Received: alpha_max=1\.5"),
        ({"eta": 0.5}, r"eta must be a finite number >= 1\. Received: eta=0\.5"),
        ({"beta": 0.0}, r"beta must be a finite number > 0 and <= 1\. Received: beta=0\.0"),
        ({"norm": "l1"}, r"Unknown norm\. Expected one of \['linf', 'l2'\]\. Received: norm='l1'"),
        ({"targets": np.full(5, 1, "int32")},
         r"targets must be integer class labels of the shape of y\. "
         r"Received: targets\.dtype=int32, targets\.shape=\(5,\), y\.shape=\(6,\)"),
        ({"targets": np.full(6, 3, "int32")}, r"targets must lie in \[0, 2\]\. Received: \[3, 3, 3, 3, 3, 3\]"),
    ],
)
def test_invalid_options_raise(kwargs, message):
    x, y = linear_points()
    with pytest.raises(ValueError, match=message):
        fab(linear_model(), x, y, clip_min=-10.0, clip_max=10.0, **kwargs)


def test_target_equal_to_label_raises():
    x, y = linear_points()
    with pytest.raises(ValueError, match="differ from the true label"):
        fab(linear_model(), x, y, targets=y, clip_min=-10.0, clip_max=10.0)


def test_fab_t_rejects_bad_num_target_classes():
    x, y = linear_points()
    with pytest.raises(ValueError, match="num_target_classes"):
        fab_t(linear_model(), x, y, clip_min=-10.0, clip_max=10.0, num_target_classes=0)
