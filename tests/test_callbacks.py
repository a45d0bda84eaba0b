"""Tests for `RobustAccuracy`: the logged value equals a separate evaluation, every point counts,
later callbacks see it, the `every` schedule, and bad input."""
import warnings

import keras
import numpy as np
import pytest

from conftest import make_mlp
from gfa_keras.evaluation.callbacks import RobustAccuracy
from gfa_keras.evaluation.cascade import evaluate_robustness

N_TRAIN, N_VAL = 300, 60


class _RecordLogs(keras.callbacks.Callback):
    """Keeps a copy of each epoch's logs as this callback saw them."""

    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(dict(logs))


def _fresh_model():
    model = make_mlp()
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def test_logged_value_equals_a_separate_evaluation_and_later_callbacks_see_it(digits):
    (x, y), (x_val, y_val) = digits
    x_val, y_val = x_val[:N_VAL], y_val[:N_VAL]
    model = _fresh_model()
    record = _RecordLogs()
    callbacks = [
        RobustAccuracy((x_val, y_val), "apgd_ce", eps=0.05, steps=5),
        keras.callbacks.EarlyStopping("val_robust_accuracy", mode="max", patience=10),
        record,
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(x[:N_TRAIN], y[:N_TRAIN], epochs=2, batch_size=64, verbose=0,
                            validation_data=(x_val, y_val), callbacks=callbacks)
    assert not [w for w in caught if "val_robust_accuracy" in str(w.message)]
    logged = history.history["val_robust_accuracy"]
    assert len(logged) == 2
    assert [e["val_robust_accuracy"] for e in record.epochs] == logged
    separate = evaluate_robustness(model, (x_val, y_val), ["apgd_ce"], eps=0.05, steps=5, seed=0,
                                   checks=False, verbose=0)
    assert logged[-1] == separate.worst_case_accuracy[0]
    # The attack broke something on the trained model: the value is not just the clean accuracy.
    clean = np.mean(np.argmax(model.predict(x_val, verbose=0), axis=1) == y_val)
    assert logged[-1] < clean


def test_misclassified_points_count_as_not_robust_and_one_hot_labels_work(trained_digits_model, digits):
    _, (x_val, y_val) = digits
    clean = np.mean(np.argmax(trained_digits_model.predict(x_val, verbose=0), axis=1) == y_val)
    assert clean < 1.0  # some points are misclassified, so they must count
    tiny = RobustAccuracy((x_val, y_val), "apgd_ce", eps=1e-7, steps=2)
    assert tiny.robust_accuracy(trained_digits_model) == pytest.approx(clean)
    one_hot = RobustAccuracy((x_val, keras.utils.to_categorical(y_val, 10)), "apgd_ce", eps=0.05, steps=3,
                             num_points=50)
    labels = RobustAccuracy((x_val, y_val), "apgd_ce", eps=0.05, steps=3, num_points=50)
    assert len(labels.y) == 50
    assert one_hot.robust_accuracy(trained_digits_model) == labels.robust_accuracy(trained_digits_model)


def test_every_n_epochs_and_always_after_the_last(digits):
    (x, y), (x_val, y_val) = digits
    record = _RecordLogs()
    _fresh_model().fit(x[:100], y[:100], epochs=3, batch_size=50, verbose=0, callbacks=[
        RobustAccuracy((x_val[:20], y_val[:20]), "fgsm", eps=0.05, every=2), record])
    assert ["val_robust_accuracy" in e for e in record.epochs] == [False, True, True]


@pytest.mark.parametrize("kwargs, message", [
    ({"attack": "no_such_attack"}, "Unknown attack"),
    ({"attack": "deepfool"}, "bounded attack"),
    ({"attack": "one_pixel", "norm": "l2"}, "does not support norm"),
    ({"norm": "l1"}, "Unknown norm"),
    ({"eps": 0.0}, "eps must be"),
    ({"every": 0}, "every must be"),
    ({"steps": 0}, "steps must be"),
    ({"num_points": 0}, "num_points must be"),
])
def test_bad_input_is_rejected_at_construction(digits, kwargs, message):
    _, (x_val, y_val) = digits
    with pytest.raises(ValueError, match=message):
        RobustAccuracy((x_val, y_val), **kwargs)


def test_bad_validation_data_is_rejected(digits):
    _, (x_val, y_val) = digits
    with pytest.raises(ValueError, match="pair"):
        RobustAccuracy(x_val, eps=0.1)
    with pytest.raises(ValueError, match="as many labels"):
        RobustAccuracy((x_val, y_val[:5]), eps=0.1)
