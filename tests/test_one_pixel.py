import keras
import numpy as np
import pytest
import tensorflow as tf
from linear_attack_cases import B10, W10, X10, linf_ball_bounds

from gfa_keras.attacks import get_attack, one_pixel, perturbation_norms

# A two-class model on 4x4 images whose class-1 logit rises with a bump around
# pixel (2, 3): at the blank image only that pixel, set above 0.5, flips the class.
ROWS, COLS = np.meshgrid(np.arange(4), np.arange(4), indexing="ij")
BUMP = (10.0 * np.exp(-np.hypot(ROWS - 2, COLS - 3))).astype("float32")


def bump_model(images):
    score = tf.reduce_sum(tf.reshape(images, [-1, 4, 4]) * BUMP, axis=[1, 2]) - 5.0
    return tf.stack([tf.zeros_like(score), score], axis=1)


def changed_pixels(x, x_adv):
    return (np.abs(x_adv - x) > 0).reshape(len(x), -1).sum(1)


def test_registered_as_black_box_linf():
    spec = get_attack("one_pixel")
    assert spec.fn is one_pixel and not spec.white_box and spec.norms == ("linf",)


def test_finds_the_only_pixel_that_flips_the_class():
    x = np.zeros([3, 4, 4, 1], "float32")
    y = np.zeros(3, "int32")
    x_adv = one_pixel(bump_model, x, y, eps=1.0, population=20, steps=30, seed=0).numpy()
    assert np.all(np.argmax(bump_model(x_adv).numpy(), axis=1) == 1)
    np.testing.assert_array_equal(changed_pixels(x, x_adv), [1, 1, 1])
    assert np.all(x_adv[:, 2, 3, 0] > 0.5)


def test_eps_bounds_the_change_even_when_that_makes_it_fail():
    x = np.zeros([3, 4, 4], "float32")  # rank-3 images work too
    y = np.zeros(3, "int32")
    x_adv = one_pixel(bump_model, x, y, eps=0.4, population=20, steps=10).numpy()
    assert x_adv.shape == x.shape
    # 10 * 0.4 < 5: no single pixel within eps can flip the class.
    assert np.all(np.argmax(bump_model(x_adv).numpy(), axis=1) == 0)
    assert np.all(changed_pixels(x, x_adv) <= 1) and np.abs(x_adv - x).max() <= 0.4 + 1e-6


def test_never_beats_the_exact_few_pixel_optimum_of_a_linear_model():
    # On a linear model each pixel's contribution to z_k - z_y is linear in its value,
    # so the best change of one pixel is at an end of its allowed range, and the best
    # `pixels` changes are the largest of those per-pixel gains: a point can be broken
    # with `pixels` pixels exactly when, for some k, z_k - z_y plus the sum of the
    # `pixels` largest gains is positive. The evolution may miss such points, but it
    # can never break any other one (it would have changed more pixels or left the ball).
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    model.layers[-1].set_weights([W10, B10])
    x, y = X10, np.argmax(X10 @ W10 + B10, axis=1).astype("int32")
    low, high = linf_ball_bounds(x, 1.0)
    g = W10[None] - W10[:, y].T[:, :, None]  # [n, pixels, classes]: w_k - w_y
    gains = np.maximum(g * low[:, :, None], g * high[:, :, None])
    z = x @ W10 + B10
    for pixels in (1, 3):
        best = z - z[np.arange(len(y)), y][:, None] + -np.sort(-gains, axis=1)[:, :pixels].sum(axis=1)
        best[np.arange(len(y)), y] = -np.inf
        breakable = best.max(axis=1) > 0
        x_adv = one_pixel(model, x.reshape(-1, 8, 8, 1), y, eps=1.0, pixels=pixels, population=50, steps=30).numpy()
        fooled = np.argmax(model(x_adv), axis=1) != y
        assert breakable.any() and not np.any(fooled & ~breakable)
        assert np.all(changed_pixels(x.reshape(-1, 8, 8, 1), x_adv) <= pixels)


def test_trained_model_few_pixels_within_ball_and_box(trained_digits_model, digits):
    # DE's success rate has no closed form (the exact bound is tested above on a
    # linear model); here: it finds something, and every result obeys the threat model.
    _, (x, y) = digits
    x, y = x[:30], y[:30]
    x_adv = one_pixel(trained_digits_model, x, y, eps=1.0, pixels=3, population=50, steps=20)
    pred = np.argmax(trained_digits_model.predict(x_adv, verbose=0), axis=1)
    assert np.any(pred != y)
    assert np.all(changed_pixels(x, x_adv.numpy()) <= 3)
    assert float(tf.reduce_min(x_adv)) >= 0.0 and float(tf.reduce_max(x_adv)) <= 1.0
    bounded = one_pixel(trained_digits_model, x, y, eps=0.2, pixels=3, population=20, steps=5)
    assert np.all(perturbation_norms(x, bounded, "linf").numpy() <= 0.2 + 1e-6)


def test_explicit_target_and_eps_zero():
    x = np.zeros([2, 4, 4, 1], "float32")
    y = np.ones(2, "int32")  # the model says 0 on the blank image
    np.testing.assert_array_equal(one_pixel(bump_model, x, y, eps=0.0, population=8, steps=2).numpy(), x)
    x_adv = one_pixel(bump_model, x, np.zeros(2, "int32"), eps=1.0, population=20, steps=30,
                      targets=np.ones(2, "int32")).numpy()
    assert np.all(np.argmax(bump_model(x_adv).numpy(), axis=1) == 1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"eps": 0.5, "norm": "l2"},
         r"one_pixel supports only the Linf threat model\. Expected norm='linf'\. Received: norm='l2'"),
        ({"eps": None}, r"needs a perturbation bound\. Received: eps=None"),
        ({"eps": 0.5, "pixels": 0}, r"pixels must be a positive integer\. Received: pixels=0"),
        ({"eps": 0.5, "population": 3}, r"population must be an integer >= 4\. Received: population=3"),
        ({"eps": 0.5, "mutation": 0.0}, r"mutation must be a finite number > 0 and <= 2\. Received: mutation=0\.0"),
        ({"eps": 0.5, "steps": 0}, r"steps must be a positive integer\. Received: steps=0"),
    ],
)
def test_invalid_options_raise(kwargs, match):
    x = np.zeros([2, 4, 4, 1], "float32")
    with pytest.raises(ValueError, match=match):
        one_pixel(bump_model, x, np.zeros(2, "int32"), **kwargs)


def test_non_image_input_raises():
    with pytest.raises(ValueError, match=r"one_pixel needs a batch of images .*Received: x\.shape=\(2, 16\)"):
        one_pixel(lambda v: v, np.zeros([2, 16], "float32"), np.zeros(2, "int32"), eps=0.5)


def test_rank_3_batches_reach_a_model_that_expects_them():
    # The evolution works on [batch, height, width, 1]; a Keras model built for
    # [batch, height, width] must still receive that shape.
    inputs = keras.Input((5, 7))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(inputs)))
    x = np.random.default_rng(0).uniform(size=(4, 5, 7)).astype("float32")
    y = np.argmax(model(x), axis=1)
    x_adv = one_pixel(model, x, y, eps=1.0, population=8, steps=5).numpy()
    assert x_adv.shape == x.shape and np.all(changed_pixels(x, x_adv) <= 1)
