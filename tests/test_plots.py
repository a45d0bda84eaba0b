"""Plots: the right curves and points, values taken from the data, the landscape against closed forms."""
import math

import numpy as np
import pytest
import tensorflow as tf

from gfa_keras.reports import plots
from gfa_keras.evaluation.report import RobustnessReport


def make_report(clean, worst, eps=(0.05, 0.1), norm="linf", minimum_norm=None):
    """A hand-made report: the plots must read these numbers back."""
    return RobustnessReport(
        clean_accuracy=clean, eps=list(eps), norm=norm, attacks=["pgd", "fgsm"],
        robust_accuracy={"pgd": list(worst), "fgsm": list(worst)},
        attack_accuracy={"pgd": [0.5] * len(eps), "fgsm": [1.0] * len(eps)},
        worst_case_accuracy=list(worst), broken_by=[[None] * 4 for _ in eps],
        minimum_norm=minimum_norm or {}, settings={"num_points": 4}, flags=[],
    )


def test_robust_accuracy_has_one_curve_per_model_starting_at_clean_accuracy(tmp_path):
    reports = {"plain": make_report(0.9, [0.5, 0.2]), "gfa": make_report(0.8, [0.6, 0.4]).to_dict()}
    fig = plots.plot_robust_accuracy(reports, tmp_path / "robust.png")
    lines = fig.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["plain", "gfa"]
    np.testing.assert_allclose(lines[0].get_xdata(), [0.0, 0.05, 0.1])
    np.testing.assert_allclose(lines[0].get_ydata(), [0.9, 0.5, 0.2])
    np.testing.assert_allclose(lines[1].get_ydata(), [0.8, 0.6, 0.4])
    assert (tmp_path / "robust.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_robust_accuracy_does_not_repeat_an_evaluated_eps_zero():
    fig = plots.plot_robust_accuracy(make_report(0.9, [0.9, 0.3], eps=(0.0, 0.1)))
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_xdata(), [0.0, 0.1])


def test_robust_accuracy_refuses_to_mix_norms():
    with pytest.raises(ValueError, match="share a norm"):
        plots.plot_robust_accuracy({"a": make_report(0.9, [0.5, 0.2]), "b": make_report(0.9, [0.5, 0.2], norm="l2")})


def test_alignment_has_one_curve_per_logged_alignment_metric():
    history = {"loss": [1.0, 0.5, 0.4], "alignment_dense": [0.1, 0.5, 0.9], "alignment_dense_1": [0.0, 0.2, 0.3],
               "val_alignment_dense": [0.05, 0.3, 0.6]}
    fig = plots.plot_alignment(history)
    lines = fig.axes[0].get_lines()
    curves = [line for line in lines if len(line.get_xdata()) == 3]
    assert [line.get_label() for line in curves] == ["dense (train)", "dense (validation)", "dense_1 (train)"]
    np.testing.assert_allclose(curves[0].get_xdata(), [1, 2, 3])
    np.testing.assert_allclose(curves[1].get_ydata(), [0.05, 0.3, 0.6])
    assert curves[1].get_linestyle() == "--" and curves[1].get_color() == curves[0].get_color()


def test_robust_overfitting_pairs_each_runs_curves_and_marks_its_best_held_out_epoch(tmp_path):
    runs = {"pgd": {"accuracy": [0.3, 0.6, 0.8, 0.9], "val_robust_accuracy": [0.3, 0.55, 0.5, 0.45]},
            "awp": {"accuracy": [0.3, 0.5, 0.6, 0.7], "val_robust_accuracy": [0.3, 0.5, 0.52, 0.56]}}
    fig = plots.plot_robust_overfitting(runs, tmp_path / "gap.png")
    lines = fig.axes[0].get_lines()
    assert [line.get_label() for line in lines] == [
        "pgd: training (attacked batches)", "pgd: held-out robust", "pgd: best held-out (epoch 2)",
        "awp: training (attacked batches)", "awp: held-out robust", "awp: best held-out (epoch 4)"]
    np.testing.assert_allclose(lines[0].get_ydata(), [0.3, 0.6, 0.8, 0.9])
    np.testing.assert_allclose(lines[4].get_ydata(), [0.3, 0.5, 0.52, 0.56])
    np.testing.assert_allclose([lines[2].get_xdata()[0], lines[2].get_ydata()[0]], [2, 0.55])
    np.testing.assert_allclose([lines[5].get_xdata()[0], lines[5].get_ydata()[0]], [4, 0.56])
    assert lines[1].get_linestyle() == "--" and lines[1].get_color() == lines[0].get_color() != lines[3].get_color()
    assert (tmp_path / "gap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_robust_overfitting_takes_one_history_and_custom_metric_names():
    history = {"loss": [1.0, 0.8], "acc": [0.4, 0.6], "val_pgd": [0.2, 0.3]}
    lines = plots.plot_robust_overfitting(history, train_key="acc", held_out_key="val_pgd").axes[0].get_lines()
    assert [line.get_label() for line in lines] == [
        "training (attacked batches)", "held-out robust", "best held-out (epoch 2)"]
    np.testing.assert_allclose(lines[1].get_ydata(), [0.2, 0.3])


def test_robust_overfitting_without_the_held_out_metric_says_which_metrics_it_got():
    with pytest.raises(ValueError, match=r"'model' lacks \['val_robust_accuracy'\].*\['accuracy', 'loss'\]"):
        plots.plot_robust_overfitting({"loss": [1.0], "accuracy": [0.5]})
    with pytest.raises(ValueError, match="at least one history"):
        plots.plot_robust_overfitting({})


def test_alignment_without_gfa_metrics_says_which_metrics_it_got():
    with pytest.raises(ValueError, match=r"only models trained with GFA.*\['accuracy', 'loss'\]"):
        plots.plot_alignment({"loss": [1.0], "accuracy": [0.5]})


def squared_norm_model(x, training=False):
    """Logits [||x||^2, 0]: the loss of label 1 is softplus(||x||^2), known in closed form."""
    s = tf.reduce_sum(tf.reshape(tf.square(x), (tf.shape(x)[0], -1)), axis=1)
    return tf.stack([s, tf.zeros_like(s)], axis=1)


def softplus(v):
    return np.logaddexp(0.0, v)


def test_loss_along_directions_matches_the_closed_form():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.1, 0.5, size=(5, 3, 3, 1)).astype("float32")
    y = np.ones(5, dtype="int32")
    radii = [-0.5, 0.0, 0.25, 1.0]
    curves = plots.loss_along_directions(squared_norm_model, x, y, radii)
    norms = np.linalg.norm(x.reshape(5, -1), axis=1)
    # Radial: ||x + a x/||x|| || = ||x|| + a. Tangential (t orthogonal to x, ||t|| = 1): ||x + a t||^2 = ||x||^2 + a^2.
    expected_radial = [np.mean(softplus((norms + a) ** 2)) for a in radii]
    expected_tangential = [np.mean(softplus(norms ** 2 + a ** 2)) for a in radii]
    assert curves["radii"] == radii
    np.testing.assert_allclose(curves["radial"], expected_radial, rtol=1e-4)
    np.testing.assert_allclose(curves["tangential"], expected_tangential, rtol=1e-4)


def test_loss_along_directions_default_radii_and_bad_points():
    x = np.full((2, 2, 2, 1), 0.5, dtype="float32")  # ||x|| = 1: radii from -0.5 to 0.5
    curves = plots.loss_along_directions(squared_norm_model, x, [1, 1])
    assert len(curves["radii"]) == 21 and curves["radii"][0] == pytest.approx(-0.5)
    with pytest.raises(ValueError, match=r"zero points at indices \[1\]"):
        plots.loss_along_directions(squared_norm_model, np.stack([x[0], 0 * x[0]]), [1, 1])
    with pytest.raises(ValueError, match="y.shape=\\(3,\\)"):
        plots.loss_along_directions(squared_norm_model, x, [1, 1, 1])


def test_loss_landscape_has_a_radial_and_a_tangential_curve_per_model():
    curve = {"radii": [-1.0, 0.0, 1.0], "radial": [3.0, 1.0, 2.0], "tangential": [1.5, 1.0, 1.2]}
    fig = plots.plot_loss_landscape({"plain": curve, "gfa": dict(curve, radial=[2.0, 1.0, 1.5])})
    lines = fig.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["plain: radial", "plain: tangential", "gfa: radial",
                                                    "gfa: tangential"]
    np.testing.assert_allclose(lines[2].get_ydata(), [2.0, 1.0, 1.5])
    with pytest.raises(ValueError, match="'tangential'"):
        plots.plot_loss_landscape({"plain": {"radii": [0.0], "radial": [1.0]}})


def test_minimum_norms_has_one_panel_per_attack_and_one_ecdf_per_model():
    # 0 = already misclassified (left out), inf = attack failed (never counts as broken).
    deepfool_a = {"median": 0.1, "mean": 0.15, "success_rate": 2 / 3, "norms": [0.0, 0.2, 0.1, math.inf]}
    deepfool_b = {"median": 0.3, "mean": 0.3, "success_rate": 1.0, "norms": [0.3, 0.3, 0.3, 0.3]}
    ead_a = {"median": 1.0, "mean": 1.0, "success_rate": 1.0, "norms": [1.0, 1.0, 1.0, 1.0]}
    reports = {"a": make_report(0.75, [0.5, 0.2], minimum_norm={"deepfool": deepfool_a, "ead": ead_a}),
               "b": make_report(1.0, [0.5, 0.2], minimum_norm={"deepfool": deepfool_b}).to_dict()}
    fig = plots.plot_minimum_norms(reports)
    assert [ax.get_title() for ax in fig.axes] == ["deepfool", "ead"]
    deepfool_lines = fig.axes[0].get_lines()
    assert len(deepfool_lines) == 2 and len(fig.axes[1].get_lines()) == 1
    np.testing.assert_allclose(deepfool_lines[0].get_xdata(), [0.1, 0.2])
    np.testing.assert_allclose(deepfool_lines[0].get_ydata(), [1 / 3, 2 / 3])  # 2 of 3 clean-correct points broken
    np.testing.assert_allclose(deepfool_lines[1].get_ydata(), [0.25, 0.5, 0.75, 1.0])


def test_minimum_norms_needs_statistics():
    with pytest.raises(ValueError, match="minimum_norm_attacks"):
        plots.plot_minimum_norms(make_report(0.9, [0.5, 0.2]))


TRIALS = [
    {"trial_id": "00", "status": "COMPLETED", "hyperparameters": {"penalty_weight": 0.001},
     "clean_accuracy": 0.95, "robust_accuracy": 0.20, "objective": 0.575},
    {"trial_id": "01", "status": "COMPLETED", "hyperparameters": {"penalty_weight": 0.01},
     "clean_accuracy": 0.90, "robust_accuracy": 0.40, "objective": 0.65},
    {"trial_id": "02", "status": "COMPLETED", "hyperparameters": {"penalty_weight": 0.1},
     "clean_accuracy": 0.85, "robust_accuracy": 0.30, "objective": 0.575},  # dominated by 01
    {"trial_id": "03", "status": "FAILED", "hyperparameters": {"penalty_weight": 1.0},
     "clean_accuracy": None, "robust_accuracy": None, "objective": None},
]


def test_pareto_front_keeps_the_undominated_points_by_clean_accuracy():
    points = [(t["clean_accuracy"], t["robust_accuracy"]) for t in TRIALS[:3]]
    assert plots.pareto_front_indices(points) == [1, 0]
    assert plots.pareto_front_indices([(0.5, 0.5), (0.5, 0.5)]) == [0, 1]  # ties dominate neither


def test_tuning_scatter_has_one_point_per_finished_trial_and_the_front(tmp_path):
    fig = plots.plot_tuning_trials(TRIALS, tmp_path / "tuning.png")
    ax = fig.axes[0]
    offsets = ax.collections[0].get_offsets()
    np.testing.assert_allclose(offsets, [[0.95, 0.20], [0.90, 0.40], [0.85, 0.30]])
    front = ax.get_lines()[0]
    np.testing.assert_allclose(front.get_xdata(), [0.90, 0.95])
    np.testing.assert_allclose(front.get_ydata(), [0.40, 0.20])
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "penalty_weight"  # coloured by the only numeric one
    assert "3 of 4 finished" in ax.get_title()
    assert (tmp_path / "tuning.png").stat().st_size > 0


def test_tuning_scatter_errors():
    with pytest.raises(ValueError, match=r"statuses \['FAILED'\]"):
        plots.plot_tuning_trials(TRIALS[3:])
    with pytest.raises(ValueError, match="color_by='layers'"):
        plots.plot_tuning_trials(TRIALS, color_by="layers")


def test_alignment_accepts_a_nan_epoch_stored_as_json_null():
    fig = plots.plot_alignment({"alignment_dense": [0.1, None, 0.3]})
    assert np.isnan(fig.axes[0].get_lines()[0].get_ydata()[1])
