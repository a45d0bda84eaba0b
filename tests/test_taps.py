"""Taps: layer inputs reached through nested Functional and Sequential models, by count or by path."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import gfa_keras
from gfa_keras import GFAModel, harden
from gfa_keras.training.taps import build_feature_extractor, layer_paths, resolve_tapped_layers

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
RNG = np.random.default_rng(7)
X = RNG.uniform(size=(8, 6, 6, 2)).astype("float32")
Y = RNG.integers(0, 3, size=8).astype("int32")


def sequential_backbone():
    return keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(4, 3, name="conv_a"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.ReLU(name="relu"),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv_b"),
            keras.layers.GlobalAveragePooling2D(name="pool"),
        ],
        name="backbone",
    )


def backbone_plus_head(backbone=None):
    """The transfer-learning shape: a backbone model inside a Functional model with a new head."""
    backbone = backbone or sequential_backbone()
    inputs = keras.Input((6, 6, 2))
    outputs = keras.layers.Dense(3, name="head")(backbone(inputs))
    return keras.Model(inputs, outputs, name="classifier")


def test_layers_n_counts_weighted_layers_inside_the_backbone():
    model = backbone_plus_head()
    assert resolve_tapped_layers(model, 3) == ("backbone/conv_a", "backbone/conv_b", "head")
    assert resolve_tapped_layers(model, 1) == ("backbone/conv_a",)
    with pytest.raises(ValueError, match=r"at most 3 .*'backbone/conv_a'.*Received: layers=4"):
        resolve_tapped_layers(model, 4)


def test_layer_paths_lists_nested_layers_in_call_order():
    assert layer_paths(backbone_plus_head()) == [
        "backbone", "backbone/conv_a", "backbone/bn", "backbone/relu", "backbone/conv_b", "backbone/pool", "head"]


def test_names_address_nested_layers_by_path_and_objects_resolve_to_paths():
    model = backbone_plus_head()
    inner = model.get_layer("backbone").get_layer("conv_b")
    assert resolve_tapped_layers(model, ["head", inner]) == ("backbone/conv_b", "head")
    # A nested model's own name taps its input (the image here).
    assert resolve_tapped_layers(model, ["backbone"]) == ("backbone",)


def test_unknown_path_lists_the_valid_names():
    model = backbone_plus_head()
    with pytest.raises(ValueError) as error:
        harden(model, layers=["backbone/conv_c"])
    message = str(error.value)
    assert "No such layer: backbone/conv_c" in message
    assert "'backbone/conv_a', 'backbone/bn'" in message
    assert "Received: layers=['backbone/conv_c']" in message


def test_a_bare_inner_name_is_not_a_top_level_layer():
    with pytest.raises(ValueError, match="No such layer: conv_a"):
        harden(backbone_plus_head(), layers=["conv_a"])


def test_tapped_features_are_the_nested_layers_inputs_and_predictions_match():
    model = backbone_plus_head()
    backbone = model.get_layer("backbone")
    extractor = build_feature_extractor(model, ("backbone/conv_b", "head"))
    for training in (False, True):
        (h_conv_b, h_head), y_pred = extractor(X, training=training)
        np.testing.assert_allclose(y_pred, model(X, training=training), atol=1e-5)
    # Independent computation, in inference mode, of the two layer inputs.
    (h_conv_b, h_head), _ = extractor(X, training=False)
    before_conv_b = backbone.get_layer("relu")(backbone.get_layer("bn")(backbone.get_layer("conv_a")(X),
                                                                        training=False))
    np.testing.assert_allclose(h_conv_b, before_conv_b, atol=1e-5)
    np.testing.assert_allclose(h_head, backbone(X, training=False), atol=1e-5)


def test_alignment_at_a_nested_layer_equals_the_split_model_computation():
    model = backbone_plus_head()
    backbone = model.get_layer("backbone")
    hardened = harden(model, layers=["backbone/conv_b"], penalty_weight=0.1)
    hardened.compile(optimizer="sgd", loss=CE)
    logs = hardened.evaluate(X, Y, batch_size=len(X), return_dict=True, verbose=0)
    # Split the model at conv_b's input by calling its layers by hand.
    h = tf.constant(backbone.get_layer("relu")(backbone.get_layer("bn")(
        backbone.get_layer("conv_a")(X), training=False)))
    with tf.GradientTape() as tape:
        tape.watch(h)
        logits = model.get_layer("head")(backbone.get_layer("pool")(backbone.get_layer("conv_b")(h)))
        loss = CE(Y, logits) * len(X)
    expected = gfa_keras.gradient_feature_alignment(tape.gradient(loss, h), h).numpy().mean()
    np.testing.assert_allclose(logs["alignment_backbone_conv_b"], expected, rtol=1e-4, atol=1e-6)


def test_frozen_backbone_layers_still_count_and_train_the_head():
    model = backbone_plus_head()
    model.get_layer("backbone").trainable = False
    hardened = harden(model, layers=2, penalty_weight=0.1)
    assert hardened.tapped_layers == ("backbone/conv_a", "backbone/conv_b")
    hardened.compile(optimizer=keras.optimizers.SGD(0.1), loss=CE)
    frozen = [w.numpy() for w in model.get_layer("backbone").weights]
    head = model.get_layer("head").kernel.numpy()
    hardened.fit(X, Y, batch_size=len(X), epochs=1, verbose=0)
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(frozen, model.get_layer("backbone").weights))
    assert not np.allclose(head, model.get_layer("head").kernel.numpy())


def test_sequential_inside_sequential_and_functional_inside_functional():
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5, name="d1")], name="inner")
    outer = keras.Sequential([keras.Input((4,)), inner, keras.layers.Dense(3, name="d2")], name="outer")
    assert resolve_tapped_layers(outer, 2) == ("inner/d1", "d2")
    i = keras.Input((4,))
    mid = keras.Model(i, inner(i), name="mid")
    j = keras.Input((4,))
    top = keras.Model(j, keras.layers.Dense(3, name="top_head")(mid(j)))
    assert resolve_tapped_layers(top, 2) == ("mid/inner/d1", "top_head")
    x = RNG.uniform(size=(5, 4)).astype("float32")
    (h,), y_pred = build_feature_extractor(top, ("mid/inner/d1",))(x)
    np.testing.assert_allclose(h, x)
    np.testing.assert_allclose(y_pred, top(x), atol=1e-6)


def two_output_backbone():
    i = keras.Input((6, 6, 2))
    trunk = keras.layers.Conv2D(4, 3, name="trunk")(i)
    used = keras.layers.GlobalAveragePooling2D(name="used_pool")(trunk)
    unused = keras.layers.Dense(2, name="side_dense")(keras.layers.Flatten(name="side_flat")(trunk))
    return keras.Model(i, [used, unused], name="two_heads")


def test_a_tap_on_a_branch_the_output_does_not_use_is_refused_by_name():
    backbone = two_output_backbone()
    inputs = keras.Input((6, 6, 2))
    features, _ = backbone(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(features))
    # Counting skips the dead branch.
    assert resolve_tapped_layers(model, 2) == ("two_heads/trunk", "head")
    with pytest.raises(ValueError) as error:
        harden(model, layers=["two_heads/side_dense"])
    message = str(error.value)
    assert "does not depend on layer 'two_heads/side_dense'" in message
    assert "Received: layers=['two_heads/side_dense']" in message


def test_backbone_plus_head_trains_and_round_trips_as_keras(tmp_path):
    model = backbone_plus_head()
    hardened = harden(model, layers=3, penalty_weight=0.05)
    hardened.compile(optimizer="adam", loss=CE)
    history = hardened.fit(X, Y, batch_size=4, epochs=1, verbose=0)
    assert set(history.history) >= {"alignment_backbone_conv_a", "alignment_backbone_conv_b", "alignment_head"}
    path = tmp_path / "nested.keras"
    hardened.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, GFAModel)
    assert loaded.tapped_layers == ("backbone/conv_a", "backbone/conv_b", "head")
    a = hardened.evaluate(X, Y, batch_size=len(X), return_dict=True, verbose=0)
    b = loaded.evaluate(X, Y, batch_size=len(X), return_dict=True, verbose=0)
    np.testing.assert_allclose(b["gfa_penalty"], a["gfa_penalty"], rtol=1e-5)
    # evaluate takes the gradient through the loaded model's fresh taps graph.
    np.testing.assert_allclose(b["alignment_backbone_conv_b"], a["alignment_backbone_conv_b"], rtol=1e-5)


def test_keras_applications_model_used_directly():
    model = keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), weights=None, classes=3,
                                                classifier_activation=None, include_preprocessing=False)
    taps = resolve_tapped_layers(model, 3)
    assert taps[0] == "conv"  # the stem convolution: its input is the image
    assert all("/" not in name for name in taps)
    (first, _, _), y_pred = build_feature_extractor(model, taps)(
        np.ones((2, 32, 32, 3), "float32"), training=False)
    assert first.shape == (2, 32, 32, 3)


def test_keras_hub_backbone_inside_its_classifier():
    keras_hub = pytest.importorskip("keras_hub")
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 32],
        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block",
        image_shape=(16, 16, 3))
    classifier = keras_hub.models.ResNetImageClassifier(backbone=backbone, num_classes=3)
    taps = resolve_tapped_layers(classifier, 3)
    assert taps == (f"{backbone.name}/conv1_conv", f"{backbone.name}/stack0_block0_1_conv",
                    f"{backbone.name}/stack0_block0_2_conv")
    x = RNG.uniform(size=(2, 16, 16, 3)).astype("float32")
    _, y_pred = build_feature_extractor(classifier, taps)(x, training=False)
    np.testing.assert_allclose(y_pred, classifier(x, training=False), atol=1e-5)
