"""RobustEarlyStopping: the best held-out epoch is the model returned and saved, patience
stops training, averaged weights are judged, and missing inputs fail before training."""
import keras
import numpy as np
import pytest

from gfa_keras import HardenedModel, harden
from gfa_keras.evaluation import RobustEarlyStopping

RNG = np.random.default_rng(8)
X = RNG.uniform(0.05, 0.95, size=(24, 2, 3)).astype("float32")
Y = RNG.integers(0, 3, size=24).astype("int32")
VAL = (X[:12], Y[:12])
EPS = 0.05


def linear_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((2, 3)), keras.layers.Flatten(), keras.layers.Dense(3, name="logits")])


def compiled(model, lr=0.5):
    model.compile(optimizer=keras.optimizers.SGD(lr), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


class Scripted(RobustEarlyStopping):
    """Robust accuracies given in advance, so that the best epoch is known; the weights
    are recorded at each epoch's end to check which epoch comes back."""

    def __init__(self, values, **kwargs):
        super().__init__(VAL, eps=EPS, **kwargs)
        self.values, self.weights_at = list(values), []

    def robust_accuracy(self, model):
        self.weights_at.append([w.numpy().copy() for w in model.base_model.weights])
        return self.values[len(self.weights_at) - 1]


def test_the_best_epoch_is_restored_logged_and_saved(tmp_path):
    model = compiled(harden(linear_model(), method="standard"))
    callback = Scripted([0.2, 0.6, 0.4, 0.6], filepath=tmp_path / "best.keras")
    history = model.fit(X, Y, batch_size=12, epochs=4, verbose=0, callbacks=[callback])
    assert history.history["val_robust_accuracy"] == [0.2, 0.6, 0.4, 0.6]
    assert callback.best_epoch == 2 and callback.best_value == 0.6  # a tie keeps the earlier epoch
    for w, expected in zip(model.base_model.weights, callback.weights_at[1]):
        np.testing.assert_array_equal(w.numpy(), expected)
    loaded = keras.models.load_model(tmp_path / "best.keras")
    np.testing.assert_allclose(loaded.predict(X, verbose=0), model.predict(X, verbose=0), atol=1e-6)


def test_patience_stops_training():
    model = compiled(harden(linear_model(), method="standard"))
    callback = Scripted([0.5, 0.4, 0.3, 0.9, 0.9], patience=2)
    history = model.fit(X, Y, batch_size=12, epochs=5, verbose=0, callbacks=[callback])
    assert len(history.history["loss"]) == 3
    assert callback.best_epoch == 1


def test_the_real_attack_value_is_what_evaluate_robustness_gives():
    from gfa_keras import evaluate_robustness

    model = compiled(harden(linear_model(), method="pgd", eps=EPS, steps=2))
    callback = RobustEarlyStopping(VAL, eps=EPS, steps=5)
    history = model.fit(X, Y, batch_size=12, epochs=2, verbose=0, callbacks=[callback])
    best = max(history.history["val_robust_accuracy"])
    report = evaluate_robustness(model, VAL, ["apgd_ce"], eps=EPS, steps=5, checks=False, verbose=0)
    assert report.worst_case_accuracy[0] == pytest.approx(best)


def test_with_weight_averaging_the_averaged_weights_are_judged_and_returned(tmp_path):
    model = compiled(HardenedModel(linear_model(), ema_momentum=0.5))

    class Judge(Scripted):
        def robust_accuracy(self, model):
            # What the attack would see: the averaged weights are in the base model.
            self.holds_averages = getattr(self, "holds_averages", []) + [model._holds_averages()]
            return super().robust_accuracy(model)

    callback = Judge([0.9, 0.1, 0.1], filepath=tmp_path / "best.keras")
    model.fit(X, Y, batch_size=12, epochs=3, verbose=0, callbacks=[callback])
    assert callback.holds_averages == [True, True, True]
    for w, expected in zip(model.base_model.weights, callback.weights_at[0]):  # epoch 1's average
        np.testing.assert_allclose(w.numpy(), expected, rtol=1e-6)
    loaded = keras.models.load_model(tmp_path / "best.keras")
    np.testing.assert_allclose(loaded.predict(X, verbose=0), model.predict(X, verbose=0), atol=1e-6)


def test_missing_validation_data_or_eps_fails_before_training():
    with pytest.raises(ValueError, match=r"needs them\. .*Received: validation_data=None"):
        RobustEarlyStopping(eps=0.1)
    with pytest.raises(ValueError, match=r"needs it\. .*Received: eps=None"):
        RobustEarlyStopping(VAL)
    with pytest.raises(ValueError, match=r"patience must be a positive integer\. Received: patience=0"):
        RobustEarlyStopping(VAL, eps=0.1, patience=0)
    with pytest.raises(ValueError, match=r"eps must be a finite number > 0"):
        RobustEarlyStopping(VAL, eps=-0.1)
