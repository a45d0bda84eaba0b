"""Tests for `evaluate_robustness`: cascade semantics, verification, resume, validation."""
import numpy as np
import pytest
import tensorflow as tf

from gfa_keras.attacks import ATTACKS, AttackSpec
from gfa_keras.evaluation.cascade import PRESETS, evaluate_robustness, norm_slack

N_POINTS = 100


@pytest.fixture
def data(digits):
    _, (x, y) = digits
    return x[:N_POINTS], y[:N_POINTS]


def sign_pattern_attack(pattern_seed):
    """Moves every example by eps along one fixed random sign pattern (per example, deterministic)."""

    def attack(model, x, y, *, eps, norm="linf", clip_min=0.0, clip_max=1.0, seed=0):
        pattern = np.sign(np.random.default_rng(pattern_seed).standard_normal(x.shape[1:])).astype("float32")
        if norm == "l2":
            pattern /= np.linalg.norm(pattern)
        return tf.clip_by_value(x + eps * pattern, clip_min, clip_max)

    return attack


def gradient_sign_attack(model, x, y, *, eps, norm="linf", clip_min=0.0, clip_max=1.0, seed=0):
    """One signed-gradient step of size eps (FGSM), written here so the tests own it."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=model(x))
    return tf.clip_by_value(x + eps * tf.sign(tape.gradient(loss, x)), clip_min, clip_max)


def spec(name, fn, **kwargs):
    return AttackSpec(name, fn, kwargs.pop("norms", ("linf", "l2")), **kwargs)


NOISE_A = spec("noise_a", sign_pattern_attack(1))
NOISE_B = spec("noise_b", sign_pattern_attack(2))
GRAD = spec("grad_sign", gradient_sign_attack)


def independent_robust_mask(model, x, y, attack, eps):
    """Robust mask of one attack alone, verified with NumPy."""
    x_adv = np.asarray(attack.fn(model, tf.constant(x), tf.constant(y), eps=eps))
    clean_ok = np.argmax(np.asarray(model(x)), axis=1) == y
    adv_ok = np.argmax(np.asarray(model(x_adv)), axis=1) == y
    within = np.abs(x_adv - x).reshape(len(x), -1).max(axis=1) <= eps + 1e-6
    in_box = ((x_adv >= 0) & (x_adv <= 1)).reshape(len(x), -1).all(axis=1)
    return clean_ok & (adv_ok | ~within | ~in_box)


def test_cascade_is_per_example_and_of_single_attacks(trained_digits_model, data):
    x, y = data
    eps = [0.1, 0.2]
    attacks = [NOISE_A, GRAD, NOISE_B]
    report = evaluate_robustness(trained_digits_model, data, attacks, eps, checks=False, batch_size=32, verbose=0)
    for i, e in enumerate(eps):
        masks = [independent_robust_mask(trained_digits_model, x, y, a, e) for a in attacks]
        np.testing.assert_array_equal(report.robust_mask(i), np.logical_and.reduce(masks))
        assert report.worst_case_accuracy[i] == pytest.approx(np.logical_and.reduce(masks).mean())
        for k, attack in enumerate(attacks):
            cumulative = np.logical_and.reduce(masks[:k + 1]).mean()
            assert report.robust_accuracy[attack.name][i] == pytest.approx(cumulative)
            assert report.worst_case_accuracy[i] <= masks[k].mean()
            single = evaluate_robustness(trained_digits_model, data, [attack], e, checks=False, verbose=0)
            assert single.worst_case_accuracy[0] == pytest.approx(masks[k].mean())
            assert report.worst_case_accuracy[i] <= single.worst_case_accuracy[0]
    # The gradient attack is genuinely strong here, so the cascade is not trivial.
    assert report.robust_accuracy["grad_sign"][0] < report.robust_accuracy["noise_a"][0]


def test_attack_accuracy_is_measured_on_the_points_handed_over(trained_digits_model, data):
    report = evaluate_robustness(trained_digits_model, data, [GRAD, NOISE_A], 0.1, checks=False, verbose=0)
    row = np.asarray(report.broken_by[0], dtype=object)
    attacked = np.sum(row != "clean")
    broken = np.sum(row == "grad_sign")
    assert report.attack_accuracy["grad_sign"][0] == pytest.approx(1 - broken / attacked)
    still = np.sum((row != "clean") & (row != "grad_sign"))
    assert report.attack_accuracy["noise_a"][0] == pytest.approx(1 - np.sum(row == "noise_a") / still)


def test_misclassified_clean_points_are_not_robust(trained_digits_model, data):
    x, y = data
    identity = spec("identity", lambda model, x, y, *, eps, **kw: x)
    report = evaluate_robustness(trained_digits_model, data, [identity], [0.0, 0.3], checks=False, verbose=0)
    correct = np.argmax(np.asarray(trained_digits_model(x)), axis=1) == y
    assert 0 < correct.mean() < 1  # the set holds misclassified points
    assert report.clean_accuracy == pytest.approx(correct.mean())
    assert report.worst_case_accuracy == pytest.approx([correct.mean()] * 2)
    for row in report.broken_by:
        np.testing.assert_array_equal([b == "clean" for b in row], ~correct)


def test_attacks_that_leave_the_ball_or_box_are_not_credited(trained_digits_model, data):
    x, y = data
    eps = 0.05
    too_far = spec("too_far", lambda model, x, y, *, eps, **kw: gradient_sign_attack(model, x, y, eps=4 * eps))
    out_of_box = spec("out_of_box", lambda model, x, y, *, eps, **kw: x - eps)  # unclipped
    for cheat in (too_far, out_of_box):
        report = evaluate_robustness(trained_digits_model, data, [cheat], eps, checks=False, verbose=0)
        assert report.worst_case_accuracy[0] == pytest.approx(report.clean_accuracy)
    # The far attack does fool the model: only the verification stops it from counting.
    x_far = too_far.fn(trained_digits_model, tf.constant(x), tf.constant(y), eps=eps)
    assert np.mean(np.argmax(np.asarray(trained_digits_model(x_far)), axis=1) == y) < report.clean_accuracy - 0.3


class FlakyAttack:
    """A gradient-sign attack that raises on its `fail_on`-th call; counts its calls."""

    def __init__(self, fail_on=None):
        self.fail_on, self.calls = fail_on, 0

    def __call__(self, model, x, y, *, eps, norm="linf", clip_min=0.0, clip_max=1.0, seed=0):
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError("interrupted")
        return gradient_sign_attack(model, x, y, eps=eps, clip_min=clip_min, clip_max=clip_max)


def comparable(report):
    data = report.to_dict()
    data["settings"].pop("date")
    return data


def test_resume_gives_the_uninterrupted_report(trained_digits_model, data, tmp_path):
    kwargs = dict(eps=[0.05, 0.1], batch_size=16, checks=False, verbose=0,
                  minimum_norm_attacks=[MIN_NORM])
    uninterrupted = evaluate_robustness(trained_digits_model, data, [NOISE_A, spec("flaky", FlakyAttack())], **kwargs)

    state = tmp_path / "state.json"
    flaky = FlakyAttack(fail_on=9)  # the 9th batch: inside the second eps
    with pytest.raises(RuntimeError, match="interrupted"):
        evaluate_robustness(trained_digits_model, data, [NOISE_A, spec("flaky", flaky)], state_path=state, **kwargs)
    assert state.exists()
    calls_before = flaky.calls
    flaky.fail_on = None
    resumed = evaluate_robustness(trained_digits_model, data, [NOISE_A, spec("flaky", flaky)], state_path=state,
                                  **kwargs)
    assert comparable(resumed) == comparable(uninterrupted)
    # Only the stages from the failed one on ran again. The flaky attack runs once per block of 16
    # points and eps (block-major) in which points are left for it.
    total_stages = sum(any(by in (None, "flaky") for by in row[start:start + 16])
                       for start in range(0, N_POINTS, 16) for row in uninterrupted.broken_by)
    assert total_stages > 9
    assert flaky.calls - calls_before == total_stages - (9 - 1)
    # A finished state returns the same report without attacking again.
    calls = flaky.calls
    again = evaluate_robustness(trained_digits_model, data, [NOISE_A, spec("flaky", flaky)], state_path=state,
                                **kwargs)
    assert flaky.calls == calls and comparable(again) == comparable(uninterrupted)


def test_state_with_other_settings_is_refused(trained_digits_model, data, tmp_path):
    state = tmp_path / "state.json"
    evaluate_robustness(trained_digits_model, data, [NOISE_A], 0.1, state_path=state, checks=False, verbose=0)
    with pytest.raises(ValueError, match="different settings.*eps"):
        evaluate_robustness(trained_digits_model, data, [NOISE_A], 0.2, state_path=state, checks=False, verbose=0)
    x, y = data
    with pytest.raises(ValueError, match=r"Block 0 of the data \(points 0 to 49\) differs"):
        evaluate_robustness(trained_digits_model, (x[:50], y[:50]), [NOISE_A], 0.1, state_path=state,
                            checks=False, verbose=0)


def grid_minimum_norm(model, x, y, *, eps=None, norm="linf", clip_min=0.0, clip_max=1.0, seed=0):
    """The smallest of 20 gradient-sign step sizes in (0, 0.4] that fools the model, else the largest."""
    x_best = gradient_sign_attack(model, x, y, eps=0.4)
    for size in np.linspace(0.4, 0.02, 20):
        x_try = gradient_sign_attack(model, x, y, eps=float(size))
        fooled = tf.argmax(model(x_try), axis=1, output_type=tf.int32) != y
        x_best = tf.where(fooled[:, None, None, None], x_try, x_best)
    return x_best


MIN_NORM = spec("grid_min", grid_minimum_norm, kind="minimum_norm")


def test_minimum_norm_statistics(trained_digits_model, data):
    x, y = data
    report = evaluate_robustness(trained_digits_model, data, [], 0.1, minimum_norm_attacks=[MIN_NORM],
                                 checks=False, verbose=0)
    stats = report.minimum_norm["grid_min"]
    correct = np.argmax(np.asarray(trained_digits_model(x)), axis=1) == y
    x_adv = np.asarray(grid_minimum_norm(trained_digits_model, tf.constant(x), tf.constant(y)))
    fooled = np.argmax(np.asarray(trained_digits_model(x_adv)), axis=1) != y
    expected = np.where(fooled, np.abs(x_adv - x).reshape(len(x), -1).max(axis=1), np.inf)
    expected[~correct] = 0.0
    np.testing.assert_allclose(stats["norms"], expected, rtol=1e-6)
    success = correct & np.isfinite(expected)
    assert 0 < success.sum() < correct.sum()  # some successes and some failures
    assert stats["median"] == pytest.approx(np.median(expected))
    assert stats["mean"] == pytest.approx(expected[success].mean())
    assert stats["success_rate"] == pytest.approx(success.sum() / correct.sum())
    # Without bounded attacks the worst case is the clean accuracy.
    assert report.worst_case_accuracy == [pytest.approx(correct.mean())]


def test_dataset_input_matches_arrays(trained_digits_model, data):
    dataset = tf.data.Dataset.from_tensor_slices(data).batch(30)
    from_arrays = evaluate_robustness(trained_digits_model, data, [GRAD], 0.1, checks=False, verbose=0)
    from_dataset = evaluate_robustness(trained_digits_model, dataset, [GRAD], 0.1, checks=False, verbose=0)
    assert comparable(from_dataset) == comparable(from_arrays)


def test_verbose_prints_progress_and_summary_only_when_asked(trained_digits_model, data, capsys):
    evaluate_robustness(trained_digits_model, data, [NOISE_A], 0.1, checks=False, verbose=0)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    report = evaluate_robustness(trained_digits_model, data, [NOISE_A], 0.1, checks=False, verbose=1)
    captured = capsys.readouterr()
    assert report.summary() in captured.out
    assert "noise_a" in captured.err + captured.out


def test_presets_name_registered_attacks_in_autoattack_order():
    assert PRESETS["autoattack"] == ("apgd_ce", "apgd_t", "fab_t", "square") == PRESETS["standard"]
    assert set(PRESETS["fast"]) == {"fgsm", "pgd"}
    assert {"fgsm", "pgd"} <= set(ATTACKS)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(eps=-0.1), r"eps must be a finite number >= 0\. Received: eps=-0\.1"),
        (dict(eps=[0.1, float("nan")]), r"eps\[1\] must be a finite number >= 0\. Received: eps\[1\]=nan"),
        (dict(seed=0.5), r"seed must be an integer\. Received: seed=0\.5"),
        (dict(verbose=3), r"Unknown verbosity\. Expected one of \[0, 1, 2\]\. Received: verbose=3"),
        (dict(eps=[0.2, 0.1]), "strictly increasing"),
        (dict(eps=[]), "non-empty"),
        (dict(clip_min=1.0, clip_max=0.0), "clip_min must be smaller"),
        (dict(attacks=["no_such_attack"]), r"Unknown attack names \['no_such_attack'\].*'fgsm'"),
        (dict(attacks="no_such_preset"), "Unknown attack preset.*'autoattack'"),
        (dict(norm="l1"), r"Unknown norm\. Expected one of \['linf', 'l2'\]\. Received: norm='l1'"),
        (dict(attacks=[spec("linf_only", FlakyAttack(fail_on=1), norms=("linf",))], norm="l2"),
         r"\['linf_only'\] do not support norm='l2'"),
        (dict(minimum_norm_attacks=["fgsm"]), "kind 'minimum_norm'"),
        (dict(batch_size=0), "batch_size must be a positive integer"),
        (dict(steps=0), "steps must be a positive integer"),
        (dict(steps={"must_not_run": 0}), r"steps\['must_not_run'\] must be a positive integer"),
        (dict(steps={"square": 10}), r"steps names attacks that are not run.*Received: \['square'\]"),
        (dict(num_classes=5), "Labels must be < num_classes=5"),
    ],
)
def test_bad_arguments_raise_before_any_attack(trained_digits_model, data, kwargs, message):
    kwargs = {"attacks": [spec("must_not_run", FlakyAttack(fail_on=1))], "eps": 0.1, **kwargs}
    with pytest.raises(ValueError, match=message):
        evaluate_robustness(trained_digits_model, data, **{"verbose": 0, **kwargs})


@pytest.mark.parametrize(
    "make_data, message",
    [
        (lambda x, y: (x, y[:-1]), "same number of examples"),
        (lambda x, y: (x, np.where(y == 0, 10, y)), "Labels must be < num_classes=10"),
        (lambda x, y: (x, -y), "Labels must be >= 0"),
        (lambda x, y: (np.where(x > 0.5, np.nan, x), y), "NaN or infinite"),
        (lambda x, y: (x * 2.0, y), r"must lie in \[clip_min, clip_max\]"),
        (lambda x, y: (x[:0], y[:0]), "no examples"),
        (lambda x, y: [x], "an \\(x, y\\) pair"),
    ],
)
def test_bad_data_raises_before_any_attack(trained_digits_model, data, make_data, message):
    with pytest.raises(ValueError, match=message):
        evaluate_robustness(trained_digits_model, make_data(*data), [spec("must_not_run", FlakyAttack(fail_on=1))],
                            0.1, verbose=0)


def test_autoattack_preset_runs_the_registered_attacks(trained_digits_model, data):
    x, y = data
    report = evaluate_robustness(trained_digits_model, (x[:60], y[:60]), "autoattack", [0.05, 0.1],
                                 steps={"apgd_ce": 5, "apgd_t": 5, "fab_t": 5, "square": 200}, batch_size=30,
                                 verbose=0)
    assert report.attacks == list(PRESETS["autoattack"])
    for i in range(2):
        curve = [report.clean_accuracy] + [report.robust_accuracy[a][i] for a in report.attacks]
        assert all(b <= a for a, b in zip(curve, curve[1:]))
        assert report.worst_case_accuracy[i] == curve[-1] < report.clean_accuracy
    assert all(f["status"] == "ok" for f in report.flags), report.flags


def test_steps_per_attack_reach_each_attack(trained_digits_model, data):
    received = {}

    def recording(name):
        def attack(model, x, y, *, eps, norm="linf", clip_min=0.0, clip_max=1.0, seed=0, steps=3):
            received.setdefault(name, set()).add(steps)
            return x
        return spec(name, attack)

    evaluate_robustness(trained_digits_model, data, [recording("a"), recording("b")], 0.1,
                        steps={"b": 7}, checks=False, verbose=0)
    assert received == {"a": {3}, "b": {7}}


def test_an_int_steps_reaches_white_box_cascade_attacks_only(trained_digits_model, data):
    received = {}

    def recording(name, **kwargs):
        def attack(model, x, y, *, eps, norm="linf", clip_min=0.0, clip_max=1.0, seed=0, steps=3):
            received.setdefault(name, set()).add(steps)
            return x
        return spec(name, attack, **kwargs)

    evaluate_robustness(trained_digits_model, data,
                        [recording("white"), recording("black", white_box=False)], 0.1,
                        minimum_norm_attacks=[recording("min_norm", kind="minimum_norm")],
                        steps=9, checks=False, verbose=0)
    assert received == {"white": {9}, "black": {3}, "min_norm": {3}}


def test_each_attack_gets_exactly_its_own_options_and_the_report_records_them(trained_digits_model, data):
    received = []

    def attack(model, x, y, *, eps, norm="linf", clip_min=0.0, clip_max=1.0, seed=0, steps=3, restarts=1,
               window=0.5):
        received.append({"seed": seed, "steps": steps, "restarts": restarts, "window": window})
        return x

    def plain(model, x, y, *, eps, norm="linf", clip_min=0.0, clip_max=1.0, seed=0):
        return x

    report = evaluate_robustness(trained_digits_model, data, [spec("options", attack), spec("plain", plain)], 0.1,
                                 restarts=2, seed=5, batch_size=60, checks=False, verbose=0)
    # Two batches: seeds 5 and 6; no num_classes (no attack takes it), restarts only where declared.
    assert received == [{"seed": 5, "steps": 3, "restarts": 2, "window": 0.5},
                        {"seed": 6, "steps": 3, "restarts": 2, "window": 0.5}]
    assert report.settings["budgets"] == {"options": {"steps": 3, "restarts": 2, "window": 0.5}, "plain": {}}


def test_steps_for_an_attack_without_a_steps_option_is_an_error(trained_digits_model, data):
    with pytest.raises(ValueError, match="steps names 'noise_a', which takes no steps option"):
        evaluate_robustness(trained_digits_model, data, [NOISE_A], 0.1, steps={"noise_a": 5}, verbose=0)


def test_the_norm_slack_is_relative_to_eps_and_the_image_size():
    # L2 eps=10 on a 32x32x3 image: float32 rounding of the norm is ~1e-5, above the old absolute 1e-6.
    assert norm_slack(10.0, "l2", 3072, 0.0, 1.0) == pytest.approx(1e-4 + 4 * np.finfo(np.float32).eps * 3072 ** 0.5)
    assert norm_slack(8 / 255, "linf", 3072, 0.0, 1.0) == pytest.approx(1e-5 * 8 / 255 + 4 * np.finfo(np.float32).eps)
    assert norm_slack(2.0, "linf", 10, 0.0, 255.0) > norm_slack(2.0, "linf", 10, 0.0, 1.0)


@pytest.mark.parametrize("overshoot, credited", [(3e-6, True), (1e-3, False)])
def test_a_perturbation_at_eps_up_to_rounding_is_credited(overshoot, credited):
    def brightness_classifier(x):
        # Class 1 when the mean pixel is above 0.5: a uniform push of L2 size 10 flips it.
        mean = tf.reduce_mean(tf.reshape(x, [tf.shape(x)[0], -1]), axis=1)
        return tf.stack([0.5 - mean, mean - 0.5], axis=1) * 100.0

    def uniform_push(model, x, y, *, eps, norm="l2", clip_min=0.0, clip_max=1.0, seed=0):
        return x + np.float32(eps * (1 + overshoot) / np.sqrt(np.prod(x.shape[1:])))

    x = np.full((4, 32, 32, 3), 0.45, "float32")
    report = evaluate_robustness(brightness_classifier, (x, np.zeros(4, "int32")), [spec("push", uniform_push)], 10.0,
                                 norm="l2", checks=False, verbose=0)
    assert report.clean_accuracy == 1.0
    assert report.worst_case_accuracy[0] == (0.0 if credited else 1.0)
