"""Regularizers: GradAlign's gradient-cosine penalty against NumPy on a linear model
(value, sample weights and the double-backprop update), composed with the single-step
perturbations and with GFA, saving and bad input."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from gfa_keras import NFGSM, GradAlign, GradientFeatureAlignment, HardenedModel

from conftest import random_linear_model as linear_model

RNG = np.random.default_rng(5)
X = RNG.uniform(0.0, 1.0, size=(10, 2, 3)).astype("float32")
Y = RNG.integers(0, 4, size=10).astype("int32")
ETA = RNG.uniform(-1.0, 1.0, size=X.shape).astype("float32")
EPS = 0.3


def compiled(model, lr=0.1):
    model.compile(optimizer=keras.optimizers.SGD(lr),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


class FixedEtaGradAlign(GradAlign):
    def nearby_points(self, x):
        return tf.clip_by_value(x + self.eps * tf.constant(ETA), self.clip_min, self.clip_max)


def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def numpy_objective(w, b, x, y, weight, sample_weight=None):
    """(CE + weight * GradAlign) for a linear model, float64, and the mean cosine."""
    x = x.reshape(len(x), -1).astype("float64")
    near = np.clip(x + EPS * ETA.reshape(len(x), -1), 0, 1)
    onehot = np.eye(4)[y]

    def gradient(points):
        return (softmax(points @ w + b) - onehot) @ w.T

    g1, g2 = gradient(x), gradient(near)
    cos = (g1 * g2).sum(1) / (np.linalg.norm(g1, axis=1) * np.linalg.norm(g2, axis=1))
    sw = np.ones(len(x)) if sample_weight is None else sample_weight
    ce = -np.log(softmax(x @ w + b)[np.arange(len(y)), y])
    penalty = np.sum(sw * (1 - cos)) / np.sum(sw)
    return np.sum(sw * ce) / len(x) + weight * penalty, penalty, np.sum(sw * cos) / np.sum(sw)


def weights64(model):
    return [v.numpy().astype("float64") for v in model.base_model.get_layer("logits").weights]


def test_gradalign_penalty_and_cosine_match_numpy():
    model = compiled(HardenedModel(linear_model(), regularizers=[FixedEtaGradAlign(0.5, EPS)]))
    _, penalty, cosine = numpy_objective(*weights64(model), X, Y, 0.5)
    logs = model.evaluate(X, Y, batch_size=len(X), verbose=0, return_dict=True)
    assert logs["gradalign_penalty"] == pytest.approx(penalty, rel=1e-4)
    assert logs["gradient_cosine"] == pytest.approx(cosine, rel=1e-4)
    # A penalty that is not already zero, or the test could not tell it from a no-op.
    assert penalty > 1e-3


def test_sample_weights_weight_the_penalty():
    sw = np.array([1.0, 0.0] * 5)
    model = compiled(HardenedModel(linear_model(), regularizers=[FixedEtaGradAlign(0.5, EPS)]))
    _, penalty, _ = numpy_objective(*weights64(model), X, Y, 0.5, sample_weight=sw)
    _, unweighted, _ = numpy_objective(*weights64(model), X, Y, 0.5)
    logs = model.evaluate(X, Y, sample_weight=sw, batch_size=len(X), verbose=0, return_dict=True)
    assert logs["gradalign_penalty"] == pytest.approx(penalty, rel=1e-4)
    assert abs(penalty - unweighted) > 1e-3


def test_update_is_the_gradient_of_the_total_objective_by_double_backprop():
    lr, weight = 0.1, 10.0
    model = compiled(HardenedModel(linear_model(), regularizers=[FixedEtaGradAlign(weight, EPS)]), lr)
    w, b = weights64(model)
    model.fit(X, Y, batch_size=len(X), epochs=1, shuffle=False, verbose=0)
    new_w, new_b = weights64(model)

    def total(w_, b_):
        return numpy_objective(w_, b_, X, Y, weight)[0]

    def numeric_gradient(param, index):
        out = np.zeros_like(param)
        h = 1e-6
        for i in np.ndindex(param.shape):
            up, down = [w.copy(), b.copy()], [w.copy(), b.copy()]
            up[index][i] += h
            down[index][i] -= h
            out[i] = (total(*up) - total(*down)) / (2 * h)
        return out

    grad_w, grad_b = numeric_gradient(w, 0), numeric_gradient(b, 1)
    np.testing.assert_allclose(new_w, w - lr * grad_w, atol=2e-5)
    np.testing.assert_allclose(new_b, b - lr * grad_b, atol=2e-5)

    # The penalty's own gradient is part of the update: without the second-order
    # term the weights would have moved by the cross-entropy's gradient alone.
    def ce_only(w_, b_):
        return numpy_objective(w_, b_, X, Y, 0.0)[0]

    h = 1e-6
    ce_grad_b = np.array([(ce_only(w, b + h * e) - ce_only(w, b - h * e)) / (2 * h) for e in np.eye(4)])
    assert np.max(np.abs((b - lr * ce_grad_b) - new_b)) > 1e-3


@pytest.mark.parametrize("regularizer", [
    lambda: GradAlign(0.2, eps=0.1),
    lambda: GradientFeatureAlignment(layers=2, weight=0.05),
])
def test_composes_with_n_fgsm_trains_and_logs(regularizer, digits):
    (x, y), _ = digits
    base = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                             keras.layers.Dense(16, activation="relu", name="hidden"),
                             keras.layers.Dense(10, name="logits")])
    model = HardenedModel(base, perturbation=NFGSM(0.1), regularizers=[regularizer()])
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    history = model.fit(x[:192], y[:192], batch_size=64, epochs=2, validation_data=(x[-64:], y[-64:]),
                        verbose=0).history
    name = model.regularizers[0].name
    for key in ("loss", "task_loss", f"{name}_penalty", f"{name}_weight", f"val_{name}_penalty"):
        assert np.all(np.isfinite(history[key])), key
    assert history["task_loss"][-1] < history["task_loss"][0]
    cosine_key = "gradient_cosine" if name == "gradalign" else "alignment_logits"
    assert -1.0 <= history[cosine_key][-1] <= 1.0


def test_gradalign_saves_loads_and_resumes(tmp_path):
    model = compiled(HardenedModel(linear_model(), perturbation=NFGSM(0.1),
                                   regularizers=[GradAlign(0.3, eps=0.1, norm="l2")]))
    model.fit(X, Y, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.regularizers[0].get_config() == {"weight": 0.3, "eps": 0.1, "norm": "l2", "clip_min": 0.0,
                                                   "clip_max": 1.0}
    np.testing.assert_allclose(loaded.predict(X, verbose=0), model.predict(X, verbose=0), atol=1e-6)
    assert np.isfinite(loaded.fit(X, Y, epochs=1, verbose=0).history["gradalign_penalty"][0])


@pytest.mark.parametrize("call, message", [
    (lambda: GradAlign(weight=-0.1), r"weight must be a finite number >= 0. Received: weight=-0.1"),
    (lambda: GradAlign(weight=float("nan")), r"Received: weight=nan"),
    (lambda: GradAlign(eps=0.0), r"eps must be a finite number > 0. Received: eps=0.0"),
    (lambda: GradAlign(eps=0.1, norm="l1"), r"Received: norm='l1'"),
    (lambda: GradAlign(eps=0.1, clip_min=1.0, clip_max=0.0), r"Received: clip_min=1.0, clip_max=0.0"),
])
def test_bad_arguments_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
