"""The training radius' warm-up (`EpsilonWarmup`): each step's PGD point and update against a
NumPy computation on a linear model, the ramp resumed from a saved model, the full radius
afterwards, TRADES' inner attack, N-FGSM's noise, the ramp in epochs and bad input."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from gfa_keras import NFGSM, PGD, EpsilonWarmup, HardenedModel, TradesKL, harden
from gfa_keras.training.perturbations import radius_scale

from conftest import random_linear_model as linear_model

RNG = np.random.default_rng(7)
X = RNG.uniform(0.2, 0.8, size=(12, 2, 3)).astype("float32")
Y = RNG.integers(0, 4, size=12).astype("int32")
LR, EPS, RAMP = 0.5, 0.1, 4


def compiled(model):
    model.compile(optimizer=keras.optimizers.SGD(LR), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def pgd_model():
    """One PGD step of size eps from x (no random start): the point is x + eps sign(gradient)."""
    return compiled(HardenedModel(linear_model(), perturbation=PGD(EPS, step_size=EPS, steps=1, random_start=False)))


def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def numpy_training(w, b, scales):
    """Full-batch SGD on the PGD point at `scale` x eps for each step: (losses, w, b)."""
    x, losses = X.reshape(len(X), -1).astype("float64"), []
    onehot = np.eye(4)[Y]
    for scale in scales:
        x_adv = np.clip(x + scale * EPS * np.sign((softmax(x @ w + b) - onehot) @ w.T), 0.0, 1.0)
        p = softmax(x_adv @ w + b)
        losses.append(-np.mean(np.log(p[np.arange(len(Y)), Y])))
        w, b = w - LR * x_adv.T @ (p - onehot) / len(Y), b - LR * (p - onehot).mean(0)
    return losses, w, b


def weights(model):
    return [v.numpy().astype("float64") for v in model.base_model.get_layer("logits").weights]


def test_each_step_trains_on_the_pgd_point_at_its_fraction_of_eps():
    model = pgd_model()
    w, b = weights(model)
    history = model.fit(X, Y, batch_size=len(X), epochs=5, shuffle=False, verbose=0,
                        callbacks=[EpsilonWarmup(steps=RAMP)])
    losses, w_end, b_end = numpy_training(w, b, [0.25, 0.5, 0.75, 1.0, 1.0])
    np.testing.assert_allclose(history.history["task_loss"], losses, rtol=1e-5)
    np.testing.assert_allclose(weights(model)[0], w_end, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(weights(model)[1], b_end, rtol=1e-4, atol=1e-6)
    # Training at the full eps from the first step is measurably different.
    full, _, _ = numpy_training(w, b, [1.0] * 5)
    assert abs(full[0] - losses[0]) > 1e-2


def test_a_run_resumed_from_a_saved_model_continues_the_ramp_then_trains_at_full_eps(tmp_path):
    model = pgd_model()
    w, b = weights(model)
    model.fit(X, Y, batch_size=len(X), epochs=2, shuffle=False, verbose=0, callbacks=[EpsilonWarmup(steps=RAMP)])
    assert float(model.eps_warmup_steps) == 0.0  # fit is over: later fits train at the full eps
    model.save(tmp_path / "warming.keras")
    loaded = keras.models.load_model(tmp_path / "warming.keras")
    assert len(loaded.weights) == len(model.weights)  # the ramp's variable is not saved
    history = loaded.fit(X, Y, batch_size=len(X), initial_epoch=2, epochs=4, shuffle=False, verbose=0,
                         callbacks=[EpsilonWarmup(steps=RAMP)])
    after = loaded.fit(X, Y, batch_size=len(X), epochs=1, shuffle=False, verbose=0)  # no warm-up
    losses, w_end, _ = numpy_training(w, b, [0.25, 0.5, 0.75, 1.0, 1.0])
    np.testing.assert_allclose(history.history["task_loss"] + after.history["task_loss"], losses[2:], rtol=1e-5)
    np.testing.assert_allclose(weights(loaded)[0], w_end, rtol=1e-4, atol=1e-6)


class FixedStartTradesKL(TradesKL):
    def attack_start(self, x):
        return tf.clip_by_value(x + 0.001 * tf.sign(tf.constant(X - 0.5)), 0.0, 1.0)


def test_trades_inner_attack_ramps_with_the_radius():
    def trades_penalty(eps, callbacks):
        model = compiled(HardenedModel(linear_model(), regularizers=[FixedStartTradesKL(1.0, eps, steps=2)]))
        history = model.fit(X, Y, batch_size=len(X), epochs=1, verbose=0, callbacks=callbacks)
        return history.history["trades_penalty"][0]

    # Step 0 of a 4-step ramp: a quarter of the radius and of the step size.
    warmed = trades_penalty(EPS, [EpsilonWarmup(steps=RAMP)])
    quarter = FixedStartTradesKL(1.0, EPS / 4, steps=2)
    model = compiled(HardenedModel(linear_model(), regularizers=[quarter]))
    assert quarter.attack.step_size == pytest.approx(TradesKL(1.0, EPS, steps=2).attack.step_size / 4)
    expected = model.fit(X, Y, batch_size=len(X), epochs=1, verbose=0).history["trades_penalty"][0]
    assert warmed == pytest.approx(expected, rel=1e-5)
    assert warmed < 0.5 * trades_penalty(EPS, None)


def test_n_fgsm_noise_shrinks_with_the_radius():
    x = np.full((400, 2, 3), 0.5, "float32")
    frozen = keras.Sequential([keras.Input((2, 3)), keras.layers.Flatten(),
                               keras.layers.Dense(4, kernel_initializer="zeros")])  # zero gradient: the noise
    with radius_scale(tf.constant(0.25)):
        delta = NFGSM(EPS)(frozen, x, np.zeros(400, "int32")).numpy() - x
    assert 0.98 * 0.25 * 2 * EPS < np.abs(delta).max() <= 0.25 * 2 * EPS + 1e-6


def test_a_ramp_in_epochs_counts_fits_steps_and_needs_them():
    warmup = EpsilonWarmup(epochs=2)
    model = pgd_model()
    model.fit(X, Y, batch_size=4, epochs=1, verbose=0, callbacks=[warmup])  # 3 steps an epoch
    assert warmup.ramp_steps() == 6
    unknown_length = tf.data.Dataset.from_tensor_slices((X, Y)).filter(lambda x, y: y >= 0).batch(4)
    with pytest.raises(ValueError, match=r"steps per epoch.*Received: epochs=2.0, steps per epoch None"):
        model.fit(unknown_length, epochs=1, verbose=0, callbacks=[EpsilonWarmup(epochs=2)])
    model.fit(unknown_length, epochs=1, verbose=0, callbacks=[EpsilonWarmup(steps=6)])  # in steps it can


@pytest.mark.parametrize("kwargs, message", [
    (dict(), r"the ramp's epochs or its steps, one of them\. Received: epochs=None, steps=None"),
    (dict(epochs=1, steps=10), r"Received: epochs=1, steps=10"),
    (dict(epochs=0), r"epochs must be a finite number > 0\. Received: epochs=0"),
    (dict(epochs=float("nan")), r"Received: epochs=nan"),
    (dict(steps=0), r"steps must be a positive integer\. Received: steps=0"),
])
def test_a_bad_ramp_is_rejected_naming_it(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EpsilonWarmup(**kwargs)


def test_the_warm_up_needs_a_model_that_trains_on_perturbed_points():
    model = compiled(harden(linear_model(), method="standard"))
    with pytest.raises(ValueError, match=r"trains on perturbed points.*Received: model '\w+' without one"):
        model.fit(X, Y, epochs=1, verbose=0, callbacks=[EpsilonWarmup(steps=2)])
