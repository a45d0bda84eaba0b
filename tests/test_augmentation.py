"""`CropFlip` against a NumPy reading of each output (a window of the zero-padded image, maybe
flipped), its randomness and seeds, the input pipeline that applies it, and bad input."""
import numpy as np
import pytest

from gfa_keras.augmentation import CropFlip
from gfa_keras.data import as_tf_dataset

RNG = np.random.default_rng(11)
IMAGES = RNG.uniform(0.1, 1.0, size=(64, 6, 5, 2)).astype("float32")  # no zeros: padding shows
PADDING = 2


def window_and_flip(image, augmented, padding):
    """The (row, column, flipped) whose window of the padded image is `augmented`, or None."""
    padded = np.pad(image, [(padding, padding), (padding, padding), (0, 0)])
    height, width = image.shape[:2]
    for flipped in (False, True):
        target = augmented[:, ::-1] if flipped else augmented
        for row in range(2 * padding + 1):
            for column in range(2 * padding + 1):
                if np.array_equal(padded[row:row + height, column:column + width], target):
                    return row, column, flipped
    return None


def test_each_image_is_a_window_of_itself_padded_with_zeros_flipped_or_not():
    augmented = CropFlip(PADDING)(IMAGES, seed=(3, 0)).numpy()
    assert augmented.shape == IMAGES.shape and augmented.dtype == np.float32
    found = [window_and_flip(image, out, PADDING) for image, out in zip(IMAGES, augmented)]
    assert None not in found
    rows, columns, flips = zip(*found)
    # every shift and both orientations occur; about half the images are flipped
    assert set(rows) == set(columns) == set(range(2 * PADDING + 1))
    assert 16 <= sum(flips) <= 48


def test_the_seed_decides_the_batch():
    crop = CropFlip(PADDING)
    same = [crop(IMAGES, seed=(5, 1)).numpy() for _ in range(2)]
    np.testing.assert_array_equal(same[0], same[1])
    assert not np.array_equal(same[0], crop(IMAGES, seed=(5, 2)).numpy())


def test_flips_alone_and_crops_alone():
    flipped = CropFlip(padding=0)(IMAGES, seed=(0, 0)).numpy()
    assert all(np.array_equal(out, image) or np.array_equal(out, image[:, ::-1])
               for image, out in zip(IMAGES, flipped))
    assert not np.array_equal(flipped, IMAGES)
    cropped = CropFlip(padding=1, flip=False)(IMAGES, seed=(0, 0)).numpy()
    assert all(window_and_flip(image, out, 1)[2] is False for image, out in zip(IMAGES, cropped))


def test_the_pipeline_augments_each_batch_by_its_seed_and_keeps_the_labels():
    labels = np.arange(len(IMAGES))
    batches = list(as_tf_dataset(IMAGES, labels, batch_size=16, shuffle=True, seed=4, augment=CropFlip(PADDING)))
    again = list(as_tf_dataset(IMAGES, labels, batch_size=16, shuffle=True, seed=4, augment=CropFlip(PADDING)))
    for (x, y), (x2, y2) in zip(batches, again):  # a resumed run that passes the epoch's seed
        np.testing.assert_array_equal(x.numpy(), x2.numpy())
        np.testing.assert_array_equal(y.numpy(), y2.numpy())
    x, y = (np.concatenate([b[i].numpy() for b in batches]) for i in (0, 1))
    assert sorted(y) == list(labels)
    assert all(window_and_flip(IMAGES[label], image, PADDING) is not None for image, label in zip(x, y))
    # batch k of seed s is augmented with the seed (s, k)
    first = IMAGES[batches[0][1].numpy()]
    np.testing.assert_array_equal(batches[0][0].numpy(), CropFlip(PADDING)(first, seed=(4, 0)).numpy())


@pytest.mark.parametrize("make, message", [
    (lambda: CropFlip(-1), r"padding must be an integer >= 0\. Received: padding=-1"),
    (lambda: CropFlip(2.5), r"Received: padding=2\.5"),
    (lambda: CropFlip(0, flip=False), r"changes nothing.*Received: padding=0, flip=False"),
    (lambda: CropFlip(2)(IMAGES[0], seed=(0, 0)), r"\(batch, height, width, channels\)\. Received: shape \(6, 5, 2\)"),
    (lambda: as_tf_dataset(IMAGES, np.zeros(64), augment="crop"),
     r"augment must be a function.*Received: augment='crop'"),
])
def test_bad_input_is_rejected_naming_it(make, message):
    with pytest.raises(ValueError, match=message):
        make()
