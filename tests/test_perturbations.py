"""Training-time perturbations: FGSM (with random start, Wong et al. 2020) and N-FGSM
(de Jorge et al. 2022) against an independent NumPy computation on a linear model,
their noise, training through `fit`, saving and bad input."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from gfa_keras import FGSM, NFGSM, PGD, HardenedModel

from conftest import random_linear_model as linear_model

RNG = np.random.default_rng(3)
X = RNG.uniform(0.0, 1.0, size=(12, 2, 3)).astype("float32")
Y = RNG.integers(0, 4, size=12).astype("int32")
EPS = 0.1


def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


class Linear:
    """The linear model in NumPy, float64."""

    def __init__(self, model):
        self.w, self.b = (v.numpy().astype("float64") for v in model.get_layer("logits").weights)

    def logits(self, x):
        return x.reshape(len(x), -1) @ self.w + self.b

    def ce(self, x, y):
        return -np.log(softmax(self.logits(x))[np.arange(len(y)), y])

    def input_gradient(self, x, y):
        return ((softmax(self.logits(x)) - np.eye(4)[y]) @ self.w.T).reshape(x.shape)


# A fixed "random" start, 1.5 eps from x in some pixels: far enough that a missing or
# wrongly placed projection shows.
NOISE = RNG.uniform(-1.0, 1.0, size=X.shape).astype("float32")


class FixedStartFGSM(FGSM):
    def start(self, x):
        return tf.clip_by_value(x + self.eps * tf.constant(NOISE), self.clip_min, self.clip_max)


class FixedNoiseNFGSM(NFGSM):
    def start(self, x):
        return tf.clip_by_value(x + self.noise_magnitude * tf.constant(NOISE), self.clip_min, self.clip_max)


def numpy_fgsm_rs(linear, x, y, eps, step):
    x = x.astype("float64")
    start = np.clip(x + eps * NOISE, 0, 1)
    moved = start + step * np.sign(linear.input_gradient(start, y))
    return np.clip(np.clip(moved, x - eps, x + eps), 0, 1)


def numpy_n_fgsm(linear, x, y, noise_magnitude, step):
    start = np.clip(x.astype("float64") + noise_magnitude * NOISE, 0, 1)
    return np.clip(start + step * np.sign(linear.input_gradient(start, y)), 0, 1)


def test_defaults_follow_the_papers():
    assert FGSM(0.1).step_size == pytest.approx(0.1)
    assert FGSM(0.1, random_start=True).step_size == pytest.approx(0.125)
    n_fgsm = NFGSM(8 / 255)
    assert n_fgsm.noise_magnitude == pytest.approx(16 / 255)
    assert n_fgsm.step_size == pytest.approx(8 / 255)


def test_fgsm_with_random_start_matches_numpy_and_is_projected():
    model = linear_model()
    x_adv = FixedStartFGSM(EPS, random_start=True)(model, X, Y).numpy()
    expected = numpy_fgsm_rs(Linear(model), X, Y, EPS, 1.25 * EPS)
    np.testing.assert_allclose(x_adv, expected, atol=1e-6)
    # 1.25 eps steps from inside the ball would leave it without the projection.
    assert np.max(np.abs(x_adv - X)) == pytest.approx(EPS, abs=1e-6)


def test_n_fgsm_matches_numpy_and_is_not_projected_onto_the_eps_ball():
    model = linear_model()
    x_adv = FixedNoiseNFGSM(EPS)(model, X, Y).numpy()
    expected = numpy_n_fgsm(Linear(model), X, Y, 2 * EPS, EPS)
    np.testing.assert_allclose(x_adv, expected, atol=1e-6)
    distance = np.abs(x_adv - X)
    # Up to 3 eps from x, inside the pixel box: only the box bounds the result.
    assert distance.max() > 2.0 * EPS
    assert distance.max() <= 3.0 * EPS + 1e-6
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


def test_random_starts_are_uniform_in_their_balls():
    x = np.full((400, 2, 3), 0.5, "float32")
    y = np.zeros(400, "int32")
    frozen = keras.Sequential([keras.Input((2, 3)), keras.layers.Flatten(),
                               keras.layers.Dense(4, kernel_initializer="zeros")])
    # A zero model has a zero gradient, so the perturbation is the start itself.
    fgsm_start = FGSM(EPS, random_start=True)(frozen, x, y).numpy() - x
    n_fgsm_noise = NFGSM(EPS)(frozen, x, y).numpy() - x
    for delta, radius in ((fgsm_start, EPS), (n_fgsm_noise, 2 * EPS)):
        assert np.abs(delta).max() <= radius + 1e-6
        assert np.abs(delta).max() > 0.98 * radius
        assert abs(delta.mean()) < 0.05 * radius
        assert delta.std() == pytest.approx(radius / np.sqrt(3), rel=0.05)
    # A fresh draw for every call.
    assert not np.allclose(NFGSM(EPS)(frozen, x, y).numpy(), NFGSM(EPS)(frozen, x, y).numpy())


def test_l2_variants_stay_in_their_l2_balls():
    model = linear_model()
    x = np.full((64, 2, 3), 0.5, "float32")
    y = np.zeros(64, "int32")
    fgsm = FGSM(EPS, norm="l2", random_start=True)(model, x, y).numpy() - x
    assert np.linalg.norm(fgsm.reshape(64, -1), axis=1).max() <= EPS + 1e-6
    n_fgsm = NFGSM(EPS, norm="l2")(model, x, y).numpy() - x
    norms = np.linalg.norm(n_fgsm.reshape(64, -1), axis=1)
    assert norms.max() <= 3 * EPS + 1e-6 and norms.max() > EPS


@pytest.mark.parametrize("perturbation, reference", [
    (lambda: FixedStartFGSM(EPS, random_start=True), lambda lin: numpy_fgsm_rs(lin, X, Y, EPS, 1.25 * EPS)),
    (lambda: FixedNoiseNFGSM(EPS), lambda lin: numpy_n_fgsm(lin, X, Y, 2 * EPS, EPS)),
])
def test_training_loss_is_the_loss_at_the_numpy_point(perturbation, reference):
    model = HardenedModel(linear_model(), perturbation=perturbation())
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    linear = Linear(model.base_model)
    expected = linear.ce(reference(linear), Y).mean()
    history = model.fit(X, Y, batch_size=len(X), epochs=1, shuffle=False, verbose=0)
    assert history.history["task_loss"][0] == pytest.approx(expected, rel=1e-5)
    # The clean loss is different: the test would see a perturbation that did nothing.
    assert abs(linear.ce(X, Y).mean() - expected) > 1e-3


@pytest.mark.parametrize("make", [lambda: FGSM(EPS, random_start=True), lambda: NFGSM(EPS, noise_magnitude=0.15)])
def test_single_step_models_save_load_and_resume(make, tmp_path):
    model = HardenedModel(linear_model(), perturbation=make())
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(X, Y, epochs=1, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.perturbation) is type(model.perturbation)
    assert loaded.perturbation.get_config() == model.perturbation.get_config()
    np.testing.assert_allclose(loaded.predict(X, verbose=0), model.predict(X, verbose=0), atol=1e-6)
    history = loaded.fit(X, Y, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize("call, message", [
    (lambda: FGSM(EPS, step_size=0.0), r"step_size must be a finite number > 0. Received: step_size=0.0"),
    (lambda: FGSM(EPS, random_start=True, step_size=float("nan")), r"Received: step_size=nan"),
    (lambda: NFGSM(EPS, step_size=-0.1), r"step_size must be a finite number > 0. Received: step_size=-0.1"),
    (lambda: NFGSM(EPS, step_size=float("inf")), r"Received: step_size=inf"),
    (lambda: NFGSM(EPS, noise_magnitude=0),
     r"noise_magnitude must be a finite number > 0. Received: noise_magnitude=0"),
    (lambda: NFGSM(EPS, noise_magnitude="2eps"), r"Received: noise_magnitude='2eps'"),
    (lambda: NFGSM(0.0), r"eps must be a finite number > 0. Received: eps=0.0"),
    (lambda: NFGSM(EPS, norm="l1"), r"Unknown norm. Expected one of \['linf', 'l2'\]. Received: norm='l1'"),
    (lambda: PGD(EPS, step_size=-1.0), r"Received: step_size=-1.0"),
])
def test_bad_arguments_raise_clear_errors_before_training(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_harden_builds_the_single_step_methods():
    from gfa_keras import GradAlign, GradientFeatureAlignment, harden

    fgsm_rs = harden(linear_model(), method="fgsm_rs", eps=8 / 255)
    assert type(fgsm_rs.perturbation) is FGSM and fgsm_rs.perturbation.random_start
    assert fgsm_rs.perturbation.step_size == pytest.approx(10 / 255) and fgsm_rs.regularizers == []
    n_fgsm = harden(linear_model(), method="n_fgsm", eps=8 / 255, step_size=6 / 255)
    assert type(n_fgsm.perturbation) is NFGSM and n_fgsm.perturbation.step_size == pytest.approx(6 / 255)
    gradalign = harden(linear_model(), method="n_fgsm_gradalign", eps=8 / 255)
    (regularizer,) = gradalign.regularizers
    assert type(regularizer) is GradAlign and regularizer.weight == 0.2 and regularizer.eps == pytest.approx(8 / 255)
    gfa = harden(linear_model(), method="n_fgsm_gfa", eps=8 / 255, layers=1, penalty_weight=0.05)
    assert type(gfa.perturbation) is NFGSM
    assert type(gfa.regularizers[0]) is GradientFeatureAlignment and gfa.regularizers[0].weight == 0.05


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "n_fgsm"}, r"method='n_fgsm' trains against perturbations and needs their radius.*Received: eps=None"),
    ({"method": "fgsm_rs", "eps": 0.1, "step_size": 0},
     r"step_size must be a finite number > 0. Received: step_size=0"),
    ({"method": "n_fgsm_gradalign", "eps": 0.1, "step_size": float("nan")}, r"Received: step_size=nan"),
    ({"method": "n_fgsm_gradalign", "eps": 0.1, "penalty_weight": -1.0}, r"Received: weight=-1.0"),
])
def test_harden_rejects_bad_single_step_settings_before_training(kwargs, message):
    from gfa_keras import harden

    with pytest.raises(ValueError, match=message):
        harden(linear_model(), **kwargs)
