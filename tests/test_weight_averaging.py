"""Weight averaging (EMA): the average against a hand computation from the recorded
weights, batch-norm statistics averaged too, the swap at the end of `fit` and back at
the next one, saving and loading, and bad momenta."""
import keras
import numpy as np
import pytest

from gfa_keras import HardenedModel, harden

RNG = np.random.default_rng(5)
X = RNG.uniform(0.05, 0.95, size=(12, 2, 3)).astype("float32")
Y = RNG.integers(0, 4, size=12).astype("int32")
MOMENTUM = 0.2  # small, so that the warm-up rule min(m, (1 + t) / (10 + t)) takes both branches


def model_with_batch_norm(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((2, 3)), keras.layers.Flatten(), keras.layers.BatchNormalization(name="bn"),
                             keras.layers.Dense(4, name="logits")], name="bn_linear")


def compiled(model):
    model.compile(optimizer=keras.optimizers.SGD(0.5),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


class Recorder(keras.callbacks.Callback):
    """The base model's weights (trainable and batch-norm statistics) after every batch."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def on_train_batch_end(self, batch, logs=None):
        self.seen.append([w.numpy().copy() for w in self.model.base_model.weights])


def expected_average(steps, momentum):
    average = None
    for t, weights in enumerate(steps):
        m = 0.0 if t == 0 else min(momentum, (1 + t) / (10 + t))
        average = [w.copy() for w in weights] if average is None else \
            [m * a + (1 - m) * w for a, w in zip(average, weights)]
    return average


def test_after_fit_the_model_holds_the_hand_computed_average_batch_norm_statistics_included():
    model = compiled(HardenedModel(model_with_batch_norm(), ema_momentum=MOMENTUM))
    recorder = Recorder()
    model.fit(X, Y, batch_size=4, epochs=1, shuffle=False, verbose=0, callbacks=[recorder])
    assert len(recorder.seen) == 3
    assert min(MOMENTUM, 2 / 11) != min(MOMENTUM, 3 / 12)  # both branches of the warm-up rule
    expected = expected_average(recorder.seen, MOMENTUM)
    names = [w.name for w in model.base_model.weights]
    assert "moving_mean" in names and "moving_variance" in names
    for name, w, e in zip(names, model.base_model.weights, expected):
        np.testing.assert_allclose(w.numpy(), e, rtol=1e-5, atol=1e-6, err_msg=name)
    # Averaged, not the last weights:
    assert np.abs(model.base_model.get_layer("logits").kernel.numpy()
                  - recorder.seen[-1][names.index("kernel")]).max() > 1e-4
    # evaluate and predict use the averaged weights.
    np.testing.assert_allclose(model.predict(X, verbose=0), model.base_model(X, training=False).numpy(), atol=1e-6)


def test_the_next_fit_continues_from_the_trained_weights_and_the_average_goes_on():
    model = compiled(HardenedModel(model_with_batch_norm(), ema_momentum=MOMENTUM))
    recorder = Recorder()
    model.fit(X, Y, batch_size=4, epochs=1, shuffle=False, verbose=0, callbacks=[recorder])
    trained = recorder.seen[-1]

    class AtStart(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 0:
                self.start = [w.numpy().copy() for w in self.model.base_model.weights]

    at_start = AtStart()
    model.fit(X, Y, batch_size=4, epochs=1, shuffle=False, verbose=0, callbacks=[at_start, recorder])
    for a, b in zip(at_start.start, trained):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    for w, e in zip(model.base_model.weights, expected_average(recorder.seen, MOMENTUM)):
        np.testing.assert_allclose(w.numpy(), e, rtol=1e-5, atol=1e-6)


def test_averaged_weights_context_swaps_in_and_back():
    model = compiled(HardenedModel(model_with_batch_norm(), ema_momentum=MOMENTUM))
    model.fit(X, Y, batch_size=4, epochs=1, verbose=0)
    averaged = [w.numpy().copy() for w in model.base_model.weights]
    model.use_averaged_weights(False)
    trained = [w.numpy().copy() for w in model.base_model.weights]
    assert max(np.abs(a - t).max() for a, t in zip(averaged, trained)) > 1e-4
    with model.averaged_weights():
        for w, a in zip(model.base_model.weights, averaged):
            np.testing.assert_array_equal(w.numpy(), a)
    for w, t in zip(model.base_model.weights, trained):
        np.testing.assert_array_equal(w.numpy(), t)


def test_saved_model_is_the_averaged_one_and_resumes_like_the_original(tmp_path):
    model = compiled(harden(model_with_batch_norm(), method="pgd", eps=0.1, steps=2, ema_momentum=0.9))
    model.fit(X, Y, batch_size=4, epochs=1, verbose=0)
    model.save(tmp_path / "ema.keras")
    loaded = keras.models.load_model(tmp_path / "ema.keras")
    assert loaded.ema_momentum == 0.9
    np.testing.assert_allclose(loaded.predict(X, verbose=0), model.predict(X, verbose=0), atol=1e-6)
    for m in (model, loaded):
        keras.utils.set_random_seed(3)
        m.fit(X, Y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(model.base_model.weights, loaded.base_model.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("momentum", [0, 1, 1.5, -0.1, float("nan"), "0.9"])
def test_momentum_outside_the_open_unit_interval_is_rejected(momentum):
    pattern = r"ema_momentum must be a finite number > 0 and < 1\. Received: ema_momentum="
    with pytest.raises(ValueError, match=pattern):
        HardenedModel(model_with_batch_norm(), ema_momentum=momentum)
    with pytest.raises(ValueError, match=pattern):
        harden(model_with_batch_norm(), method="pgd", eps=0.1, ema_momentum=momentum)
