"""APGD-CE and APGD-T: the checkpoint schedule, analytic optima on a linear model,
targets reached, and strength on the trained digits MLP relative to PGD and FGSM."""

import numpy as np
import pytest
import tensorflow as tf
from linear_attack_cases import (
    BAD_INPUT_IDS,
    BAD_INPUTS,
    EPS,
    L2_DIRECTION,
    LINF_CORNER,
    W,
    X,
    Y,
    accuracy,
    call_with,
    linear_model,
    linf_breakable,
    linf_target_margin,
    ten_class_case,
)

from gfa_keras.attacks import ATTACKS, apgd_ce, apgd_t, fgsm, perturbation_norms, pgd
from gfa_keras.attacks.apgd import _checkpoint_schedule, _targeted_dlr


@pytest.fixture(scope="module")
def four_class_model():
    rng = np.random.default_rng(0)
    return linear_model(rng.normal(size=(4, 4)).astype("float32"), np.zeros(4, "float32"))


def test_registered_as_own_bounded_attacks():
    for name in ("apgd_ce", "apgd_t"):
        assert ATTACKS[name].source == "gfa_keras"
        assert ATTACKS[name].norms == ("linf", "l2")
        assert ATTACKS[name].white_box


def test_checkpoints_follow_the_paper():
    # p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06): with 100
    # steps the checks fall after steps 22, 41, 57, 70, 80, 87, 93 and 99.
    is_checkpoint, lengths = _checkpoint_schedule(100)
    steps = np.flatnonzero(is_checkpoint.numpy()) + 1
    np.testing.assert_array_equal(steps, [22, 41, 57, 70, 80, 87, 93, 99])
    np.testing.assert_array_equal(lengths.numpy()[steps - 1], np.diff(np.concatenate([[0], steps])))


def test_targeted_dlr_matches_numpy():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(6, 10)).astype("float32")
    y, target = rng.integers(0, 10, 6), rng.integers(0, 10, 6)
    rows = np.arange(6)
    ranked = np.sort(logits, axis=1)[:, ::-1]
    expected = -(logits[rows, y] - logits[rows, target]) / (
        ranked[:, 0] - 0.5 * (ranked[:, 2] + ranked[:, 3])
    )
    np.testing.assert_allclose(_targeted_dlr(logits, y, target).numpy(), expected, rtol=1e-5)


def test_checkpoints_for_few_steps():
    is_checkpoint, _ = _checkpoint_schedule(5)
    np.testing.assert_array_equal(np.flatnonzero(is_checkpoint.numpy()), [0, 1, 2, 3, 4])


def test_linf_returns_the_highest_loss_corner_when_nothing_fools():
    x_adv = apgd_ce(linear_model(), X, Y, eps=EPS, steps=10)
    np.testing.assert_allclose(x_adv.numpy(), LINF_CORNER, atol=1e-6)


def test_l2_returns_the_point_along_the_weight_difference():
    delta = apgd_ce(linear_model(), X, Y, eps=EPS, norm="l2", steps=20).numpy() - X
    np.testing.assert_allclose(np.linalg.norm(delta, axis=1), EPS, rtol=1e-4)
    assert np.all(delta @ L2_DIRECTION / EPS > 0.999)


@pytest.mark.parametrize("norm,tolerance", [("linf", 0.05), ("l2", 0.01)])
def test_step_halving_homes_in_on_an_interior_maximum(norm, tolerance):
    # The loss peaks at x_star inside the ball. Steps of the initial 2 * eps
    # bounce around it (about 0.33 * eps away in Linf when never halved); halving
    # at the checkpoints brings the best point close.
    x, eps = X[:1], EPS
    x_star = x + eps * np.array([0.3, -0.55, 0.1, 0.7], "float32")

    def model(inputs):  # any callable returning logits; class 0 always wins
        z1 = -10.0 * tf.reduce_sum(tf.square(inputs - x_star), axis=1) - 1.0
        return tf.stack([tf.zeros_like(z1), z1], axis=1)

    x_adv = apgd_ce(model, x, Y[:1], eps=eps, norm=norm, steps=100).numpy()
    assert np.abs(x_adv - x_star).max() < tolerance * eps


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_eps_zero_returns_x_exactly(norm, four_class_model):
    np.testing.assert_array_equal(apgd_ce(linear_model(), X, Y, eps=0.0, norm=norm).numpy(), X)
    np.testing.assert_array_equal(apgd_t(four_class_model, X, Y, eps=0.0, norm=norm).numpy(), X)


@pytest.mark.parametrize("attack,options", [(apgd_ce, {}), (apgd_t, {"num_target_classes": 2})])
@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.8)])
def test_stays_in_the_ball_and_the_box(attack, options, norm, eps, trained_digits_model, digits):
    _, (x, y) = digits
    x, y = x[:40], y[:40]
    x_adv = attack(trained_digits_model, x, y, eps=eps, norm=norm, steps=5, **options)
    assert x_adv.shape == x.shape and x_adv.dtype == "float32"
    assert float(np.max(perturbation_norms(x, x_adv, norm))) <= eps + 1e-5
    assert float(np.min(x_adv)) >= 0.0 and float(np.max(x_adv)) <= 1.0


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_batches_of_one_and_of_varying_size(norm, trained_digits_model, digits):
    _, (x, y) = digits
    for n in (1, 3, 2):
        for attack in (apgd_ce, apgd_t):
            x_adv = attack(trained_digits_model, x[:n], y[:n], eps=0.1, norm=norm, steps=3)
            assert x_adv.shape == x[:n].shape


def test_apgd_beats_pgd_beats_fgsm_on_an_undefended_model(trained_digits_model, digits):
    # Croce & Hein's claim and the iterative-beats-single-step check of Carlini et al.:
    # an ordering between attacks, with no threshold of its own.
    _, (x, y) = digits
    x, y = x[:200], y[:200]
    model = trained_digits_model
    clean = accuracy(model, x, y)
    after_fgsm = accuracy(model, fgsm(model, x, y, eps=0.1), y)
    after_pgd = accuracy(model, pgd(model, x, y, eps=0.1, steps=20), y)
    after_apgd = accuracy(model, apgd_ce(model, x, y, eps=0.1, steps=20), y)
    assert after_apgd <= after_pgd <= after_fgsm < clean


def test_apgd_ce_breaks_exactly_the_breakable_points_of_a_binary_linear_model():
    # For two classes the cross-entropy's input gradient always points along
    # w_other - w_y, so the loss is maximized in the ball and the box by the corner
    # that moves each coordinate to its bound in that direction, the same corner that
    # maximizes z_other - z_y: a point can be broken exactly when that gain beats the
    # margin (linf_breakable, in closed form). 200 random points, 24% breakable.
    rng = np.random.default_rng(1)
    x = rng.uniform(0.0, 1.0, (200, 4)).astype("float32")
    bias = np.array([0.5, 0.0], "float32")
    model = linear_model(bias=bias)
    y = np.argmax(x @ W + bias, axis=1).astype("int32")
    _, breakable = linf_breakable(x, y, 0.1, W, bias)
    fooled = np.argmax(model(apgd_ce(model, x, y, eps=0.1, steps=10)), axis=1) != y
    np.testing.assert_array_equal(fooled, breakable)


def test_apgd_t_breaks_exactly_the_breakable_points_of_a_ten_class_linear_model():
    # With ten classes the exact answer is still closed form (linf_breakable): a point
    # can be broken when some class k's best gain over y in the ball beats z_y - z_k.
    # APGD-T aims at each of the 9 other classes in turn, so it reaches that corner for
    # the right k; APGD-CE follows the softmax-weighted gradient and can miss it, but
    # can never break more than the exact set. So APGD-T is at least as strong.
    model, x, y = ten_class_case()
    _, breakable = linf_breakable(x, y, 0.14)
    assert 0.5 < breakable.mean() < 0.9
    fooled_t = np.argmax(model(apgd_t(model, x, y, eps=0.14, steps=100)), axis=1) != y
    fooled_ce = np.argmax(model(apgd_ce(model, x, y, eps=0.14, steps=100)), axis=1) != y
    np.testing.assert_array_equal(fooled_t, breakable)
    assert not np.any(fooled_ce & ~breakable)


def test_explicit_targets_are_reached_exactly_where_reachable():
    # A target t can be made the prediction in the ball exactly when the linear program
    # max_d min_{j != t} (z_t - z_j)(x + d) over the ball and the box has a positive
    # value (linf_target_margin); APGD-T with explicit targets must hit those, no others.
    model, x, y = ten_class_case()
    targets = (y + np.random.default_rng(5).integers(1, 10, len(y))) % 10
    reachable = linf_target_margin(x, y, targets, 0.2) > 0
    assert 0.3 < reachable.mean() < 0.7
    x_adv = apgd_t(model, x, y, eps=0.2, steps=100, targets=targets)
    np.testing.assert_array_equal(np.argmax(model(x_adv), axis=1) == targets, reachable)


def test_apgd_t_attacks_later_targets_only_on_points_not_yet_fooled():
    # As the reference, a point fooled by one target is not attacked again: the model
    # sees it in the clean pass and the first target's run (steps + 1 passes) only.
    rows = tf.Variable(0)

    def model(x):  # logits x0, x1, x2, 10 x3, counting the rows it is called on
        rows.assign_add(tf.shape(x)[0])
        return x * tf.constant([1.0, 1.0, 1.0, 10.0])

    # Point 0 (class 0) falls to its runner-up class 1 within eps 0.5; point 1 (class 3,
    # logit >= 5 in the ball against <= 0.5) resists all three targets.
    x = np.array([[0.5, 0.4, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]], "float32")
    y = np.array([0, 3])
    steps = 5
    x_adv = apgd_t(model, x, y, eps=0.5, steps=steps)
    np.testing.assert_array_equal(np.argmax(model(x_adv), axis=1) != y, [True, False])
    # Clean pass 2 rows, target 1 both points, targets 2 and 3 only point 1 (before the
    # change: all three targets on both points, 2 + 6 * (steps + 1)).
    assert int(rows.numpy()) - 2 == 2 + 4 * (steps + 1)


def test_same_seed_same_result_other_seed_other_start(trained_digits_model, digits):
    _, (x, y) = digits
    x, y = x[:30], y[:30]
    first = apgd_ce(trained_digits_model, x, y, eps=0.05, steps=5, seed=3).numpy()
    again = apgd_ce(trained_digits_model, x, y, eps=0.05, steps=5, seed=3).numpy()
    other = apgd_ce(trained_digits_model, x, y, eps=0.05, steps=5, seed=4).numpy()
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-3


def test_more_restarts_never_weaken(trained_digits_model, digits):
    _, (x, y) = digits
    x, y = x[:100], y[:100]
    model = trained_digits_model
    # Restart 0 is the same run in both calls, and a fooled example is never given up.
    one = np.argmax(model(apgd_ce(model, x, y, eps=0.05, steps=5)), axis=1) != y
    three = np.argmax(model(apgd_ce(model, x, y, eps=0.05, steps=5, restarts=3)), axis=1) != y
    assert np.all(three[one])


@pytest.mark.parametrize("override,message", BAD_INPUTS, ids=BAD_INPUT_IDS)
def test_bad_inputs_raise_value_error(override, message):
    with pytest.raises(ValueError, match=message):
        call_with(apgd_ce, linear_model(), override)


@pytest.mark.parametrize(
    "option,message",
    [
        (dict(targets=np.array([0, 1])), "differ from the true label"),
        (dict(targets=np.array([1, 4])), r"targets must lie in \[0, 3\]"),
        (dict(targets=np.array([1, 2, 3])), "shape of y"),
        (dict(targets=np.array([1.0, 2.0])), "integer class labels"),
        (dict(num_target_classes=4), "at most num_classes - 1 = 3"),
        (dict(num_target_classes=0), "num_target_classes must be a positive integer"),
        (dict(steps=0), "steps must be a positive integer"),
        (dict(restarts=0), "restarts must be a positive integer"),
    ],
)
def test_bad_apgd_t_options_raise_value_error(option, message, four_class_model):
    with pytest.raises(ValueError, match=message):
        apgd_t(four_class_model, X, np.array([0, 1]), eps=EPS, **option)


def test_apgd_t_needs_four_classes():
    with pytest.raises(ValueError, match="at least 4 classes"):
        apgd_t(linear_model(), X, Y, eps=EPS)
