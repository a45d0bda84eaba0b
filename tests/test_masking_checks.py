"""Tests for the gradient-masking checks: each fires on a model or numbers built to trigger it
and stays quiet on the honest `trained_digits_model`."""
import keras
import pytest
import tensorflow as tf

from gfa_keras.evaluation import masking_checks as mc
from gfa_keras.attacks import AttackSpec
from gfa_keras.evaluation.cascade import evaluate_robustness

N_POINTS = 100


@pytest.fixture
def data(digits):
    _, (x, y) = digits
    return x[:N_POINTS], y[:N_POINTS]


def wrap(model, before=None, after=None):
    """`model` with a Lambda layer before and/or after it."""
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Lambda(before)(inputs) if before else inputs
    h = model(h)
    return keras.Model(inputs, keras.layers.Lambda(after)(h) if after else h)


def gradient_sign(model, x, y, *, eps, norm="linf", clip_min=0.0, clip_max=1.0, seed=0, steps=10):
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=model(x))
    return tf.clip_by_value(x + eps * tf.sign(tape.gradient(loss, x)), clip_min, clip_max)


def identity(model, x, y, *, eps, **kwargs):
    return x


def flags_by_check(report):
    return {f["check"]: f for f in report.flags}


# Checks on numbers.

def test_large_eps_is_half_the_box_or_the_l2_distance_to_its_centre():
    assert mc.large_eps("linf", (8, 8, 1)) == 0.5
    assert mc.large_eps("l2", (8, 8, 1)) == pytest.approx(0.5 * 8)
    assert mc.large_eps("linf", (3,), clip_min=-1.0, clip_max=1.0) == 1.0


def test_accuracy_rising_with_eps_fails():
    flag = mc.check_accuracy_decreases_with_eps([0.1, 0.2, 0.3], [0.5, 0.4, 0.45])
    assert flag["status"] == "fail" and "40.00% at eps=0.2 to 45.00% at eps=0.3" in flag["reason"]
    assert mc.check_accuracy_decreases_with_eps([0.1, 0.2], [0.5, 0.5])["status"] == "ok"
    assert mc.check_accuracy_decreases_with_eps([0.1, 0.2, 0.3], [0.5, 0.4, 0.45], tolerance=0.1)["status"] == "ok"
    with pytest.raises(ValueError, match="one accuracy per eps"):
        mc.check_accuracy_decreases_with_eps([0.1, 0.2], [0.5])


def test_accuracy_above_chance_at_large_eps_fails():
    assert mc.check_accuracy_at_large_eps(0.30, chance_accuracy=0.12, eps=0.5)["status"] == "fail"
    assert mc.check_accuracy_at_large_eps(0.15, chance_accuracy=0.12, eps=0.5)["status"] == "ok"


def test_single_step_beating_iterative_warns():
    flag = mc.check_iterative_beats_single_step([0.1, 0.2], [0.5, 0.3], [0.5, 0.2])
    assert flag["status"] == "warn" and "eps=0.2" in flag["reason"]
    assert mc.check_iterative_beats_single_step([0.1], [0.5], [0.495])["status"] == "ok"


def test_black_box_beating_white_box_warns():
    flag = mc.check_black_box_not_stronger([0.1], [0.5], [0.4], black_box="square")
    assert flag["status"] == "warn" and "square" in flag["reason"]
    assert mc.check_black_box_not_stronger([0.1], [0.5], [0.5])["status"] == "ok"
    # AutoAttack's tolerance: 0.2% of the points (check_square_sr's alpha).
    assert mc.check_black_box_not_stronger([0.1], [0.5], [0.498])["status"] == "ok"
    assert mc.check_black_box_not_stronger([0.1], [0.5], [0.497])["status"] == "warn"


def test_late_breaks_after_apgd_t_warn_above_one_percent():
    flag = mc.check_late_breaks([0.05, 0.1], [0.60, 0.40], [0.595, 0.385], attack="fab_t")
    assert flag["status"] == "warn" and "1.50%" in flag["reason"] and "eps=0.1" in flag["reason"]
    assert mc.check_late_breaks([0.1], [0.40], [0.391], attack="square")["status"] == "ok"


def test_zero_gradient_counts_sum_per_eps_and_attack_in_cascade_order():
    # Per block and stage, as a run or the shards of a merge record them; apgd_t comes first in
    # the records but second in the cascade, eps 1 before eps 0.
    counts = [(1, "apgd_t", 1, 4), (0, "apgd_t", 2, 5), (0, "apgd_ce", 0, 9), (0, "apgd_t", 3, 6),
              [1, "apgd_ce", 4, 7]]
    assert mc.sum_zero_gradients(counts, ["apgd_ce", "apgd_t"]) == [
        [0, "apgd_ce", 0, 9], [0, "apgd_t", 5, 11], [1, "apgd_ce", 4, 7], [1, "apgd_t", 1, 4]]
    assert mc.sum_zero_gradients([], ["apgd_ce"]) == []


def test_zero_gradient_and_target_class_flags():
    assert mc.check_zero_gradients("apgd_ce", 0, 50)["status"] == "ok"
    flag = mc.check_zero_gradients("apgd_t", 5, 50, eps=0.1)
    assert flag["status"] == "warn" and "5 of 50 points attacked by apgd_t at eps=0.1 (10.0%)" in flag["reason"]
    assert mc.check_zero_gradients("apgd_ce", 50, 50)["status"] == "fail"
    flag = mc.check_target_classes("apgd_t", used=4, wanted=9, num_classes=5)
    assert flag["status"] == "warn" and "4 classes instead of 9" in flag["reason"]
    assert mc.check_target_classes("fab_t", used=9, wanted=9, num_classes=10)["status"] == "ok"


@pytest.mark.parametrize("tolerance", [-0.01, 1.5, float("nan")])
def test_a_tolerance_outside_zero_one_is_an_error(tolerance):
    for check in (lambda: mc.check_black_box_not_stronger([0.1], [0.5], [0.4], tolerance=tolerance),
                  lambda: mc.check_late_breaks([0.1], [0.5], [0.4], attack="fab_t", tolerance=tolerance),
                  lambda: mc.check_accuracy_decreases_with_eps([0.1], [0.5], tolerance=tolerance),
                  lambda: mc.check_more_iterations_change_little(0.4, 0.4, tolerance=tolerance)):
        with pytest.raises(ValueError, match=r"tolerance must be a finite number >= 0 and <= 1\. Received: tolerance="):
            check()


def test_check_selection_by_name():
    assert mc.select_checks(False) == frozenset()
    assert mc.select_checks(True) == frozenset(mc.CHECKS) - {"more_iterations_change_little"}
    assert mc.select_checks(["late_breaks"], thorough=True) == {"late_breaks", "more_iterations_change_little"}
    with pytest.raises(ValueError, match=r"Unknown check names \['late_break'\]\. Expected names from \["):
        mc.select_checks(["late_break"])
    with pytest.raises(ValueError, match="checks must be True, False or a list of check names"):
        mc.select_checks("late_breaks")


def test_more_steps_changing_accuracy_warns():
    assert mc.check_more_iterations_change_little(0.40, 0.37)["status"] == "warn"
    assert mc.check_more_iterations_change_little(0.40, 0.395)["status"] == "ok"


# Checks on models.

def test_model_checks_are_quiet_on_an_honest_model(trained_digits_model, data):
    x, y = data
    assert mc.check_input_gradients(trained_digits_model, x, y)["status"] == "ok"
    assert mc.check_outputs_are_logits(trained_digits_model, x)["status"] == "ok"
    assert mc.check_deterministic(trained_digits_model, x)["status"] == "ok"


def test_zero_gradients_fail(trained_digits_model, data):
    x, y = data
    rounded = wrap(trained_digits_model, before=lambda t: 0.0 * t + tf.stop_gradient(tf.round(t)))
    flag = mc.check_input_gradients(rounded, x, y)
    assert flag["status"] == "fail" and "All 100 points have zero" in flag["reason"]
    disconnected = wrap(trained_digits_model, before=lambda t: tf.stop_gradient(t))
    assert mc.check_input_gradients(disconnected, x, y)["status"] == "fail"


def test_some_zero_gradients_warn(trained_digits_model, data):
    x, y = data
    x = x.copy()
    x[:10] *= 0.4  # below the dead zone of the model below: no gradient there
    dead_below_half = wrap(trained_digits_model, before=lambda t: tf.nn.relu(t - 0.5) + 0.5)
    flag = mc.check_input_gradients(dead_below_half, x, y)
    assert flag["status"] == "warn" and flag["reason"].startswith("10 of 100")


def test_infinite_gradients_fail(trained_digits_model, data):
    x, y = data
    flag = mc.check_input_gradients(wrap(trained_digits_model, before=tf.sqrt), x, y)  # d sqrt / dx at 0
    assert flag["status"] == "fail" and "NaN or infinite" in flag["reason"]


def test_softmax_outputs_warn(trained_digits_model, data):
    x, _ = data
    flag = mc.check_outputs_are_logits(wrap(trained_digits_model, after=tf.nn.softmax), x)
    assert flag["status"] == "warn" and "softmax" in flag["reason"]


def test_randomized_model_fails(trained_digits_model, data):
    x, _ = data
    noisy = wrap(trained_digits_model, before=lambda t: t + tf.random.normal(tf.shape(t), stddev=0.1))
    flag = mc.check_deterministic(noisy, x)
    assert flag["status"] == "fail" and "randomized" in flag["reason"]


# The checks as run by evaluate_robustness.

def test_zero_input_gradients_per_point(trained_digits_model, data):
    x, y = data
    assert not mc.zero_input_gradients(trained_digits_model, x, y, "ce").any()
    assert not mc.zero_input_gradients(trained_digits_model, x, y, "dlr_targeted").any()
    rounded = wrap(trained_digits_model, before=lambda t: 0.0 * t + tf.stop_gradient(tf.round(t * 4) / 4))
    assert mc.zero_input_gradients(rounded, x, y, "dlr_targeted").all()
    # Saturated logits: the cross-entropy's gradient underflows to exactly zero on confident points,
    # the scale-free DLR loss keeps its gradient.
    saturated = wrap(trained_digits_model, after=lambda z: 1e4 * z)
    assert mc.zero_input_gradients(saturated, x, y, "ce").mean() > 0.5
    assert not mc.zero_input_gradients(saturated, x, y, "dlr_targeted").any()


def test_evaluation_flags_are_all_ok_on_an_honest_model(trained_digits_model, data):
    report = evaluate_robustness(trained_digits_model, data, "fast", [0.05, 0.1], steps=10, batch_size=50,
                                 verbose=0)
    flags = flags_by_check(report)
    assert set(flags) == {"input_gradients", "outputs_are_logits", "deterministic",
                          "accuracy_decreases_with_eps", "iterative_beats_single_step", "accuracy_at_large_eps"}
    assert all(f["status"] == "ok" for f in report.flags), report.flags
    assert "Not checked" not in flags["iterative_beats_single_step"]["reason"]
    steady = AttackSpec("steady", gradient_sign, ("linf",))  # steps do not change it
    report = evaluate_robustness(trained_digits_model, data, [steady], 0.1, thorough=True, verbose=0)
    assert flags_by_check(report)["more_iterations_change_little"]["status"] == "ok"


def test_evaluation_flags_a_zero_gradient_model(trained_digits_model, data):
    rounded = wrap(trained_digits_model, before=lambda t: 0.0 * t + tf.stop_gradient(tf.round(t * 4) / 4))
    report = evaluate_robustness(rounded, data, [AttackSpec("grad", gradient_sign, ("linf",))], 0.1, verbose=0)
    flags = flags_by_check(report)
    assert flags["input_gradients"]["status"] == "fail"
    # The probe at eps=0.5 cannot move the points, so accuracy stays far above chance.
    assert flags["accuracy_at_large_eps"]["status"] == "fail"
    assert "eps=0.5" in flags["accuracy_at_large_eps"]["reason"]


def test_evaluation_flags_accuracy_rising_with_eps(trained_digits_model, data):
    def only_small_eps(model, x, y, *, eps, **kwargs):
        return gradient_sign(model, x, y, eps=eps) if eps < 0.15 else x

    report = evaluate_robustness(trained_digits_model, data, [AttackSpec("quits", only_small_eps, ("linf",))],
                                 [0.1, 0.2], verbose=0)
    assert report.worst_case_accuracy[1] > report.worst_case_accuracy[0]
    assert flags_by_check(report)["accuracy_decreases_with_eps"]["status"] == "fail"


def test_evaluation_flags_weak_attacks_finding_more(trained_digits_model, data):
    lazy = AttackSpec("lazy_iterative", identity, ("linf",))
    report = evaluate_robustness(trained_digits_model, data, [lazy, "fgsm"], 0.1, verbose=0)
    assert flags_by_check(report)["iterative_beats_single_step"]["status"] == "warn"

    black_box = AttackSpec("fake_square", gradient_sign, ("linf",), white_box=False)
    report = evaluate_robustness(trained_digits_model, data, [lazy, black_box], 0.1, verbose=0)
    flag = flags_by_check(report)["black_box_not_stronger"]
    assert flag["status"] == "warn" and "fake_square" in flag["reason"] and "lazy_iterative" in flag["reason"]

    report = evaluate_robustness(trained_digits_model, data, [black_box, lazy], 0.1, verbose=0)
    flag = flags_by_check(report)["black_box_not_stronger"]
    assert flag["status"] == "ok" and flag["reason"].startswith("Not checked")


def test_thorough_flags_an_attack_that_has_not_converged(trained_digits_model, data):
    def slow(model, x, y, *, eps, steps=10, **kwargs):
        return gradient_sign(model, x, y, eps=eps * min(1.0, steps / 20))

    report = evaluate_robustness(trained_digits_model, data, [AttackSpec("slow", slow, ("linf",))], 0.1,
                                 thorough=True, verbose=0)
    flag = flags_by_check(report)["more_iterations_change_little"]
    assert flag["status"] == "warn" and "20 instead of 10 steps" in flag["reason"]


def test_one_eps_probes_two_larger_bounds(trained_digits_model, data):
    def only_small_eps(model, x, y, *, eps, steps=10, **kwargs):
        return gradient_sign(model, x, y, eps=eps) if eps < 0.15 else x

    report = evaluate_robustness(trained_digits_model, data, [AttackSpec("quits", only_small_eps, ("linf",))],
                                 0.1, verbose=0)
    flag = flags_by_check(report)["accuracy_decreases_with_eps"]
    assert flag["status"] == "fail" and "quits with 10 steps alone on 100 points at 0.1, 0.2, 0.4" in flag["reason"]
    steady = AttackSpec("steady", gradient_sign, ("linf",))
    flag = flags_by_check(evaluate_robustness(trained_digits_model, data, [steady], 0.1, verbose=0))[
        "accuracy_decreases_with_eps"]
    assert flag["status"] == "ok" and "at 0.1, 0.2, 0.4" in flag["reason"]


def test_only_the_named_checks_run(trained_digits_model, data):
    report = evaluate_robustness(trained_digits_model, data, [AttackSpec("grad", gradient_sign, ("linf",))], 0.1,
                                 checks=["deterministic", "accuracy_at_large_eps"], verbose=0)
    assert [f["check"] for f in report.flags] == ["deterministic", "accuracy_at_large_eps"]
    assert report.settings["checks"] == ["accuracy_at_large_eps", "deterministic"]
    with pytest.raises(ValueError, match=r"Unknown check names \['no_such_check'\]"):
        evaluate_robustness(trained_digits_model, data, "fast", 0.1, checks=["no_such_check"], verbose=0)


# The autoattack preset end to end, with the real flag logic and budgets cut for test time.
TINY_BUDGET = {"apgd_ce": 20, "apgd_t": 20, "fab_t": 20, "square": 300}


@pytest.mark.slow
def test_autoattack_preset_flags_a_quantised_model_with_a_stopped_gradient(trained_digits_model, digits):
    _, (x, y) = digits
    rounded = wrap(trained_digits_model, before=lambda t: 0.0 * t + tf.stop_gradient(tf.round(t * 4) / 4))
    report = evaluate_robustness(rounded, (x[:150], y[:150]), "autoattack", 0.1, steps=TINY_BUDGET, verbose=0)
    fired = {f["check"]: f for f in report.flags if f["status"] != "ok"}
    # The gradient attacks are blind here (APGD's random start breaks a few points); Square, run
    # last, breaks many more.
    assert report.worst_case_accuracy[0] < report.robust_accuracy["apgd_t"][0] - 0.02
    assert {"input_gradients", "zero_gradients", "black_box_not_stronger", "late_breaks",
            "accuracy_at_large_eps"} <= set(fired)
    assert fired["zero_gradients"]["status"] == "fail" and fired["late_breaks"]["reason"].startswith("square")
    assert report.standard is False
    assert "square: 300 queries < 5000" in report.standard_reasons


def test_autoattack_preset_raises_no_flag_on_an_honest_model(trained_digits_model, digits):
    _, (x, y) = digits
    report = evaluate_robustness(trained_digits_model, (x[:150], y[:150]), "autoattack", 0.1, steps=TINY_BUDGET,
                                 verbose=0)
    assert [f for f in report.flags if f["status"] != "ok"] == []
    checks = {f["check"] for f in report.flags}
    assert {"zero_gradients", "late_breaks", "target_classes", "black_box_not_stronger",
            "accuracy_decreases_with_eps", "accuracy_at_large_eps"} <= checks
    assert report.standard is False and report.standard_reasons == [
        "apgd_ce: 20 steps < 100", "apgd_t: 20 steps < 100", "fab_t: 20 steps < 100", "square: 300 queries < 5000"]
    assert report.settings["budgets"]["apgd_t"]["num_target_classes"] == 9
