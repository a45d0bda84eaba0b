"""Every training method (and the recipes' parts: AWP, weight averaging) on the networks Keras users harden:
keras.applications ResNet50V2, MobileNetV3Small, EfficientNetB0 (weights=None, 32x32) and a KerasHub
ResNet (random weights from a config). Nothing is downloaded.

For each method one training step must (a) change the weights and keep them finite, and
(b) leave batch normalization's moving statistics exactly where ONE plain training forward
pass on the training input (the clean batch, or the adversarial batch for PGD training)
leaves them: the inner attack runs in inference mode and the penalties' extra passes do not
move them. With AWP that one pass runs at the perturbed weights w + delta (as in Wu et al.'s
code), so the reference pass runs there too, with the delta the step drew; a reference at w
would be off by far more than rounding in a deep net (ResNet50V2 at gamma=1e-7, which
changes only 39% of the weights at all: 11 of its 98 moving means and variances more than
1e-4 relative away, by up to 1.5e-3), while the step matches the reference at w + delta to
the last bit.
The steps run eagerly: one step of a ResNet50V2 traces for a minute on 2 cores,
while the same step runs in seconds eagerly; graph mode is covered by the KerasHub test, by
tests/test_weight_perturbation.py and by the .keras round trip.
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

from gfa_keras import harden
from gfa_keras.training.batch_norm import batch_normalization_layers, frozen_moving_statistics
from gfa_keras.training.model import HardenedModel
from gfa_keras.training.perturbations import FGSM, PGD
from gfa_keras.training.regularizers import AdversarialMargin, GradAlign, MisclassificationAwareKL, TradesKL
from gfa_keras.training.weight_perturbation import DEFAULT_AWP_GAMMA, AdversarialWeightPerturbation

EPS = 8 / 255
CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
RNG = np.random.default_rng(11)
X = RNG.uniform(size=(4, 32, 32, 3)).astype("float32")
Y = np.array([0, 1, 2, 1], "int32")
APPLICATION_KWARGS = dict(input_shape=(32, 32, 3), weights=None, classes=3, classifier_activation=None)


def resnet50v2():
    return keras.applications.ResNet50V2(**APPLICATION_KWARGS)


def mobilenet_v3_small():
    return keras.applications.MobileNetV3Small(**APPLICATION_KWARGS)


def efficientnet_b0():
    model = keras.applications.EfficientNetB0(**APPLICATION_KWARGS)
    # Its stochastic depth (Dropout before each residual Add) would draw other masks in the
    # reference pass than in the step, and the batch statistics after it would differ.
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0
    return model


def keras_hub_resnet():
    """A KerasHub ResNet backbone inside its image classifier (built from a config)."""
    keras_hub = pytest.importorskip("keras_hub")
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 32],
        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block",
        image_shape=(32, 32, 3))
    return keras_hub.models.ResNetImageClassifier(backbone=backbone, num_classes=3)


def pgd_reference(base, x, y):
    """PGD training's training input: the attack is deterministic here (no random start)."""
    return PGD(EPS, steps=2, random_start=False)(base, tf.constant(x), tf.constant(y))


def fgsm_reference(base, x, y):
    return FGSM(EPS)(base, tf.constant(x), tf.constant(y))


def clean_reference(base, x, y):
    return x


class RecordingAWP(AdversarialWeightPerturbation):
    """AWP that keeps the last weight perturbation it drew (the steps run eagerly), so
    that the reference pass can run at the same perturbed weights."""

    def __init__(self, gamma=DEFAULT_AWP_GAMMA):
        super().__init__(gamma)
        self.drawn = []

    def deltas(self, variables, gradients, gamma=None):
        deltas = super().deltas(variables, gradients, gamma)
        self.drawn = [(variable, delta.numpy()) for variable, delta in zip(variables, deltas)]
        return deltas


# name -> (wrapper factory, the step's training input computed from the initial weights)
METHODS = {
    "gfa_first": (lambda base: harden(base, layers=1, penalty_weight=0.1), clean_reference),
    "gfa_deep": (lambda base: harden(base, layers=3, penalty_weight=0.1), clean_reference),
    "pgd": (lambda base: HardenedModel(base, perturbation=PGD(EPS, steps=2, random_start=False)),
            pgd_reference),
    "trades": (lambda base: harden(base, method="trades", eps=EPS, steps=2), clean_reference),
    # MART's clean pass must leave the moving statistics to the training forward pass.
    "mart": (lambda base: HardenedModel(base, perturbation=PGD(EPS, steps=2, random_start=False),
                                        regularizers=[AdversarialMargin(), MisclassificationAwareKL()]),
             pgd_reference),
    "fgsm_gradalign": (lambda base: HardenedModel(base, perturbation=FGSM(EPS),
                                                  regularizers=[GradAlign(weight=0.2, eps=EPS)]),
                       fgsm_reference),
    # AWP's extra ascent pass (at its default gamma) and the weight average.
    "pgd_awp_ema": (lambda base: HardenedModel(base, perturbation=PGD(EPS, steps=2, random_start=False),
                                               weight_perturbation=RecordingAWP(), ema_momentum=0.999),
                    pgd_reference),
    "trades_awp": (lambda base: HardenedModel(base, regularizers=[TradesKL(eps=EPS, steps=2)],
                                              weight_perturbation=RecordingAWP()),
                   clean_reference),
}


def moving_statistics(base):
    return [v.numpy().copy() for bn in batch_normalization_layers(base)
            for v in (bn.moving_mean, bn.moving_variance)]


def check_every_method(base, methods=tuple(METHODS)):
    """One eager training step per method from the same initial weights; see the module docstring."""
    assert batch_normalization_layers(base), "the architecture should have batch normalization"
    initial = base.get_weights()
    for name in methods:
        make, training_input = METHODS[name]
        base.set_weights(initial)
        model = make(base)
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss=CE, run_eagerly=True)
        logs = model.train_on_batch(X, Y, return_dict=True)
        assert np.isfinite(logs["loss"]), (name, logs)
        after = moving_statistics(base)
        trained = base.get_weights()

        base.set_weights(initial)
        x_train = training_input(base, X, Y)  # the attack runs at the unperturbed weights, as in the step
        if model.weight_perturbation is not None:
            assert model.weight_perturbation.drawn, name
            for variable, delta in model.weight_perturbation.drawn:
                variable.assign(variable.numpy() + delta)
        base(x_train, training=True)  # the one plain training forward pass
        expected = moving_statistics(base)
        for got, want in zip(after, expected):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=name)
        assert all(np.isfinite(w).all() for w in trained), name
        kernels = [w for w, w0 in zip(trained, initial) if w.ndim == 4]
        assert any(not np.array_equal(w, w0) for w, w0 in zip(kernels, [w for w in initial if w.ndim == 4])), name
    base.set_weights(initial)


def test_frozen_moving_statistics_keeps_them_and_normalizes_with_the_batch():
    bn = keras.layers.BatchNormalization(momentum=0.5)
    model = keras.Sequential([keras.Input((3,)), bn])
    x = RNG.normal(3.0, 2.0, size=(16, 3)).astype("float32")
    with frozen_moving_statistics(model):
        y = model(x, training=True)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), np.zeros(3))
    np.testing.assert_array_equal(bn.moving_variance.numpy(), np.ones(3))
    np.testing.assert_allclose(y.numpy().mean(axis=0), 0.0, atol=1e-5)  # the batch's own statistics
    assert bn.momentum == 0.5  # restored
    model(x, training=True)
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.5 * x.mean(axis=0), rtol=1e-5)


def test_trades_moves_the_statistics_like_one_clean_forward_pass_in_graph_mode():
    """The same property as below, traced (a small conv net with batch norm)."""
    base = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3), keras.layers.BatchNormalization(),
                             keras.layers.ReLU(), keras.layers.Flatten(), keras.layers.Dense(3)])
    x = RNG.uniform(size=(8, 8, 8, 1)).astype("float32")
    y = np.arange(8, dtype="int32") % 3
    initial = base.get_weights()
    base(x, training=True)
    expected = moving_statistics(base)
    base.set_weights(initial)
    model = harden(base, method="trades", eps=0.1, steps=3)
    model.compile(optimizer="sgd", loss=CE)
    model.train_on_batch(x, y)
    for got, want in zip(moving_statistics(base), expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_every_method_on_mobilenet_v3_small():
    check_every_method(mobilenet_v3_small())


def test_every_method_on_a_keras_hub_resnet():
    check_every_method(keras_hub_resnet())


@pytest.mark.slow
def test_every_method_on_resnet50v2():
    check_every_method(resnet50v2())


@pytest.mark.slow
def test_every_method_on_efficientnet_b0():
    check_every_method(efficientnet_b0())


def test_deep_gfa_on_a_keras_hub_resnet_fits_in_graph_mode_and_round_trips(tmp_path):
    base = keras_hub_resnet()
    model = harden(base, layers=3, penalty_weight=0.1)
    assert model.tapped_layers[0] == f"{base.backbone.name}/conv1_conv"
    model.compile(optimizer="adam", loss=CE)
    history = model.fit(X, Y, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["gfa_penalty"][0])
    path = tmp_path / "hub_resnet.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.tapped_layers == model.tapped_layers
    np.testing.assert_allclose(loaded.predict(X, verbose=0), model.predict(X, verbose=0), atol=1e-5)
