"""The defenses beside GFA: each loss against an independent NumPy computation on a
linear model, the reduction to the base method at weight 0, saving and resuming."""
import math

import keras
import numpy as np
import pytest

from gfa_keras import PGD, GradientFeatureAlignment, HardenedModel, InputGradientNorm, PenaltyWarmup, harden
from gfa_keras.training.methods import METHODS, RECOMMENDED_DEFAULTS

from conftest import random_linear_model as linear_model

RNG = np.random.default_rng(11)
X = RNG.uniform(0.05, 0.95, size=(12, 2, 3)).astype("float32")
Y = RNG.integers(0, 4, size=12).astype("int32")
EPS, STEP, STEPS = 0.1, 0.04, 3


def compiled(model, lr=0.1):
    model.compile(optimizer=keras.optimizers.SGD(lr),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


class Linear:
    """The linear model in NumPy, float64: logits, per-example CE and its input gradient."""

    def __init__(self, model):
        w, b = (v.numpy().astype("float64") for v in model.get_layer("logits").weights)
        self.w, self.b = w, b

    def logits(self, x):
        return x.reshape(len(x), -1) @ self.w + self.b

    def ce(self, x, y):
        p = softmax(self.logits(x))
        return -np.log(p[np.arange(len(y)), y])

    def input_gradient(self, x, y):
        """d CE_i / d x_i, per example."""
        g = (softmax(self.logits(x)) - np.eye(4)[y]) @ self.w.T
        return g.reshape(x.shape)

    def pgd(self, x, y, eps=EPS, step=STEP, steps=STEPS):
        x = x.astype("float64")
        x_adv = x.copy()
        for _ in range(steps):
            x_adv = x_adv + step * np.sign(self.input_gradient(x_adv, y))
            x_adv = np.clip(np.clip(x_adv, x - eps, x + eps), 0, 1)
        return x_adv


def one_step_logs(model, x=X, y=Y):
    history = model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    return {k: v[0] for k, v in history.history.items()}


def deterministic_pgd():
    return PGD(EPS, step_size=STEP, steps=STEPS, random_start=False)


def test_pgd_training_loss_is_the_loss_at_the_numpy_pgd_point():
    model = compiled(HardenedModel(linear_model(), perturbation=deterministic_pgd()))
    ref = Linear(model.base_model)
    logs = one_step_logs(model)
    x_adv = ref.pgd(X, Y)
    assert np.abs(x_adv - X).max() == pytest.approx(EPS, abs=1e-6)
    np.testing.assert_allclose(logs["task_loss"], ref.ce(x_adv, Y).mean(), rtol=1e-5)
    np.testing.assert_allclose(logs["loss"], logs["task_loss"], rtol=1e-6)
    assert logs["task_loss"] > ref.ce(X, Y).mean()


@pytest.mark.parametrize("p", [1, 2])
def test_datagrad_penalty_is_the_mean_input_gradient_norm(p):
    model = compiled(harden(linear_model(), method="datagrad", p=p, penalty_weight=0.3))
    ref = Linear(model.base_model)
    logs = one_step_logs(model)
    g = ref.input_gradient(X, Y).reshape(len(X), -1)
    expected = np.abs(g).sum(1).mean() if p == 1 else np.linalg.norm(g, axis=1).mean()
    np.testing.assert_allclose(logs["input_gradient_penalty"], expected, rtol=1e-5)
    np.testing.assert_allclose(logs["loss"], ref.ce(X, Y).mean() + 0.3 * expected, rtol=1e-5)


def test_datagrad_update_matches_finite_differences():
    lam = 0.5
    model = compiled(harden(linear_model(), method="datagrad", p=2, penalty_weight=lam), lr=1.0)
    w0, b0 = (v.numpy().astype("float64") for v in model.base_model.get_layer("logits").weights)
    one_step_logs(model)
    w1, b1 = (v.numpy().astype("float64") for v in model.base_model.get_layer("logits").weights)

    def objective(w, b):
        ref = Linear(model.base_model)
        ref.w, ref.b = w, b
        g = ref.input_gradient(X, Y).reshape(len(X), -1)
        return ref.ce(X, Y).mean() + lam * np.linalg.norm(g, axis=1).mean()

    h = 1e-6
    for idx in [(0, 0), (3, 2), (5, 1)]:
        plus, minus = w0.copy(), w0.copy()
        plus[idx] += h
        minus[idx] -= h
        numeric = (objective(plus, b0) - objective(minus, b0)) / (2 * h)
        np.testing.assert_allclose(w0[idx] - w1[idx], numeric, rtol=1e-4, atol=1e-6)


def test_hybrid_penalty_is_the_squared_input_gradient_norm_at_the_perturbed_points():
    model = compiled(HardenedModel(linear_model(), perturbation=deterministic_pgd(),
                                   regularizers=[InputGradientNorm(p=2, weight=0.2, squared=True)]))
    ref = Linear(model.base_model)
    logs = one_step_logs(model)
    x_adv = ref.pgd(X, Y)
    g_adv = ref.input_gradient(x_adv, Y).reshape(len(X), -1)
    expected = (g_adv ** 2).sum(1).mean()
    np.testing.assert_allclose(logs["input_gradient_penalty"], expected, rtol=1e-5)
    g_clean = ref.input_gradient(X, Y).reshape(len(X), -1)
    assert abs(expected - (g_clean ** 2).sum(1).mean()) > 1e-3  # not the clean points'
    np.testing.assert_allclose(logs["loss"], ref.ce(x_adv, Y).mean() + 0.2 * expected, rtol=1e-5)


def test_gfa_with_pgd_aligns_at_the_perturbed_points():
    model = compiled(HardenedModel(linear_model(), perturbation=deterministic_pgd(),
                                   regularizers=[GradientFeatureAlignment(layers=1, weight=0.5)]))
    ref = Linear(model.base_model)
    logs = one_step_logs(model)
    x_adv = ref.pgd(X, Y).reshape(len(X), -1)
    g = ref.input_gradient(x_adv.reshape(X.shape), Y).reshape(len(X), -1)
    cos = (g * x_adv).sum(1) / (np.linalg.norm(g, axis=1) * np.linalg.norm(x_adv, axis=1))
    np.testing.assert_allclose(logs["alignment_logits"], cos.mean(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(logs["gfa_penalty"], (1 - cos).mean(), rtol=1e-4)


def test_trades_total_is_clean_loss_plus_beta_kl_and_the_kl_attack_stays_in_the_ball():
    model = compiled(harden(linear_model(), method="trades", eps=EPS, steps=5, penalty_weight=3.0))
    ref = Linear(model.base_model)
    logs = one_step_logs(model)
    np.testing.assert_allclose(logs["task_loss"], ref.ce(X, Y).mean(), rtol=1e-5)
    assert logs["trades_penalty"] > 1e-4
    np.testing.assert_allclose(logs["loss"], logs["task_loss"] + 3.0 * logs["trades_penalty"], rtol=1e-5)
    # The KL attack itself: inside the ball, and the KL it reaches beats a random point's.
    from gfa_keras.training.regularizers import _kl_per_example
    import tensorflow as tf

    attack = model.regularizer("trades").attack
    x = tf.constant(X)
    p_clean = tf.nn.softmax(model.base_model(x))
    start = tf.clip_by_value(x + 0.001 * tf.random.normal(x.shape), 0, 1)
    x_adv = attack(model.base_model, x, p_clean, objective=_kl_per_example, start=start).numpy()
    assert np.abs(x_adv - X).max() <= EPS + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    random_point = np.clip(X + RNG.uniform(-EPS, EPS, X.shape), 0, 1).astype("float32")
    kl_adv = _kl_per_example(p_clean, model.base_model(x_adv)).numpy().mean()
    kl_random = _kl_per_example(p_clean, model.base_model(random_point)).numpy().mean()
    assert kl_adv > 2 * kl_random


def test_kl_matches_numpy():
    from gfa_keras.training.regularizers import _kl_per_example

    p = softmax(RNG.normal(size=(5, 4)))
    z = RNG.normal(size=(5, 4))
    expected = (p * (np.log(p) - np.log(softmax(z)))).sum(1)
    np.testing.assert_allclose(_kl_per_example(p.astype("float32"), z.astype("float32")).numpy(), expected,
                               rtol=1e-5)


class MartReference:
    """MART's objective (Wang et al. 2020) on the NumPy linear model, the PGD point fixed:
    CE(x') - log(1.0001 - max_{k != y} p_k(x')) + lam KL(p(x) || p(x')) (1 - p_y(x))."""

    def __init__(self, ref, x_adv, lam):
        self.ref, self.x_adv, self.lam = ref, x_adv, lam

    def parts(self, w=None, b=None):
        ref = Linear.__new__(Linear)
        ref.w = self.ref.w if w is None else w
        ref.b = self.ref.b if b is None else b
        rows = np.arange(len(Y))
        p_adv, p_clean = softmax(ref.logits(self.x_adv)), softmax(ref.logits(X))
        wrong = p_adv.copy()
        wrong[rows, Y] = -1.0
        margin = -np.log(1.0001 - wrong.max(1) + 1e-12).mean()
        kl = (p_clean * (np.log(p_clean) - np.log(p_adv))).sum(1)
        weighted_kl = (kl * (1.0000001 - p_clean[rows, Y])).mean()
        return ref.ce(self.x_adv, Y).mean(), margin, weighted_kl

    def objective(self, w, b):
        ce, margin, kl = self.parts(w, b)
        return ce + margin + self.lam * kl


def mart_model(lam, steps=STEPS):
    from gfa_keras import AdversarialMargin, MisclassificationAwareKL

    return HardenedModel(linear_model(), perturbation=PGD(EPS, step_size=STEP, steps=steps, random_start=False),
                         regularizers=[AdversarialMargin(1.0), MisclassificationAwareKL(lam)])


def test_mart_loss_is_the_boosted_cross_entropy_plus_the_weighted_kl_at_the_numpy_pgd_point():
    model = compiled(mart_model(2.0))
    ref = Linear(model.base_model)
    mart = MartReference(ref, ref.pgd(X, Y), 2.0)
    ce, margin, kl = mart.parts()
    logs = one_step_logs(model)
    np.testing.assert_allclose(logs["task_loss"], ce, rtol=1e-5)
    np.testing.assert_allclose(logs["mart_margin_penalty"], margin, rtol=1e-5)
    np.testing.assert_allclose(logs["mart_kl_penalty"], kl, rtol=1e-4)
    assert kl > 1e-4 and margin > 1e-2  # both terms really are there
    np.testing.assert_allclose(logs["loss"], ce + margin + 2.0 * kl, rtol=1e-5)


def test_mart_update_matches_finite_differences_through_clean_and_perturbed_predictions():
    model = compiled(mart_model(3.0), lr=1.0)
    ref = Linear(model.base_model)
    mart = MartReference(ref, ref.pgd(X, Y), 3.0)
    w0, b0 = ref.w.copy(), ref.b.copy()
    one_step_logs(model)
    w1, b1 = (v.numpy().astype("float64") for v in model.base_model.get_layer("logits").weights)
    h = 1e-6
    for idx in [(0, 0), (2, 3), (5, 1)]:
        plus, minus = w0.copy(), w0.copy()
        plus[idx] += h
        minus[idx] -= h
        numeric = (mart.objective(plus, b0) - mart.objective(minus, b0)) / (2 * h)
        np.testing.assert_allclose(w0[idx] - w1[idx], numeric, rtol=1e-4, atol=1e-6)
    for k in range(4):
        plus, minus = b0.copy(), b0.copy()
        plus[k] += h
        minus[k] -= h
        numeric = (mart.objective(w0, plus) - mart.objective(w0, minus)) / (2 * h)
        np.testing.assert_allclose(b0[k] - b1[k], numeric, rtol=1e-4, atol=1e-6)


def test_mart_method_is_pgd_7_with_both_terms_and_reads_one_hot_labels_like_integers():
    model = harden(linear_model(), method="mart", eps=EPS)
    assert model.perturbation.steps == 7 and model.perturbation.random_start
    assert [(r.name, r.weight) for r in model.regularizers] == [("mart_margin", 1.0), ("mart_kl", 6.0)]
    assert [r.weight for r in harden(linear_model(), method="mart", eps=EPS, penalty_weight=2.5).regularizers] \
        == [1.0, 2.5]
    sparse = compiled(mart_model(2.0))
    one_hot = mart_model(2.0)
    one_hot.base_model.set_weights(sparse.base_model.get_weights())
    one_hot.compile(optimizer=keras.optimizers.SGD(0.1),
                    loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    logs_sparse = one_step_logs(sparse)
    history = one_hot.fit(X, np.eye(4, dtype="float32")[Y], batch_size=len(X), epochs=1, shuffle=False, verbose=0)
    for key in ("loss", "mart_margin_penalty", "mart_kl_penalty"):
        np.testing.assert_allclose(history.history[key][0], logs_sparse[key], rtol=1e-5)


def final_weights(model):
    model.fit(X, Y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    return [w.numpy() for w in getattr(model, "base_model", model).weights]


@pytest.mark.parametrize(
    "make, make_base",
    [
        (lambda b: harden(b, method="trades", eps=EPS, penalty_weight=0.0), lambda b: b),
        (lambda b: harden(b, method="datagrad", penalty_weight=0.0), lambda b: b),
        (lambda b: harden(b, layers=1, penalty_weight=0.0), lambda b: b),
        (lambda b: HardenedModel(b, perturbation=deterministic_pgd(),
                                 regularizers=[InputGradientNorm(p=2, weight=0.0, squared=True)]),
         lambda b: HardenedModel(b, perturbation=deterministic_pgd())),
        (lambda b: HardenedModel(b, perturbation=deterministic_pgd(),
                                 regularizers=[GradientFeatureAlignment(1, weight=0.0)]),
         lambda b: HardenedModel(b, perturbation=deterministic_pgd())),
    ],
    ids=["trades", "datagrad", "gfa", "hybrid", "gfa_pgd"],
)
def test_weight_zero_reduces_exactly_to_the_base_method(make, make_base):
    with_penalty = compiled(make(linear_model()))
    base_method = make_base(linear_model())
    if isinstance(base_method, keras.Sequential):
        base_method = compiled(base_method)
    else:
        compiled(base_method)
    for a, b in zip(final_weights(with_penalty), final_weights(base_method)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_warmup_gives_the_expected_weight_per_epoch():
    model = compiled(harden(linear_model(), method="hybrid", eps=EPS, penalty_weight=0.2))
    warmup = PenaltyWarmup("input_gradient", target=0.2, start_epoch=1, end_epoch=3)
    history = model.fit(X, Y, batch_size=6, epochs=5, verbose=0, callbacks=[warmup])
    np.testing.assert_allclose(history.history["input_gradient_weight"], [0.0, 0.0, 0.1, 0.2, 0.2], atol=1e-7)
    # With weight 0 the logged total equals the task loss; later it does not.
    assert history.history["loss"][0] == pytest.approx(history.history["task_loss"][0], rel=1e-6)
    assert history.history["loss"][4] > history.history["task_loss"][4]


def test_warmup_on_a_model_without_that_regularizer_says_which_exist():
    model = compiled(harden(linear_model(), layers=1))
    with pytest.raises(ValueError, match=r"named 'input_gradient'. Expected one of \['gfa'\]"):
        model.fit(X, Y, epochs=1, verbose=0, callbacks=[PenaltyWarmup("input_gradient", 0.1, 0, 2)])


@pytest.mark.parametrize("method", [m for m in METHODS])
def test_every_method_saves_loads_and_resumes(method, tmp_path):
    model = compiled(harden(linear_model(), method=method, eps=EPS, steps=2, layers=1), lr=0.05)
    model.fit(X, Y, batch_size=6, epochs=1, verbose=0)
    path = tmp_path / f"{method}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(model)
    assert loaded.get_config()["name"] == model.name
    np.testing.assert_allclose(loaded.predict(X, verbose=0), model.predict(X, verbose=0), atol=1e-6)
    if model.perturbation is not None:
        assert loaded.perturbation.get_config() == model.perturbation.get_config()
    assert [r.get_config() for r in loaded.regularizers] == [r.get_config() for r in model.regularizers]
    history = loaded.fit(X, Y, batch_size=6, epochs=1, verbose=0)
    assert all(math.isfinite(v[0]) for v in history.history.values())
    assert int(loaded.optimizer.iterations) == 4


def test_inner_pgd_respects_eps_and_clip_range_in_both_norms():
    import tensorflow as tf

    model = linear_model()
    x = tf.constant(np.clip(X * 1.2 - 0.1, 0, 1).astype("float32"))  # many pixels at the box edges
    for norm, eps in (("linf", 0.2), ("l2", 0.5)):
        x_adv = PGD(eps, steps=5, norm=norm, clip_min=0.0, clip_max=1.0)(model, x, tf.constant(Y)).numpy()
        delta = (x_adv - x.numpy()).reshape(len(X), -1)
        size = np.abs(delta).max(1) if norm == "linf" else np.linalg.norm(delta, axis=1)
        assert size.max() <= eps + 1e-5
        assert size.max() > 0.5 * eps
        assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda b: harden(b, method="madry"), r"Unknown method. Expected one of \['gfa', 'pgd', 'trades'"),
        (lambda b: harden(b, method="pgd"), r"needs their radius.*Received: eps=None"),
        (lambda b: harden(b, method="pgd", eps=0.0), r"eps must be a finite number > 0. Received: eps=0.0"),
        (lambda b: harden(b, method="pgd", eps=-0.1), r"Received: eps=-0.1"),
        (lambda b: harden(b, method="pgd", eps=0.1, step_size=0.0), r"Received: step_size=0.0"),
        (lambda b: harden(b, method="pgd", eps=0.1, steps=0), r"steps must be a positive integer. Received: steps=0"),
        (lambda b: harden(b, method="trades", eps=0.1, norm="l1"),
         r"Unknown norm\. Expected one of \['linf', 'l2'\]\. Received: norm='l1'"),
        (lambda b: harden(b, method="datagrad", p=3), r"Unknown norm order p. Expected one of \[1, 2\]. Received: p=3"),
        (lambda b: harden(b, method="datagrad", penalty_weight=-1.0), r"Received: weight=-1.0"),
        (lambda b: harden(b, method="mart", eps=0.1, penalty_weight=float("nan")), r"Received: weight=nan"),
        (lambda b: PenaltyWarmup("input_gradient", 0.1, start_epoch=5, end_epoch=2),
         r"ends before it starts.*start_epoch=5, end_epoch=2"),
        (lambda b: HardenedModel(b, regularizers=[InputGradientNorm(), InputGradientNorm(p=1)]),
         r"Each regularizer may appear once"),
        (lambda b: HardenedModel(b, perturbation="pgd"), r"perturbation must be None or a gfa_keras Perturbation"),
    ],
)
def test_bad_arguments_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call(linear_model())


def test_datagrad_multitask_penalty_covers_the_auxiliary_loss_gradient():
    """Ororbia et al.'s multi-task DataGrad: a second (auxiliary) output with its own loss;
    the penalty is on the input gradient of the whole loss."""
    inputs = keras.Input((2, 3))
    flat = keras.layers.Flatten()(inputs)
    init = keras.initializers.RandomNormal(stddev=1.0, seed=4)
    main = keras.layers.Dense(4, kernel_initializer=init, name="main")(flat)
    aux = keras.layers.Dense(6, kernel_initializer=init, name="aux")(flat)  # reconstructs the input
    base = keras.Model(inputs, {"main": main, "aux": aux})
    model = harden(base, method="datagrad", p=2, penalty_weight=0.5)
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss={"main": keras.losses.SparseCategoricalCrossentropy(from_logits=True), "aux": "mse"})
    flat_x = X.reshape(len(X), -1).astype("float64")
    logs = model.evaluate(X, {"main": Y, "aux": flat_x.astype("float32")}, batch_size=len(X),
                          return_dict=True, verbose=0)

    w_main, b_main = (v.numpy().astype("float64") for v in base.get_layer("main").weights)
    w_aux, b_aux = (v.numpy().astype("float64") for v in base.get_layer("aux").weights)
    g_main = (softmax(flat_x @ w_main + b_main) - np.eye(4)[Y]) @ w_main.T
    residual = flat_x @ w_aux + b_aux - flat_x
    g_aux = (2.0 / 6.0) * residual @ w_aux.T  # d mean((xW + b - target)^2) / dx, the target is data
    expected = np.linalg.norm(g_main + g_aux, axis=1).mean()
    np.testing.assert_allclose(logs["input_gradient_penalty"], expected, rtol=1e-5)
    main_only = np.linalg.norm(g_main, axis=1).mean()
    assert abs(expected - main_only) > 1e-3  # the auxiliary gradient really is part of it
    with pytest.raises(ValueError, match="needs a model with one output. Received: model .* with 2 outputs"):
        harden(base, method="pgd", eps=0.1)


def test_the_registry_describes_every_method_and_harden_follows_it():
    from gfa_keras.training.methods import DEFAULT_PENALTY_WEIGHTS, MethodSpec, get_method, register_method

    assert {n for n, s in METHODS.items() if s.needs_eps} == {"pgd", "trades", "mart", "hybrid", "gfa_pgd",
                                                              "recommended", "fgsm_rs", "n_fgsm", "n_fgsm_gradalign",
                                                              "n_fgsm_gfa"}
    assert DEFAULT_PENALTY_WEIGHTS == {"gfa": 0.01, "trades": 6.0, "mart": 6.0, "datagrad": 0.01, "hybrid": 0.1,
                                       "gfa_pgd": 0.01, "n_fgsm_gradalign": 0.2, "n_fgsm_gfa": 0.01}
    # "recommended" is PGD-5 + AWP + EMA (PGD-5 + EMA until 2026-12-02; PGD-3 + AWP + EMA
    # before that, until it overfit catastrophically on one of two seeds).
    recommended = harden(linear_model(), method="recommended", eps=EPS)
    assert recommended.weight_perturbation.gamma == 5e-3 and recommended.ema_momentum == 0.999
    assert recommended.perturbation.steps == 5 and recommended.perturbation.random_start
    assert recommended.perturbation.step_size == pytest.approx(2.5 * EPS / 5)
    assert RECOMMENDED_DEFAULTS == {"perturbation": "PGD, 5 steps of 2.5 eps / 5, random start",
                                    "awp_gamma": 5e-3, "ema_momentum": 0.999}
    custom = harden(linear_model(), method="recommended", eps=EPS, steps=3, awp_gamma=1e-2, ema_momentum=0.99)
    assert custom.perturbation.steps == 3 and custom.weight_perturbation.gamma == 1e-2
    assert custom.ema_momentum == 0.99
    # The former recipe, as the docstring gives it: no AWP.
    former = harden(linear_model(), method="pgd", steps=5, ema_momentum=0.999, eps=EPS)
    assert former.weight_perturbation is None and former.perturbation.steps == 5
    with pytest.raises(ValueError, match=r"Unknown method\. Expected one of \[.*'recommended'\]\. "
                                         r"Received: method='pdg'"):
        get_method("pdg")
    with pytest.raises(ValueError, match=r"already registered\. Pass overwrite=True.*Received: name='pgd'"):
        register_method(MethodSpec("pgd", METHODS["pgd"].build, None, True, ()))
    spec = MethodSpec("pgd3_awp",
                      lambda base, options, **kw: HardenedModel(base, perturbation=PGD(options.eps, steps=3), **kw),
                      None, True, ("awp_norm",), awp_gamma=0.01)
    register_method(spec)
    try:
        model = harden(linear_model(), method="pgd3_awp", eps=EPS)
        assert model.perturbation.steps == 3 and model.weight_perturbation.gamma == 0.01
        with pytest.raises(ValueError, match=r"needs their radius.*Received: eps=None"):
            harden(linear_model(), method="pgd3_awp")
    finally:
        del METHODS["pgd3_awp"]
