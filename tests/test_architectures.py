"""Built-in architectures: the paper's layer sizes (parameter counts by hand), logits, seeds, bad input."""
import keras
import numpy as np
import pytest

import gfa_keras
from gfa_keras.architectures import ARCHITECTURES, build_architecture


def test_mlp_is_the_papers_256_256_mlp_with_logits():
    model = build_architecture("mlp", (28, 28, 1), 10)
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert [d.units for d in dense] == [256, 256, 10]
    assert model.count_params() == (784 * 256 + 256) + (256 * 256 + 256) + (256 * 10 + 10)
    assert dense[-1].activation is keras.activations.linear  # logits, not probabilities


@pytest.mark.parametrize("shape, pooled", [((32, 32, 3), 8), ((8, 8, 1), 2)])
def test_small_cnn_is_conv_pool_conv_pool_dense_dense(shape, pooled):
    model = build_architecture("small_cnn", shape, 10)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Flatten", "Dense", "Dense"]
    channels = shape[-1]
    expected = ((9 * channels * 32 + 32) + (9 * 32 * 64 + 64) + (pooled * pooled * 64 * 128 + 128)
                + (128 * 10 + 10))
    assert model.count_params() == expected
    assert model.output_shape == (None, 10)


def test_madry_cnn_is_madry_et_al_mnist_model():
    model = build_architecture("madry_cnn", (28, 28, 1), 10)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Flatten", "Dense", "Dense"]
    assert [c.kernel_size for c in model.layers if isinstance(c, keras.layers.Conv2D)] == [(5, 5), (5, 5)]
    # The count of the MNIST challenge model (MadryLab/mnist_challenge): 3,274,634 parameters.
    assert model.count_params() == 3_274_634
    assert model.name == "madry_cnn" and model.output_shape == (None, 10)


def test_the_seed_fixes_the_initial_weights():
    first = build_architecture("mlp", (8, 8, 1), 10, seed=3).get_weights()
    again = build_architecture("mlp", (8, 8, 1), 10, seed=3).get_weights()
    other = build_architecture("mlp", (8, 8, 1), 10, seed=4).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], other[0])


def test_deep_gfa_taps_the_three_dense_layers_of_the_mlp():
    model = build_architecture("mlp", (8, 8, 1), 10)
    hardened = gfa_keras.harden(model, layers=3)
    assert list(hardened.tapped_layers) == ["hidden_1", "hidden_2", "logits"]


def test_resnet18_is_the_cifar_resnet18():
    model = build_architecture("resnet18", (32, 32, 3), 10)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    # 1 stem + 8 blocks x 2 convolutions + 3 projection shortcuts; 17 + 1 Dense = the "18".
    assert len(convs) == 1 + 16 + 3
    assert sum("shortcut" not in c.name for c in convs) + 1 == 18
    # The published CIFAR ResNet-18 count (kuangliu/pytorch-cifar): 11,173,962 parameters.
    assert model.count_params() - sum(
        int(np.prod(w.shape)) for bn in model.layers if isinstance(bn, keras.layers.BatchNormalization)
        for w in (bn.moving_mean, bn.moving_variance)) == 11_173_962
    assert model.get_layer("stage4_block2_out").output.shape == (None, 4, 4, 512)
    assert model.output_shape == (None, 10)


def test_deep_gfa_taps_the_resnet18_stem_and_first_block():
    hardened = gfa_keras.harden(build_architecture("resnet18", (8, 8, 3), 10), layers=3)
    assert list(hardened.tapped_layers) == ["stem_conv", "stage1_block1_conv1", "stage1_block1_conv2"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(name="resnet", input_shape=(8, 8, 1), num_classes=10),
     "Unknown architecture. Expected one of ['madry_cnn', 'mlp', 'resnet18', 'small_cnn']. Received: name='resnet'"),
    (dict(name="resnet18", input_shape=(4, 4, 3), num_classes=10), "at least 8x8"),
    (dict(name="mlp", input_shape=(64,), num_classes=10), "(height, width, channels)"),
    (dict(name="mlp", input_shape=(8, 0, 1), num_classes=10), "positive integers"),
    (dict(name="small_cnn", input_shape=(3, 3, 1), num_classes=10), "at least 4x4"),
    (dict(name="madry_cnn", input_shape=(3, 3, 1), num_classes=10), "madry_cnn pools twice"),
    (dict(name="mlp", input_shape=(8, 8, 1), num_classes=1),
     "num_classes must be an integer >= 2. Received: num_classes=1"),
])
def test_bad_arguments_say_what_was_expected(kwargs, message):
    with pytest.raises(ValueError) as error:
        build_architecture(**kwargs)
    assert message in str(error.value)


def test_registry_lists_the_four_names():
    assert sorted(ARCHITECTURES) == ["madry_cnn", "mlp", "resnet18", "small_cnn"]
