"""The training monitors: the catastrophic-overfitting detector on hand-built models
whose robustness is known (robust, gradient-masked, plainly non-robust), its figures
against an independent FGSM, and the collapse guard on a GFA run that really collapses
and one that does not."""
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import make_mlp
from gfa_keras import NFGSM, HardenedModel, harden
from gfa_keras.training.monitors import CatastrophicOverfittingMonitor, CollapseGuard, TrainingCollapsedError

EPS = 0.1
# 200 points of class 1 at x0 = 0.9, x1 = 0.5; the models below decide on x0 > 0.5.
X_HELD = np.tile(np.array([[0.9, 0.5]], "float32"), (200, 1))
Y_HELD = np.ones(200, "int32")


def two_feature_model():
    """hidden = relu([x1 - 0.52, 0.48 - x1, x0]); logits = [0, out . hidden + bias]."""
    return keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, activation="relu", name="hidden"),
                             keras.layers.Dense(2, name="logits")], name="two_feature")


def weights(kind):
    """Weights of `two_feature_model` for a model of the given kind.

    "robust": logit gap 10 (x0 - 0.5): correct within eps = 0.1 of every held-out point.
    "masked": the same minus 1000 (relu(x1 - 0.52) + relu(0.48 - x1)): the gradient in
        x1 is zero at the held-out points, so FGSM (sign 0) does not move x1 and stays
        correct, while PGD from a random start with |x1 - 0.5| > 0.02 (80% of them)
        slides down the wall: catastrophic overfitting's signature.
    "weak": logit gap 10 (x0 - 0.85): correct on clean points, wrong after any attack.
    """
    hidden_kernel = np.array([[0.0, 0.0, 1.0], [1.0, -1.0, 0.0]], "float32")
    hidden_bias = np.array([-0.52, 0.48, 0.0], "float32")
    wall = 1000.0 if kind == "masked" else 0.0
    out_kernel = np.array([[0.0, -wall], [0.0, -wall], [0.0, 10.0]], "float32")
    out_bias = np.array([0.0, -8.5 if kind == "weak" else -5.0], "float32")
    return [hidden_kernel, hidden_bias, out_kernel, out_bias]


class Script(keras.callbacks.Callback):
    """Sets the model's weights at each epoch end, before the monitor measures."""

    def __init__(self, kinds):
        super().__init__()
        self.kinds = kinds

    def on_epoch_end(self, epoch, logs=None):
        self.model.set_weights(weights(self.kinds[epoch]))


def run_script(kinds, **monitor_options):
    model = two_feature_model()
    # Learning rate 0: the script alone decides the weights.
    model.compile(optimizer=keras.optimizers.SGD(0.0),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    monitor = CatastrophicOverfittingMonitor((X_HELD, Y_HELD), eps=EPS, **monitor_options)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(X_HELD[:8], Y_HELD[:8], epochs=len(kinds), verbose=0,
                            callbacks=[Script(kinds), monitor]).history
    messages = [str(w.message) for w in caught
                if "Catastrophic overfitting" in str(w.message) or "Robust accuracy collapsed" in str(w.message)]
    return model, monitor, history, messages


def test_masked_model_is_flagged_with_its_figures():
    _, monitor, history, messages = run_script(["robust", "masked"])
    assert history["val_fgsm_accuracy"] == [1.0, 1.0]
    assert history["val_pgd_accuracy"][0] == 1.0
    # Random starts with |x1 - 0.5| <= 0.02 keep a zero x1-gradient: about 20% survive PGD.
    assert 0.08 < history["val_pgd_accuracy"][1] < 0.35
    assert history["catastrophic_overfitting"] == [0.0, 1.0]
    assert history["robust_collapse"] == [0.0, 1.0]  # every catastrophic overfitting is a collapse
    assert monitor.detected_epoch == 1 and monitor.collapsed_epoch == 1
    assert len(messages) == 1 and messages[0].startswith("Catastrophic overfitting at epoch 2")
    assert "PGD-10" in messages[0]


def test_falling_fgsm_accuracy_is_a_robust_collapse_not_catastrophic_overfitting():
    _, monitor, history, messages = run_script(["robust", "weak", "weak"])
    assert history["val_pgd_accuracy"] == [1.0, 0.0, 0.0]
    assert history["val_fgsm_accuracy"] == [1.0, 0.0, 0.0]
    assert history["catastrophic_overfitting"] == [0.0, 0.0, 0.0]
    assert history["robust_collapse"] == [0.0, 1.0, 1.0]
    assert monitor.detected_epoch is None and monitor.collapsed_epoch == 1
    # Warned once, with the figures, and told apart from single-step overfitting.
    assert len(messages) == 1 and messages[0].startswith("Robust accuracy collapsed at epoch 2")
    assert "fell to 0.0% from 100.0% (epoch 1)" in messages[0] and "FGSM accuracy fell too" in messages[0]


def test_a_drop_of_exactly_min_drop_counts_and_no_drop_does_not():
    _, monitor, history, messages = run_script(["robust", "weak"], min_drop=1.0)
    assert history["val_pgd_accuracy"] == [1.0, 0.0]  # a drop of exactly min_drop counts ...
    assert history["robust_collapse"] == [0.0, 1.0]
    _, monitor, history, messages = run_script(["weak", "weak"])
    assert history["robust_collapse"] == [0.0, 0.0] and not messages  # ... no drop does not


def test_stop_on_a_robust_collapse_restores_the_best_weights():
    model, monitor, history, messages = run_script(["robust", "weak", "robust"], on_overfitting="stop")
    assert len(history["loss"]) == 2
    for w, expected in zip(model.get_weights(), weights("robust")):
        np.testing.assert_array_equal(w, expected)
    assert "Training stopped; the weights of epoch 1 are restored" in messages[0]


def test_stop_restores_the_best_pgd_weights_and_stops():
    model, monitor, history, messages = run_script(["robust", "masked", "robust", "robust"], on_overfitting="stop")
    assert len(history["loss"]) == 2
    for w, expected in zip(model.get_weights(), weights("robust")):
        np.testing.assert_array_equal(w, expected)
    assert "Training stopped; the weights of epoch 1 are restored" in messages[0]


def test_every_skips_epochs():
    _, monitor, history, _ = run_script(["robust", "robust", "robust", "robust"], every=2)
    assert [h["epoch"] for h in monitor.history] == [1, 3]


def test_logged_fgsm_accuracy_matches_an_independent_fgsm_during_n_fgsm_training(digits):
    (x, y), (x_test, y_test) = digits
    model = HardenedModel(make_mlp(hidden=32), perturbation=NFGSM(EPS))
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    monitor = CatastrophicOverfittingMonitor((x_test, y_test), eps=EPS, pgd_steps=5)
    history = model.fit(x[:512], y[:512], epochs=2, batch_size=64, verbose=0, callbacks=[monitor]).history

    xt = tf.constant(x_test)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        loss = keras.losses.sparse_categorical_crossentropy(y_test, model(xt), from_logits=True)
    x_fgsm = np.clip(x_test + EPS * np.sign(tape.gradient(loss, xt).numpy()), 0, 1)
    expected = np.mean(np.argmax(model.predict(x_fgsm, verbose=0), -1) == y_test)
    assert history["val_fgsm_accuracy"][-1] == pytest.approx(expected, abs=1 / len(y_test))
    assert history["val_pgd_accuracy"][-1] <= history["val_fgsm_accuracy"][-1] + 0.02
    assert np.mean(np.argmax(model.predict(x_test, verbose=0), -1) == y_test) > history["val_pgd_accuracy"][-1]


def gfa_run(beta, epochs=2, **guard_options):
    keras.utils.set_random_seed(0)
    from sklearn.datasets import load_digits
    bunch = load_digits()
    x = (bunch.images / 16.0).astype("float32")[..., None]
    y = bunch.target.astype("int32")
    model = harden(make_mlp(hidden=32), layers=3, penalty_weight=beta)
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    guard = CollapseGuard((x[1500:], y[1500:]), **guard_options)
    history = model.fit(x[:1500], y[:1500], epochs=epochs, batch_size=64, verbose=0, callbacks=[guard])
    return guard, history.history


def test_collapse_guard_stops_gfa_with_a_large_beta_and_names_it():
    # GFA DEEP at beta 1 on the digits MLP: the alignment rises while about three
    # quarters of the predictions fall in one class and the loss stays at chance.
    with pytest.raises(TrainingCollapsedError, match=r"penalty_weight=1\b.*penalty_weight=0.1\b") as info:
        gfa_run(1.0, epochs=3)
    error = info.value
    assert error.epoch == 1  # the second collapsed epoch in a row (patience 2)
    assert error.top_class_share >= 0.5
    assert error.accuracy < 0.1
    assert error.task_loss >= 0.9 * error.chance_loss
    assert error.chance_loss == pytest.approx(np.log(10), rel=0.01)  # 297 nearly balanced labels
    assert error.penalty_weights == {"gfa": 1.0}


def test_collapse_guard_leaves_a_healthy_run_alone():
    guard, history = gfa_run(0.01, epochs=2)
    assert history["val_accuracy_over_chance"][-1] > 0.5
    assert history["val_top_class_share"][-1] < 0.3
    assert history["val_task_loss_to_chance"][-1] < 0.5
    assert guard.collapsed_epochs == 0


def test_constant_prediction_is_a_collapse_with_mse_and_stop_warns():
    # A model whose bias makes class 3 win everywhere, trained at learning rate 0.
    y = np.eye(10, dtype="float32")[np.arange(100) % 10]
    x = np.random.default_rng(0).uniform(size=(100, 8, 8, 1)).astype("float32")
    base = make_mlp(hidden=8)
    base.get_layer("logits").bias.assign(np.eye(10, dtype="float32")[3] * 0.5)
    base.get_layer("logits").kernel.assign(np.zeros((8, 10), "float32"))
    model = harden(base, layers=1, penalty_weight=0.3)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    guard = CollapseGuard((x, y), on_collapse="stop")
    with pytest.warns(UserWarning, match=r"for 2 epochs up to epoch 2.*100.0% of 100 in class 3.*penalty_weight=0.3"):
        history = model.fit(x, y, epochs=4, verbose=0, callbacks=[guard]).history
    assert len(history["loss"]) == 2
    # MSE's best constant prediction on balanced one-hot labels: 0.1 * 0.9 = 0.09.
    assert guard.chance_loss == pytest.approx(0.09, rel=1e-5)
    assert history["val_top_class_share"] == [1.0, 1.0]


@pytest.mark.parametrize("call, message", [
    (lambda: CatastrophicOverfittingMonitor((X_HELD, Y_HELD), eps=0.0), r"eps must be a finite number > 0"),
    (lambda: CatastrophicOverfittingMonitor((X_HELD, Y_HELD), eps=EPS, min_drop=0.0),
     r"min_drop must be a finite number > 0 and <= 1. Received: min_drop=0.0"),
    (lambda: CatastrophicOverfittingMonitor((X_HELD, Y_HELD), eps=EPS, on_overfitting="raise"),
     r"Expected one of \['warn', 'stop'\]. Received: on_overfitting='raise'"),
    (lambda: CatastrophicOverfittingMonitor((X_HELD, Y_HELD), eps=EPS, pgd_steps=0), r"Received: pgd_steps=0"),
    (lambda: CatastrophicOverfittingMonitor(X_HELD, eps=EPS),
     r"^data must be an \(x, y\) pair of arrays\. Received: data of type ndarray$"),
    (lambda: CatastrophicOverfittingMonitor((X_HELD, Y_HELD[:3]), eps=EPS),
     r"Received: x.shape=\(200, 2\), y.shape=\(3,\)"),
    (lambda: CollapseGuard((X_HELD, Y_HELD), max_class_share=1.5), r"Received: max_class_share=1.5"),
    (lambda: CollapseGuard((X_HELD, Y_HELD), loss_tolerance=1.0), r"Received: loss_tolerance=1.0"),
    (lambda: CollapseGuard((X_HELD, Y_HELD), patience=0), r"Received: patience=0"),
    (lambda: CollapseGuard((X_HELD, -Y_HELD)), r"labels >= 0. Received: a label -1"),
])
def test_bad_arguments_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_collapse_guard_needs_one_loss():
    model = two_feature_model()
    model.compile(optimizer="sgd", loss=None)
    guard = CollapseGuard((X_HELD, Y_HELD))
    guard.set_model(model)
    with pytest.raises(ValueError, match=r"needs one loss.*Received: loss=None"):
        guard.on_train_begin()


@pytest.mark.slow
def test_tune_marks_a_collapsed_trial_failed_with_beta_in_the_message(digits, tmp_path):
    from gfa_keras.tuning.search import tune

    (x, y), (x_val, y_val) = digits
    # Betas in [1, 3] collapse the digits MLP (see above).
    with pytest.raises(RuntimeError, match=r"No trial completed.*'FAILED': 2.*collapsed.*penalty_weight="):
        tune(make_mlp, x, y, validation_data=(x_val, y_val), objective="clean_accuracy",
             penalty_weight=(1.0, 3.0), max_trials=2, epochs=3, batch_size=64, directory=tmp_path,
             optimizer=lambda: keras.optimizers.Adam(1e-2), verbose=0)


def test_collapse_guard_works_on_a_subclassed_model():
    class Constant(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3, kernel_initializer="zeros",
                                            bias_initializer=keras.initializers.Constant([0.0, 2.0, 0.0]))

        def call(self, x):
            return self.dense(x)

    model = Constant()
    model(X_HELD[:1])
    model.compile(optimizer=keras.optimizers.SGD(0.0),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    y = np.arange(200) % 3
    guard = CollapseGuard((X_HELD, y), patience=1)
    with pytest.raises(TrainingCollapsedError, match=r"100.0% of 200 in class 1.*The model has no penalty"):
        model.fit(X_HELD, y, epochs=1, verbose=0, callbacks=[guard])
    assert guard.chance_loss == pytest.approx(np.log(3), rel=1e-3)
