"""Tests for gfa_keras.data: every loader on small data made here, never a network."""

import gzip
import os
import struct
import sys
import time
import zipfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from sklearn import datasets as sk_datasets

from gfa_keras import data

# --- Digits ----------------------------------------------------------------------


def _sorted_rows(x, y):
    """Rows (flattened image, label) in lexicographic order, to compare multisets."""
    rows = np.concatenate([x.reshape(len(x), -1), y[:, None].astype(np.float32)], axis=1)
    return rows[np.lexsort(rows.T[::-1])]


def test_digits_shapes_range_and_values_equal_sklearn_images_over_16():
    splits = data.load_digits(test_fraction=0.2, seed=0)
    assert splits.x_train.shape == (1437, 8, 8, 1) and splits.x_test.shape == (360, 8, 8, 1)
    assert splits.x_train.dtype == np.float32 and splits.y_train.dtype == np.int32
    assert splits.input_shape == (8, 8, 1) and splits.num_classes == 10
    assert splits.class_names == tuple("0123456789")
    assert 0.0 <= splits.x_train.min() and splits.x_train.max() == 1.0
    # Train and test together are exactly sklearn's examples, each once.
    bunch = sk_datasets.load_digits()
    expected = _sorted_rows((bunch.images / 16.0).astype(np.float32), bunch.target)
    x_all = np.concatenate([splits.x_train, splits.x_test])[..., 0]
    y_all = np.concatenate([splits.y_train, splits.y_test])
    np.testing.assert_array_equal(_sorted_rows(x_all, y_all), expected)


def test_digits_split_is_stratified():
    splits = data.load_digits(test_fraction=0.25, seed=3)
    total = np.bincount(sk_datasets.load_digits().target, minlength=10)
    test_counts = np.bincount(splits.y_test, minlength=10)
    assert np.all(np.abs(test_counts - 0.25 * total) <= 1)
    np.testing.assert_array_equal(np.bincount(splits.y_train, minlength=10), total - test_counts)


def test_digits_split_is_deterministic_per_seed():
    first, again, other = (data.load_digits(seed=s) for s in (5, 5, 6))
    np.testing.assert_array_equal(first.x_test, again.x_test)
    np.testing.assert_array_equal(first.y_train, again.y_train)
    assert not np.array_equal(first.x_test, other.x_test)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_digits_rejects_bad_test_fraction(fraction):
    with pytest.raises(ValueError, match=rf"test_fraction must be a finite number > 0 and < 1\. "
                                         rf"Received: test_fraction={fraction}"):
        data.load_digits(test_fraction=fraction)


def test_dataset_splits_properties_and_validation():
    x, y = np.zeros((3, 2, 2, 1), np.float32), np.array([0, 1, 1], np.int32)
    splits = data.DatasetSplits(x, y, x[:2], y[:2], 2, ["a", "b"], "toy")
    assert splits.train[0] is x and splits.test[1].tolist() == [0, 1]
    assert splits.class_names == ("a", "b")
    assert repr(splits) == (
        "DatasetSplits(name='toy', train=3, test=2, input_shape=(2, 2, 1), num_classes=2)"
    )
    with pytest.raises(ValueError, match="y_train.shape=\\(2,\\)"):
        data.DatasetSplits(x, y[:2], x, y, 2, ("a", "b"), "toy")
    with pytest.raises(ValueError, match="one class name per class"):
        data.DatasetSplits(x, y, x, y, 3, ("a", "b"), "toy")


# --- IDX / Fashion-MNIST ---------------------------------------------------------

_TYPE_CODES = {np.uint8: 0x08, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D}


def _idx_bytes(array):
    """The IDX encoding of `array`, written independently of the reader."""
    code = _TYPE_CODES[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def _write_idx(path, array, gzipped):
    payload = _idx_bytes(array)
    if gzipped:
        with gzip.open(f"{path}.gz", "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def _tiny_fashion_mnist(directory, gzipped=True):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (6, 5, 4), dtype=np.uint8),
        "y_train": np.array([0, 9, 3, 3, 1, 2], np.uint8),
        "x_test": rng.integers(0, 256, (2, 5, 4), dtype=np.uint8),
        "y_test": np.array([7, 0], np.uint8),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for key, stem in data._FASHION_MNIST_FILES.items():
        _write_idx(directory / stem, arrays[key], gzipped)
    return arrays


@pytest.mark.parametrize("gzipped", [True, False])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
        np.array([-300, 0, 7, 32000], np.int16),
        np.array([[1, -2], [70000, 3]], np.int32),
        np.array([0.5, -1.25, 3e8], np.float32),
    ],
    ids=["uint8", "int16", "int32", "float32"],
)
def test_read_idx_round_trip(tmp_path, array, gzipped):
    _write_idx(tmp_path / "a-idx", array, gzipped)
    result = data.read_idx(tmp_path / ("a-idx.gz" if gzipped else "a-idx"))
    assert result.dtype == array.dtype and result.dtype.isnative
    np.testing.assert_array_equal(result, array)


@pytest.mark.parametrize("gzipped", [True, False])
def test_fashion_mnist_reads_idx_files_gz_and_raw(tmp_path, gzipped):
    arrays = _tiny_fashion_mnist(tmp_path, gzipped)
    splits = data.load_fashion_mnist(data_dir=tmp_path)
    assert splits.x_train.shape == (6, 5, 4, 1) and splits.x_train.dtype == np.float32
    np.testing.assert_array_equal(splits.x_train[..., 0], arrays["x_train"] / np.float32(255))
    np.testing.assert_array_equal(splits.x_test[..., 0], arrays["x_test"] / np.float32(255))
    assert splits.y_train.dtype == np.int32
    assert splits.y_train.tolist() == [0, 9, 3, 3, 1, 2] and splits.y_test.tolist() == [7, 0]
    assert splits.class_names[9] == "Ankle boot" and splits.name == "fashion_mnist"


def test_fashion_mnist_env_var_comes_before_debian_dir(tmp_path, monkeypatch):
    arrays = _tiny_fashion_mnist(tmp_path / "env")
    debian = tmp_path / "debian"
    _tiny_fashion_mnist(debian)
    (debian / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not read")
    monkeypatch.setenv(data.FASHION_MNIST_DIR_ENV, str(tmp_path / "env"))
    monkeypatch.setattr(data, "FASHION_MNIST_DEBIAN_DIR", str(debian))
    splits = data.load_fashion_mnist()
    np.testing.assert_array_equal(splits.y_test, arrays["y_test"])


def test_fashion_mnist_missing_lists_every_place_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv(data.FASHION_MNIST_DIR_ENV, str(tmp_path / "from_env"))
    monkeypatch.setattr(data, "FASHION_MNIST_DEBIAN_DIR", str(tmp_path / "debian"))
    with pytest.raises(FileNotFoundError) as info:
        data.load_fashion_mnist()
    message = str(info.value)
    assert str(tmp_path / "from_env") in message and str(tmp_path / "debian") in message
    assert "apt-get install dataset-fashion-mnist" in message and "data_dir" in message
    # An explicit directory is the only place looked in.
    with pytest.raises(FileNotFoundError, match="the data_dir argument") as info:
        data.load_fashion_mnist(data_dir=tmp_path / "given")
    looked_in = str(info.value).split("Looked in:\n")[1].split("\nTo get them")[0]
    assert looked_in == f"  - {tmp_path / 'given'} (from the data_dir argument)"


def test_fashion_mnist_needs_all_four_files(tmp_path):
    _tiny_fashion_mnist(tmp_path)
    os.remove(tmp_path / "t10k-images-idx3-ubyte.gz")
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        data.load_fashion_mnist(data_dir=tmp_path)


def test_corrupt_idx_files_give_errors_naming_the_file(tmp_path):
    _tiny_fashion_mnist(tmp_path, gzipped=False)
    labels = tmp_path / "train-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-1])
    with pytest.raises(ValueError, match=f"Truncated IDX file: {labels}.*Expected 14 bytes"):
        data.load_fashion_mnist(data_dir=tmp_path)

    bad_magic = tmp_path / "bad-magic"
    bad_magic.write_bytes(b"\x1f\x8b\x08\x00rest")
    with pytest.raises(ValueError, match=f"Not an IDX file: {bad_magic}"):
        data.read_idx(bad_magic)

    short_header = tmp_path / "short-header"
    short_header.write_bytes(bytes([0, 0, 8, 3, 0, 0, 0, 2]))
    with pytest.raises(ValueError, match=f"Truncated IDX file: {short_header}.*header of 16"):
        data.read_idx(short_header)

    cut_gzip = tmp_path / "cut.gz"
    with gzip.open(cut_gzip, "wb") as f:
        f.write(_idx_bytes(np.zeros((50, 4), np.uint8)))
    cut_gzip.write_bytes(cut_gzip.read_bytes()[:-10])
    with pytest.raises(ValueError, match=f"Corrupt gzip file {cut_gzip}"):
        data.read_idx(cut_gzip)


def test_fashion_mnist_rejects_labels_out_of_range(tmp_path):
    _tiny_fashion_mnist(tmp_path)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([3, 12], np.uint8), True)
    with pytest.raises(ValueError, match="labels in 0..9.*from 3 to 12"):
        data.load_fashion_mnist(data_dir=tmp_path)


# --- CIFAR-10 JPEGs --------------------------------------------------------------

# Flat-colour images survive JPEG almost exactly; each class gets its own grey level.
_CLASS_GREY = {"truck": 200, "airplane": 40, "cat": 120}


def _jpeg(grey, size=(6, 6)):
    image = tf.fill((*size, 3), tf.constant(grey, tf.uint8))
    return tf.io.encode_jpeg(image, quality=100).numpy()


def _tiny_jpeg_zip(path, prefix="", per_class=(3, 2)):
    with zipfile.ZipFile(path, "w") as archive:
        for split, count in zip(("train", "test"), per_class):
            for class_name, grey in _CLASS_GREY.items():  # not in sorted order
                for i in reversed(range(count)):
                    # The file index shifts the grey level so file order is checkable.
                    archive.writestr(f"{prefix}{split}/{class_name}/{i:04d}.jpg", _jpeg(grey + i))
            archive.writestr(f"{prefix}{split}/cat/notes.txt", b"ignored")
    return path


def _expected_grey(class_name, index):
    return (_CLASS_GREY[class_name] + index) / 255.0


def test_cifar10_jpeg_zip_labels_order_and_values(tmp_path):
    splits = data.load_cifar10_jpeg(_tiny_jpeg_zip(tmp_path / "tiny.zip"))
    assert splits.class_names == ("airplane", "cat", "truck") and splits.num_classes == 3
    assert splits.x_train.shape == (9, 6, 6, 3) and splits.x_train.dtype == np.float32
    # Classes interleaved one at a time, files in name order within a class.
    assert splits.y_train.tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2]
    assert splits.y_test.tolist() == [0, 1, 2, 0, 1, 2]
    expected = [
        _expected_grey(splits.class_names[label], position // 3)
        for position, label in enumerate(splits.y_train)
    ]
    np.testing.assert_allclose(splits.x_train.mean(axis=(1, 2, 3)), expected, atol=1.5 / 255)
    assert 0.0 <= splits.x_train.min() and splits.x_train.max() <= 1.0


def test_cifar10_jpeg_folder_and_prefixed_zip_match_zip(tmp_path):
    plain = data.load_cifar10_jpeg(_tiny_jpeg_zip(tmp_path / "tiny.zip"))
    prefixed = data.load_cifar10_jpeg(_tiny_jpeg_zip(tmp_path / "p.zip", prefix="cifar/"))
    with zipfile.ZipFile(tmp_path / "tiny.zip") as archive:
        archive.extractall(tmp_path / "folder")
    folder = data.load_cifar10_jpeg(tmp_path / "folder")
    for other in (prefixed, folder):
        np.testing.assert_array_equal(other.x_train, plain.x_train)
        np.testing.assert_array_equal(other.y_test, plain.y_test)


def test_cifar10_jpeg_limit_per_class_takes_first_files(tmp_path, monkeypatch):
    monkeypatch.setenv(data.CIFAR10_JPEG_ENV, str(_tiny_jpeg_zip(tmp_path / "tiny.zip")))
    splits = data.load_cifar10_jpeg(limit_per_class=1)
    assert splits.y_train.tolist() == [0, 1, 2] and splits.y_test.tolist() == [0, 1, 2]
    np.testing.assert_allclose(
        splits.x_train.mean(axis=(1, 2, 3)),
        [_expected_grey(name, 0) for name in splits.class_names],
        atol=1.5 / 255,
    )


@pytest.mark.parametrize("limit", [0, -1, 2.5, True])
def test_cifar10_jpeg_rejects_bad_limit(tmp_path, limit):
    with pytest.raises(ValueError, match=rf"^limit_per_class must be a positive integer\. "
                                         rf"Received: limit_per_class={limit}$"):
        data.load_cifar10_jpeg(tmp_path, limit_per_class=limit)


def test_cifar10_jpeg_missing_path_says_where_and_how(tmp_path, monkeypatch):
    monkeypatch.delenv(data.CIFAR10_JPEG_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        data.load_cifar10_jpeg()
    message = str(info.value)
    assert str((tmp_path / data.CIFAR10_JPEG_DEFAULT_PATH).resolve()) in message
    assert data.CIFAR10_JPEG_ENV in message and "train/<class>/*.jpg" in message


def test_cifar10_jpeg_bad_files_are_named(tmp_path):
    path = _tiny_jpeg_zip(tmp_path / "tiny.zip")
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("test/truck/9999.jpg", _jpeg(10, size=(7, 6)))
    with pytest.raises(ValueError, match="same size.*\\(7, 6\\) in .*test/truck/9999.jpg"):
        data.load_cifar10_jpeg(path)

    with zipfile.ZipFile(tmp_path / "broken.zip", "w") as archive:
        for split in ("train", "test"):
            archive.writestr(f"{split}/cat/0.jpg", _jpeg(5))
        archive.writestr("train/cat/1.jpg", b"\xff\xd8 not really a jpeg")
    with pytest.raises(ValueError, match="Cannot decode JPEG .*train/cat/1.jpg"):
        data.load_cifar10_jpeg(tmp_path / "broken.zip")


def test_cifar10_jpeg_needs_same_classes_in_both_splits(tmp_path):
    with zipfile.ZipFile(tmp_path / "odd.zip", "w") as archive:
        archive.writestr("train/cat/0.jpg", _jpeg(5))
        archive.writestr("test/dog/0.jpg", _jpeg(5))
    with pytest.raises(ValueError, match="train classes \\('cat',\\), test classes \\('dog',\\)"):
        data.load_cifar10_jpeg(tmp_path / "odd.zip")


# --- TensorFlow Datasets (offline) -------------------------------------------------

_TINY_IMAGES = (np.arange(5 * 28 * 28) * 7 % 256).astype(np.uint8).reshape(5, 28, 28, 1)
_TINY_LABELS = np.array([3, 1, 9, 0, 1])


@pytest.fixture(autouse=True)
def _no_tfds_download(monkeypatch):
    """Any attempt to download or prepare a TFDS data set fails the test at once.

    Module-scoped fixtures (`tfds_dir`, which prepares its data) run before it.
    """

    def refuse(*args, **kwargs):
        raise AssertionError("gfa_keras.data must never download or prepare a TFDS data set")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", refuse)


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    """A data_dir with two tiny prepared data sets: an unregistered name and "mnist"."""
    tfds.disable_progress_bar()
    data_dir = tmp_path_factory.mktemp("tfds")
    for name, version, names in [
        ("gfa_keras_tiny", "1.0.0", [f"class_{i}" for i in range(10)]),
        ("mnist", "3.0.1", None),  # registered in TFDS: loads through its own code
    ]:
        features = tfds.features.FeaturesDict(
            {
                "image": tfds.features.Image(shape=(28, 28, 1)),
                "label": tfds.features.ClassLabel(names=names, num_classes=None if names else 10),
            }
        )
        examples = {
            "train": [(i, {"image": _TINY_IMAGES[i], "label": _TINY_LABELS[i]}) for i in range(5)],
            "test": [
                (key, {"image": _TINY_IMAGES[i], "label": _TINY_LABELS[i]})
                for key, i in enumerate((4, 0))  # stored in key order
            ],
        }
        tfds.dataset_builders.store_as_tfds_dataset(
            name=name,
            version=version,
            features=features,
            split_datasets=examples,
            data_dir=data_dir,
            disable_shuffling=True,
        )
    return data_dir


@pytest.mark.parametrize("name", ["gfa_keras_tiny", "mnist"])
def test_load_tfds_offline_by_name(tfds_dir, name):
    splits = data.load_tfds(name, data_dir=tfds_dir)
    assert splits.x_train.shape == (5, 28, 28, 1) and splits.x_train.dtype == np.float32
    np.testing.assert_array_equal(splits.x_train, _TINY_IMAGES / np.float32(255))
    np.testing.assert_array_equal(splits.x_test, _TINY_IMAGES[[4, 0]] / np.float32(255))
    assert splits.y_train.dtype == np.int32 and splits.y_train.tolist() == _TINY_LABELS.tolist()
    assert splits.y_test.tolist() == [1, 3] and splits.num_classes == 10 and splits.name == name
    if name == "gfa_keras_tiny":
        assert splits.class_names[9] == "class_9"


def test_load_dataset_dispatches_to_tfds(tfds_dir):
    for name in ("tfds:gfa_keras_tiny", "gfa_keras_tiny"):
        splits = data.load_dataset(name, data_dir=tfds_dir, split=("train[:2]", "test"))
        assert splits.y_train.tolist() == [3, 1] and splits.y_test.tolist() == [1, 3]


def test_load_tfds_fails_fast_when_not_prepared(tmp_path):
    start = time.monotonic()
    with pytest.raises(FileNotFoundError) as info:
        data.load_tfds("mnist", data_dir=tmp_path)
    assert time.monotonic() - start < 30
    message = str(info.value)
    assert str(tmp_path / "mnist") in message and "tfds build mnist" in message


def test_load_tfds_unknown_name_and_bad_arguments(tfds_dir):
    with pytest.raises(data.UnknownDatasetError, match="Unknown TFDS data set: 'no_such_set'"):
        data.load_tfds("no_such_set", data_dir=tfds_dir)
    with pytest.raises(data.UnknownDatasetError) as info:
        data.load_dataset("no_such_set", data_dir=tfds_dir)
    assert "['cifar10_jpeg', 'digits', 'fashion_mnist']" in str(info.value)
    with pytest.raises(ValueError, match="two split names"):
        data.load_tfds("gfa_keras_tiny", data_dir=tfds_dir, split="train")
    with pytest.raises(ValueError, match="no feature 'img'.*\\['image', 'label'\\]"):
        data.load_tfds("gfa_keras_tiny", data_dir=tfds_dir, image_key="img")


def test_missing_tensorflow_datasets_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # makes the import fail
    with pytest.raises(ImportError, match="pip install gfa_keras\\[tfds\\]"):
        data.load_tfds("mnist")
    with pytest.raises(
        ImportError, match="'mnist' is not a built-in data set \\(\\['cifar10_jpeg'"
    ):
        data.load_dataset("mnist")


def test_load_dataset_builtin_names():
    splits = data.load_dataset(seed=2)
    np.testing.assert_array_equal(splits.x_test, data.load_digits(seed=2).x_test)


# --- tf.data pipeline --------------------------------------------------------------


def test_as_tf_dataset_batches_in_order():
    x = np.arange(10 * 2, dtype=np.float32).reshape(10, 2, 1, 1)
    y = np.arange(10, dtype=np.int32)
    batches = list(data.as_tf_dataset(x, y, batch_size=4))
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]
    assert batches[0][0].shape[1:] == (2, 1, 1) and batches[0][0].dtype == tf.float32
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), x)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y)


def test_as_tf_dataset_shuffles_pairs_reproducibly():
    x = np.arange(20, dtype=np.float32)[:, None] * 10
    y = np.arange(20, dtype=np.int32)
    w = np.arange(20, dtype=np.float32) / 2

    dataset = data.as_tf_dataset(x, y, batch_size=8, shuffle=True, seed=1, sample_weight=w)
    xs, ys, ws = (np.concatenate(part) for part in zip(*list(dataset)))
    second_epoch_y = np.concatenate([batch[1] for batch in dataset])
    np.testing.assert_array_equal(np.sort(ys), y)
    np.testing.assert_array_equal(xs[:, 0], ys * 10)  # pairs stay together
    np.testing.assert_array_equal(ws, ys / 2)
    assert not np.array_equal(ys, y) and not np.array_equal(ys, second_epoch_y)
    same_seed = data.as_tf_dataset(x, y, batch_size=8, shuffle=True, seed=1)
    np.testing.assert_array_equal(np.concatenate([batch[1] for batch in same_seed]), ys)


def test_as_tf_dataset_epoch_seeds_give_other_orders_and_the_autotuner_is_off():
    x, y = np.zeros((40, 1), np.float32), np.arange(40, dtype=np.int32)
    orders = [np.concatenate([b[1] for b in data.as_tf_dataset(x, y, batch_size=16, shuffle=True, seed=epoch)])
              for epoch in (0, 1, 0)]
    assert not np.array_equal(orders[0], orders[1])
    np.testing.assert_array_equal(orders[0], orders[2])  # a resumed run replays epoch 0's batches
    # The autotuner's thread is what held up each per-epoch fit call's return (see its docstring).
    assert data.as_tf_dataset(x, y).options().autotune.enabled is False


def test_as_tf_dataset_validates_arguments():
    x, y = np.zeros((4, 2), np.float32), np.zeros(3, np.int32)
    with pytest.raises(ValueError, match="lengths \\[4, 3\\]"):
        data.as_tf_dataset(x, y)
    with pytest.raises(ValueError, match=r"^batch_size must be a positive integer\. Received: batch_size=0$"):
        data.as_tf_dataset(x, y[:1].repeat(4), batch_size=0)
