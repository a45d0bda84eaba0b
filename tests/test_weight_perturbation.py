"""Adversarial weight perturbation (AWP): one step against a NumPy computation on a linear
model, on clean and on adversarial points; TRADES attacks once per step; batch-norm
statistics move once, by the forward pass at the perturbed weights; the warm-up; saving, loading and bad input."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from gfa_keras import PGD, AdversarialWeightPerturbation, HardenedModel, TradesKL, WeightPerturbationWarmup, harden

RNG = np.random.default_rng(3)
X = RNG.uniform(0.05, 0.95, size=(12, 2, 3)).astype("float32")
Y = RNG.integers(0, 4, size=12).astype("int32")
LR, GAMMA, EPS = 0.1, 0.05, 0.1


def linear_model(seed=0):
    return keras.Sequential(
        [
            keras.Input((2, 3)),
            keras.layers.Flatten(),
            keras.layers.Dense(4, name="logits",
                               kernel_initializer=keras.initializers.RandomNormal(stddev=1.0, seed=seed),
                               bias_initializer=keras.initializers.RandomNormal(stddev=0.5, seed=seed + 1)),
        ],
        name="linear",
    )


def compiled(model):
    model.compile(optimizer=keras.optimizers.SGD(LR), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def loss_and_gradients(w, b, x, y):
    """Mean cross-entropy of a linear model and its gradients for the kernel, bias and input."""
    p = softmax(x @ w + b)
    residual = p.copy()
    residual[np.arange(len(y)), y] -= 1.0
    loss = -np.mean(np.log(p[np.arange(len(y)), y]))
    return loss, x.T @ residual / len(y), residual.mean(0), residual @ w.T


def expected_awp_step(w, b, x, y):
    """Wu et al.'s step by hand: the kernel moved by gamma ||w|| g / ||g||, the gradient
    at the moved weights, an SGD step, the move taken away."""
    base_loss, gw, _, _ = loss_and_gradients(w, b, x, y)
    delta = GAMMA * np.linalg.norm(w) * gw / np.linalg.norm(gw)
    loss, gw2, gb2, _ = loss_and_gradients(w + delta, b, x, y)
    return w - LR * gw2, b - LR * gb2, np.linalg.norm(delta), loss - base_loss, loss


def test_one_awp_step_on_clean_points_matches_the_hand_computed_update():
    model = compiled(HardenedModel(linear_model(), weight_perturbation=AdversarialWeightPerturbation(GAMMA)))
    w, b = (v.numpy() for v in model.base_model.get_layer("logits").weights)
    history = model.fit(X, Y, batch_size=len(X), epochs=1, shuffle=False, verbose=0)
    w_new, b_new, norm, gain, loss = expected_awp_step(w, b, X.reshape(len(X), -1), Y)
    kernel, bias = (v.numpy() for v in model.base_model.get_layer("logits").weights)
    np.testing.assert_allclose(kernel, w_new, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bias, b_new, rtol=1e-5, atol=1e-6)  # biases are not perturbed
    assert history.history["awp_norm"][0] == pytest.approx(norm, rel=1e-5)
    assert history.history["awp_norm"][0] == pytest.approx(GAMMA * np.linalg.norm(w), rel=1e-5)
    assert history.history["awp_loss_gain"][0] == pytest.approx(gain, rel=1e-4)
    assert gain > 0  # the ascent step raises the loss
    assert history.history["task_loss"][0] == pytest.approx(loss, rel=1e-5)  # the loss at the moved weights


def test_the_warm_up_trains_plainly_then_steps_as_awp_and_leaves_the_models_gamma(tmp_path):
    model = compiled(HardenedModel(linear_model(), weight_perturbation=AdversarialWeightPerturbation(GAMMA)))
    w, b = (v.numpy() for v in model.base_model.get_layer("logits").weights)
    x = X.reshape(len(X), -1)
    history = model.fit(X, Y, batch_size=len(X), epochs=2, shuffle=False, verbose=0,
                        callbacks=[WeightPerturbationWarmup(start_epoch=1)])
    # epoch 0: a plain SGD step, no perturbation
    _, gw, gb, _ = loss_and_gradients(w, b, x, Y)
    w1, b1 = w - LR * gw, b - LR * gb
    assert history.history["awp_norm"][0] == 0.0 and history.history["awp_loss_gain"][0] == 0.0
    # epoch 1: Wu et al.'s step from there, at the model's full gamma
    w2, b2, norm, _, loss = expected_awp_step(w1, b1, x, Y)
    kernel, bias = (v.numpy() for v in model.base_model.get_layer("logits").weights)
    np.testing.assert_allclose(kernel, w2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bias, b2, rtol=1e-5, atol=1e-6)
    assert history.history["awp_norm"][1] == pytest.approx(norm, rel=1e-5)
    assert history.history["task_loss"][1] == pytest.approx(loss, rel=1e-5)

    # Stopped inside the warm-up: the model is left at its gamma, which is not saved with it.
    history = model.fit(X, Y, batch_size=len(X), epochs=1, verbose=0, callbacks=[WeightPerturbationWarmup(5)])
    assert history.history["awp_norm"][0] == 0.0 and float(model.awp_gamma) == pytest.approx(GAMMA)
    model.save(tmp_path / "warm.keras")
    loaded = keras.models.load_model(tmp_path / "warm.keras")
    assert float(loaded.awp_gamma) == pytest.approx(GAMMA)
    assert len(loaded.weights) == len(compiled(HardenedModel(linear_model())).weights)


def test_the_warm_up_ramps_linearly_and_resumes_by_fits_initial_epoch():
    warmup = WeightPerturbationWarmup(start_epoch=1, end_epoch=3)
    assert [warmup.value(e, gamma=0.3) for e in range(5)] == pytest.approx([0.0, 0.0, 0.15, 0.3, 0.3])
    model = compiled(HardenedModel(linear_model(), weight_perturbation=AdversarialWeightPerturbation(GAMMA)))
    w = model.base_model.get_layer("logits").kernel.numpy()
    history = model.fit(X, Y, batch_size=len(X), initial_epoch=2, epochs=3, verbose=0, callbacks=[warmup])
    # epoch 2 of a ramp from 1 to 3: half the gamma, so half the perturbation's norm
    assert history.history["awp_norm"][0] == pytest.approx(GAMMA / 2 * np.linalg.norm(w), rel=1e-5)


@pytest.mark.parametrize("start, end, match", [
    (-1, None, r"start_epoch must be an integer >= 0\. Received: start_epoch=-1"),
    (3, 2, r"Expected start_epoch <= end_epoch\. Received: start_epoch=3, end_epoch=2"),
])
def test_a_bad_warm_up_is_rejected_naming_it(start, end, match):
    with pytest.raises(ValueError, match=match):
        WeightPerturbationWarmup(start, end)


def test_the_warm_up_needs_a_model_with_awp():
    model = compiled(harden(linear_model(), method="pgd", eps=EPS, steps=1))
    with pytest.raises(ValueError, match=r"adversarial weight perturbation .*Received: model '\w+' without one"):
        model.fit(X, Y, epochs=1, verbose=0, callbacks=[WeightPerturbationWarmup(1)])


def test_awp_is_computed_on_the_adversarial_examples():
    attack = PGD(EPS, step_size=EPS, steps=1, random_start=False)
    model = compiled(HardenedModel(linear_model(), perturbation=attack,
                                   weight_perturbation=AdversarialWeightPerturbation(GAMMA)))
    w, b = (v.numpy() for v in model.base_model.get_layer("logits").weights)
    model.fit(X, Y, batch_size=len(X), epochs=1, shuffle=False, verbose=0)
    x = X.reshape(len(X), -1)
    _, _, _, gx = loss_and_gradients(w, b, x, Y)  # one signed step from x: the PGD point
    x_adv = np.clip(x + EPS * np.sign(gx), 0.0, 1.0)
    w_new, b_new, _, _, _ = expected_awp_step(w, b, x_adv, Y)
    kernel, bias = (v.numpy() for v in model.base_model.get_layer("logits").weights)
    np.testing.assert_allclose(kernel, w_new, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bias, b_new, rtol=1e-5, atol=1e-6)
    # ... and not on the clean points, which would give another update.
    w_clean, _, _, _, _ = expected_awp_step(w, b, x, Y)
    assert np.abs(w_clean - w_new).max() > 1e-3


def test_trades_with_awp_attacks_once_per_step(monkeypatch):
    calls = []
    trades = TradesKL(6.0, EPS, steps=2)
    original = type(trades.attack).__call__

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(trades.attack), "__call__", counting)
    model = HardenedModel(linear_model(), regularizers=[trades], weight_perturbation=AdversarialWeightPerturbation())
    model.compile(optimizer=keras.optimizers.SGD(LR), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  run_eagerly=True)
    history = model.fit(X, Y, batch_size=6, epochs=1, verbose=0)
    assert len(calls) == 2  # two steps, one KL attack each (not two)
    assert history.history["awp_loss_gain"][0] > 0


def test_awp_leaves_batch_norm_statistics_moved_once():
    def model_with_input_batch_norm():
        keras.utils.set_random_seed(1)
        return keras.Sequential([keras.Input((2, 3)), keras.layers.BatchNormalization(name="bn"),
                                 keras.layers.Flatten(), keras.layers.Dense(4)])

    plain = compiled(HardenedModel(model_with_input_batch_norm()))
    awp = compiled(HardenedModel(model_with_input_batch_norm(), weight_perturbation=AdversarialWeightPerturbation()))
    for model in (plain, awp):
        model.fit(X, Y, batch_size=6, epochs=1, shuffle=False, verbose=0)
    # The batch norm sees the inputs only: with one update per step both agree; a second
    # update in the ascent pass would have moved AWP's further.
    for a, b in zip(plain.base_model.get_layer("bn").non_trainable_weights,
                    awp.base_model.get_layer("bn").non_trainable_weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)
    assert np.abs(awp.base_model.get_layer("bn").moving_mean.numpy()).max() > 1e-3


def test_awp_moves_batch_norm_statistics_by_one_forward_pass_at_the_perturbed_weights():
    """Wu et al.'s semantics, traced: the ascent pass (at w) leaves the statistics; the
    update's training forward pass, at w + delta, is the one that moves them."""
    keras.utils.set_random_seed(2)
    base = keras.Sequential([keras.Input((2, 3)), keras.layers.Dense(5, name="hidden"),
                             keras.layers.BatchNormalization(name="bn", momentum=0.5),
                             keras.layers.Flatten(), keras.layers.Dense(4, name="logits")])
    bn = base.get_layer("bn")
    initial = base.get_weights()
    kernels = [base.get_layer("hidden").kernel, base.get_layer("logits").kernel]
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def statistics_after_one_forward_pass(deltas):
        base.set_weights(initial)
        for kernel, delta in zip(kernels, deltas):
            kernel.assign_add(delta)
        base(X, training=True)
        statistics = [bn.moving_mean.numpy(), bn.moving_variance.numpy()]
        base.set_weights(initial)
        return statistics

    # The perturbation by hand, from the gradient at w of the training-mode loss.
    with tf.GradientTape() as tape:
        loss = ce(Y, base(X, training=True))
    gradients = tape.gradient(loss, kernels)
    deltas = [GAMMA * np.linalg.norm(k.numpy()) * g.numpy() / np.linalg.norm(g.numpy())
              for k, g in zip(kernels, gradients)]
    at_perturbed = statistics_after_one_forward_pass(deltas)
    at_unperturbed = statistics_after_one_forward_pass([np.zeros(k.shape, "float32") for k in kernels])

    model = compiled(HardenedModel(base, weight_perturbation=AdversarialWeightPerturbation(GAMMA)))
    model.fit(X, Y, batch_size=len(X), epochs=1, shuffle=False, verbose=0)
    for got, want, unwanted in zip([bn.moving_mean.numpy(), bn.moving_variance.numpy()], at_perturbed,
                                   at_unperturbed):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        assert np.abs(got - unwanted).max() > 1e-4  # the two candidates are told apart


def test_awp_saves_loads_and_resumes(tmp_path):
    model = compiled(harden(linear_model(), method="trades", eps=EPS, steps=2, awp_gamma=0.01))
    model.fit(X, Y, batch_size=6, epochs=1, verbose=0)
    model.save(tmp_path / "awp.keras")
    loaded = keras.models.load_model(tmp_path / "awp.keras")
    assert loaded.weight_perturbation.get_config() == {"gamma": 0.01}
    np.testing.assert_allclose(loaded.predict(X, verbose=0), model.predict(X, verbose=0), atol=1e-6)
    history = loaded.fit(X, Y, batch_size=6, epochs=1, verbose=0)
    assert math.isfinite(history.history["awp_norm"][0]) and history.history["awp_norm"][0] > 0


@pytest.mark.parametrize("gamma", [0, -0.01, float("nan"), float("inf"), "0.01", True])
def test_bad_gamma_is_rejected_naming_it(gamma):
    with pytest.raises(ValueError, match=r"gamma must be a finite number > 0\. Received: gamma="):
        AdversarialWeightPerturbation(gamma)
    with pytest.raises(ValueError, match=r"awp_gamma must be a finite number > 0\. Received: awp_gamma="):
        harden(linear_model(), method="pgd", eps=EPS, awp_gamma=gamma)


def test_weight_perturbation_must_be_an_awp_object():
    with pytest.raises(ValueError, match=r"AdversarialWeightPerturbation\. Received: weight_perturbation=0\.005"):
        HardenedModel(linear_model(), weight_perturbation=0.005)
