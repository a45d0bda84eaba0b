"""GFAModel: the penalty it trains with, its second-order update, Keras integration."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import gfa_keras
from gfa_keras import GFAModel, harden
from gfa_keras.training.taps import MODEL_INPUT

from conftest import make_mlp

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
RNG = np.random.default_rng(3)
X = RNG.uniform(size=(16, 3, 2)).astype("float32")
Y = RNG.integers(0, 4, size=16).astype("int32")


def tiny_sequential(seed=0, dtype=None):
    init = keras.initializers.GlorotUniform(seed=seed)
    binit = keras.initializers.RandomNormal(stddev=0.1, seed=seed + 1)
    return keras.Sequential(
        [
            keras.Input((3, 2)),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(5, activation="relu", kernel_initializer=init, bias_initializer=binit,
                               name="hidden", dtype=dtype),
            keras.layers.Dense(4, kernel_initializer=init, bias_initializer=binit, name="out", dtype=dtype),
        ],
        name="tiny",
    )


def numpy_reference(model, x, y, sample_weight=None):
    """Task loss, per-layer cosines and penalty of the tiny model, by hand-written backprop."""
    w1, b1 = (v.numpy().astype("float64") for v in model.get_layer("hidden").weights)
    w2, b2 = (v.numpy().astype("float64") for v in model.get_layer("out").weights)
    h1 = x.reshape(len(x), -1).astype("float64")
    z = h1 @ w1 + b1
    h2 = np.maximum(z, 0)
    logits = h2 @ w2 + b2
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    sw = np.ones(len(x)) if sample_weight is None else sample_weight.astype("float64")
    per_example_loss = -np.log(p[np.arange(len(x)), y])
    # Keras' default reduction: sum of weighted losses over the batch size.
    loss = np.sum(per_example_loss * sw) / len(x)
    g_logits = (p - np.eye(4)[y]) * sw[:, None] / len(x)
    g_h2 = g_logits @ w2.T
    g_h1 = (g_h2 * (z > 0)) @ w1.T

    def cos(g, h):
        return (g * h).sum(1) / (np.linalg.norm(g, axis=1) * np.linalg.norm(h, axis=1) + 1e-12)

    cosines = [cos(g_h1, h1), cos(g_h2, h2)]
    weights = sw / sw.sum()
    penalty = sum(np.sum((1 - c) * weights) for c in cosines)
    return loss, [np.sum(c * weights) for c in cosines], penalty


def compiled(model, optimizer=None):
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)  # in the current floatx
    model.compile(optimizer=optimizer or keras.optimizers.SGD(0.1), loss=loss, metrics=["accuracy"])
    return model


def test_evaluate_reports_task_loss_alignment_and_penalty_of_the_reference():
    model = compiled(harden(tiny_sequential(), layers=2, penalty_weight=0.5))
    logs = model.evaluate(X, Y, batch_size=len(X), return_dict=True, verbose=0)
    loss, alignments, penalty = numpy_reference(model.base_model, X, Y)
    assert model.tapped_layers == ("hidden", "out")
    np.testing.assert_allclose(logs["task_loss"], loss, rtol=1e-5)
    np.testing.assert_allclose(logs["alignment_hidden"], alignments[0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(logs["alignment_out"], alignments[1], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(logs["gfa_penalty"], penalty, rtol=1e-4)
    np.testing.assert_allclose(logs["loss"], loss + 0.5 * penalty, rtol=1e-5)
    assert logs["gfa_penalty"] > 0.1  # never the constant zero of Keras' default test_step


def test_sample_weight_is_honoured_in_task_loss_and_penalty():
    sw = RNG.uniform(0.0, 2.0, size=len(X)).astype("float32")
    model = compiled(harden(tiny_sequential(), layers=2, penalty_weight=0.5))
    logs = model.evaluate(X, Y, sample_weight=sw, batch_size=len(X), return_dict=True, verbose=0)
    loss, alignments, penalty = numpy_reference(model.base_model, X, Y, sample_weight=sw)
    np.testing.assert_allclose(logs["task_loss"], loss, rtol=1e-5)
    np.testing.assert_allclose(logs["gfa_penalty"], penalty, rtol=1e-4)


def weights_after_steps(model, steps=3, **fit_kwargs):
    model.fit(X, Y, batch_size=8, epochs=steps // 2 + 1, shuffle=False, verbose=0, **fit_kwargs)
    return [w.numpy() for w in model.trainable_weights]


def test_penalty_weight_zero_reproduces_plain_training():
    plain = compiled(tiny_sequential())
    hardened = compiled(harden(tiny_sequential(), layers=2, penalty_weight=0.0))
    for a, b in zip(weights_after_steps(plain), weights_after_steps(hardened)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def total_objective_float64(weights, x, y, penalty_weight):
    """task + beta * penalty of the tiny model as a function of its weights, computed
    with first-order tapes only, for finite differences."""
    w1, b1, w2, b2 = weights
    x = tf.constant(x.reshape(len(x), -1), tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(x)
        z = x @ w1 + b1
        h2 = tf.nn.relu(z)
        tape.watch(h2)
        logits = h2 @ w2 + b2
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
    g1, g2 = tape.gradient(loss, [x, h2])

    def cos(g, h):
        return tf.reduce_sum(g * h, 1) / (tf.norm(g, axis=1) * tf.norm(h, axis=1) + 1e-12)

    penalty = tf.reduce_mean((1 - cos(g1, x)) + (1 - cos(g2, h2)))
    return float(loss + penalty_weight * penalty)


def test_update_matches_finite_differences_of_the_total_objective():
    beta = 2.0
    model = compiled(harden(tiny_sequential(), layers=2, penalty_weight=beta), keras.optimizers.SGD(1.0))
    theta = [w.numpy().astype("float64") for w in model.trainable_weights]
    model.fit(X, Y, batch_size=len(X), epochs=1, shuffle=False, verbose=0)
    update = [w.numpy() - t for w, t in zip(model.trainable_weights, theta)]

    h = 1e-6
    for i, t in enumerate(theta):
        numeric = np.zeros_like(t)
        for idx in np.ndindex(t.shape):
            plus = [p.copy() for p in theta]
            minus = [p.copy() for p in theta]
            plus[i][idx] += h
            minus[i][idx] -= h
            numeric[idx] = (total_objective_float64(plus, X, Y, beta)
                            - total_objective_float64(minus, X, Y, beta)) / (2 * h)
        np.testing.assert_allclose(-update[i], numeric, rtol=1e-4, atol=1e-6)

    plain = compiled(harden(tiny_sequential(), layers=2, penalty_weight=0.0), keras.optimizers.SGD(1.0))
    plain.fit(X, Y, batch_size=len(X), epochs=1, shuffle=False, verbose=0)
    plain_update = [w.numpy() - t for w, t in zip(plain.trainable_weights, theta)]
    assert max(np.abs(a - b).max() for a, b in zip(update, plain_update)) > 1e-3


def test_functional_model_taps_resolve_and_train(digits):
    (x, y), _ = digits
    model = compiled(harden(make_mlp(), layers=3, penalty_weight=0.01), "adam")
    assert model.tapped_layers == ("dense_1", "dense_2", "logits")
    history = model.fit(x[:256], y[:256], epochs=2, batch_size=64, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    for name in ("alignment_dense_1", "alignment_dense_2", "alignment_logits"):
        assert -1.0 <= history.history[name][-1] <= 1.0


def test_layers_given_as_names_or_objects_are_stored_as_names_in_graph_order():
    base = make_mlp()
    model = harden(base, layers=[base.get_layer("logits"), "dense_1"])
    assert model.tapped_layers == ("dense_1", "logits")
    assert model.get_config()["layers"] == ["dense_1", "logits"]


class SubclassedClassifier(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.flatten = keras.layers.Flatten()
        self.hidden = keras.layers.Dense(5, activation="relu")
        self.out = keras.layers.Dense(4)

    def call(self, x):
        return self.out(self.hidden(self.flatten(x)))


def test_subclassed_model_is_aligned_at_its_input():
    base = SubclassedClassifier()
    base(X[:1])
    model = compiled(harden(base, layers=1, penalty_weight=0.1))
    assert model.tapped_layers == (MODEL_INPUT,)
    logs = model.evaluate(X, Y, batch_size=len(X), return_dict=True, verbose=0)
    x = tf.constant(X)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = CE(Y, base(x))
    expected = gfa_keras.gradient_feature_alignment(tape.gradient(loss, x), x).numpy().mean()
    np.testing.assert_allclose(logs[f"alignment_{MODEL_INPUT}"], expected, rtol=1e-4, atol=1e-6)
    model.fit(X, Y, epochs=1, verbose=0)


def test_subclassed_model_with_inner_layers_says_what_to_do():
    base = SubclassedClassifier()
    base(X[:1])
    with pytest.raises(ValueError, match="subclassed model.*Functional or Sequential API.*layers=3"):
        harden(base, layers=3)


def test_save_load_identical_predictions_and_training_resumes(tmp_path, digits):
    (x, y), _ = digits
    model = compiled(harden(make_mlp(), layers=3, penalty_weight=0.05), "adam")
    model.fit(x[:128], y[:128], epochs=1, batch_size=32, verbose=0)
    path = tmp_path / "hardened.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, GFAModel)
    assert loaded.tapped_layers == model.tapped_layers and loaded.penalty_weight == 0.05
    np.testing.assert_allclose(loaded.predict(x[:32], verbose=0), model.predict(x[:32], verbose=0), atol=1e-6)
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) == 4
    # The loaded model's taps are a fresh graph: its alignment equals the original's.
    a = model.evaluate(x[:64], y[:64], return_dict=True, verbose=0)
    b = loaded.evaluate(x[:64], y[:64], return_dict=True, verbose=0)
    np.testing.assert_allclose(b["gfa_penalty"], a["gfa_penalty"], rtol=1e-5)
    history = loaded.fit(x[:128], y[:128], epochs=1, batch_size=32, verbose=0)
    assert math.isfinite(history.history["gfa_penalty"][0])
    assert int(loaded.optimizer.iterations) == 8


def test_model_checkpoint_and_early_stopping_work_on_the_wrapper(tmp_path, digits):
    (x, y), (xv, yv) = digits
    model = compiled(harden(make_mlp(), layers=2, penalty_weight=0.01), "adam")
    best = tmp_path / "best.keras"
    callbacks = [
        keras.callbacks.ModelCheckpoint(best, monitor="val_gfa_penalty", mode="min", save_best_only=True),
        keras.callbacks.ModelCheckpoint(tmp_path / "epoch{epoch}.weights.h5", save_weights_only=True),
        keras.callbacks.EarlyStopping(monitor="val_alignment_dense_1", mode="max", patience=0,
                                      min_delta=10.0),
    ]
    history = model.fit(x[:128], y[:128], validation_data=(xv[:64], yv[:64]), epochs=5, batch_size=32,
                        callbacks=callbacks, verbose=0)
    # min_delta=10 can never be met by a cosine: training stops after patience+1 epochs.
    assert len(history.history["loss"]) == 2
    assert keras.models.load_model(best).tapped_layers == model.tapped_layers
    restored = harden(make_mlp(seed=9), layers=2)
    restored.load_weights(tmp_path / "epoch2.weights.h5")
    for a, b in zip(restored.weights, model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.fixture
def mixed_float16():
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")


def test_mixed_precision_policy_trains_with_finite_penalty(mixed_float16, digits):
    (x, y), _ = digits
    base = make_mlp()
    assert base.get_layer("dense_1").compute_dtype == "float16"
    model = compiled(harden(base, layers=3, penalty_weight=0.01), "adam")
    history = model.fit(x[:128], y[:128], epochs=2, batch_size=32, verbose=0)
    for key in ("loss", "gfa_penalty", "alignment_dense_1", "alignment_logits"):
        assert all(math.isfinite(v) for v in history.history[key]), key
    assert 0.0 < history.history["gfa_penalty"][-1] < 6.0


def test_dead_relus_and_zero_inputs_never_give_nan():
    base = tiny_sequential()
    base.get_layer("hidden").bias.assign(-100.0 * np.ones(5))  # every ReLU dead: zero features
    model = compiled(harden(base, layers=2, penalty_weight=1.0))
    x = X.copy()
    x[:4] = 0.0  # zero input images
    history = model.fit(x, Y, epochs=2, batch_size=8, verbose=0)
    for values in history.history.values():
        assert all(math.isfinite(v) for v in values)
    assert all(np.all(np.isfinite(w.numpy())) for w in model.weights)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"layers": 0}, r"at least 1\. Received: layers=0"),
        ({"layers": 5}, r"Expected at most 2 \(\['hidden', 'out'\]\)\. Received: layers=5"),
        ({"layers": ["nope"]}, r"No such layer: nope\. Existing layers are: \['flatten', 'hidden', 'out'\]"),
        ({"layers": ["out", "out"]}, "names a layer twice"),
        ({"layers": "hidden"}, "positive int or a list"),
        ({"penalty_weight": -1.0}, r"Received: penalty_weight=-1\.0"),
        ({"penalty_weight": float("nan")}, r"Received: penalty_weight=nan"),
        ({"penalty_weight": float("inf")}, r"Received: penalty_weight=inf"),
        ({"penalty_weight": "0.1"}, r"penalty_weight must be a finite number >= 0\. Received: penalty_weight='0.1'"),
        # A bad epsilon is reported as itself, not as a penalty_weight error.
        ({"epsilon": 0.0}, r"^epsilon must be a finite number > 0\. Received: epsilon=0\.0$"),
        ({"epsilon": float("nan")}, r"^epsilon must be a finite number > 0\. Received: epsilon=nan$"),
        ({"seed": -1}, r"^seed must be None or a non-negative integer\. Received: seed=-1$"),
        ({"seed": 1.5}, r"^seed must be None or a non-negative integer\. Received: seed=1\.5$"),
        ({"seed": True}, r"^seed must be None or a non-negative integer\. Received: seed=True$"),
    ],
)
def test_bad_arguments_raise_keras_style_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        harden(tiny_sequential(), **kwargs)


def test_the_noise_seed_follows_keras_global_seed_and_round_trips(tmp_path):
    seeds = []
    for global_seed in (1, 1, 2):
        keras.utils.set_random_seed(global_seed)
        seeds.append(harden(tiny_sequential(), layers=1).seed)
    assert seeds[0] == seeds[1] != seeds[2]
    model = harden(tiny_sequential(), layers=1, seed=12345)
    path = tmp_path / "seeded.keras"
    model.save(path)
    assert keras.models.load_model(path).seed == 12345 == model.get_config()["seed"]


def test_gfa_model_names_the_argument_that_is_wrong():
    with pytest.raises(ValueError, match=r"^epsilon must be a finite number > 0\. Received: epsilon=-1\.0$"):
        GFAModel(tiny_sequential(), layers=1, penalty_weight=0.1, epsilon=-1.0)
    with pytest.raises(ValueError, match=r"^penalty_weight must be a finite number >= 0\. "
                                         r"Received: penalty_weight=-2$"):
        GFAModel(tiny_sequential(), layers=1, penalty_weight=-2)
    with pytest.raises(ValueError, match=r"at least 1\. Received: layers=0"):
        GFAModel(tiny_sequential(), layers=0, penalty_weight=0.1)


def test_layer_object_from_another_model_is_rejected():
    other = tiny_sequential()
    with pytest.raises(ValueError, match="does not belong"):
        harden(tiny_sequential(), layers=[other.get_layer("hidden")])


def test_embedding_as_first_tapped_layer_is_not_differentiable():
    inputs = keras.Input((6,), dtype="int32")
    h = keras.layers.Embedding(20, 4, name="embed")(inputs)
    outputs = keras.layers.Dense(3, name="dense")(keras.layers.Flatten()(h))
    base = keras.Model(inputs, outputs)
    with pytest.raises(ValueError, match="'embed' is not differentiable"):
        harden(base, layers=1)
    assert harden(base, layers=["dense"]).tapped_layers == ("dense",)


def test_non_keras_and_unbuilt_models_are_rejected():
    with pytest.raises(ValueError, match="Expected a Keras 3 model.*Received: model of type str"):
        harden("model.keras")
    unbuilt = keras.Sequential([keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="is not built"):
        harden(unbuilt)


def test_other_backend_raises_runtime_error_with_the_fix(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(RuntimeError, match="KERAS_BACKEND=tensorflow.*Received: keras.backend.backend\\(\\)='jax'"):
        harden(tiny_sequential())


def test_class_weight_reaches_the_task_loss_and_the_penalty():
    class_weight = {0: 2.0, 1: 0.5, 2: 1.0, 3: 0.0}
    model = compiled(harden(tiny_sequential(), layers=2, penalty_weight=0.5), keras.optimizers.SGD(0.0))
    history = model.fit(X, Y, batch_size=len(X), epochs=1, class_weight=class_weight, shuffle=False, verbose=0)
    sw = np.array([class_weight[int(c)] for c in Y], "float32")
    loss, _, penalty = numpy_reference(model.base_model, X, Y, sample_weight=sw)
    np.testing.assert_allclose(history.history["task_loss"][0], loss, rtol=1e-5)
    np.testing.assert_allclose(history.history["gfa_penalty"][0], penalty, rtol=1e-4)


def test_default_taps_are_kernel_layers_not_batch_normalization():
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, name="conv_a")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.Conv2D(4, 3, name="conv_b")(keras.layers.ReLU()(h))
    h = keras.layers.LayerNormalization(name="ln")(h)
    outputs = keras.layers.Dense(10, name="head")(keras.layers.Flatten()(h))
    model = harden(keras.Model(inputs, outputs), layers=3)
    assert model.tapped_layers == ("conv_a", "conv_b", "head")


def test_the_first_step_traces_train_step_once():
    # Without a strategy Keras would build the optimizer and the compiled metrics inside
    # the first trace, and tf.function would trace the whole second-order step twice.
    inputs = keras.Input((6, 6, 1))
    h = keras.layers.BatchNormalization()(keras.layers.Conv2D(2, 3)(inputs))
    base = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(h)))
    model = compiled(harden(base, layers=2, penalty_weight=0.1), "adam")
    traces = []
    train_step = model.train_step
    model.train_step = lambda data: (traces.append(1), train_step(data))[1]
    x = RNG.uniform(size=(8, 6, 6, 1)).astype("float32")
    y = np.arange(8, dtype="int32") % 3
    model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert len(traces) == 1
    assert int(model.optimizer.iterations) == 4
