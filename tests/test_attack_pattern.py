"""What every registered attack shares (gfa_keras/attacks/_common.py): the same checks and
messages, an empty batch returned as is, one compiled function per model and settings that
does not keep the model alive, and the helpers written once (restart merge, binary search)."""
import gc
import inspect
import weakref

import keras
import numpy as np
import pytest
import tensorflow as tf

from gfa_keras.attacks import ATTACKS, _common

# Small budgets: these tests check the shared behaviour, not the attacks' strength.
FAST_OPTIONS = {
    "steps": 2, "restarts": 1, "binary_search_steps": 1, "num_samples": 2, "population": 4,
    "num_target_classes": 2,
}


def tiny_image_model(seed=0):
    """An untrained 10-class model on 8x8x1 images (logits)."""
    init = keras.initializers.GlorotUniform(seed=seed)
    inputs = keras.Input((8, 8, 1))
    outputs = keras.layers.Dense(10, kernel_initializer=init)(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, outputs)


def call(name, model, x, y, eps=0.1, **extra):
    spec = ATTACKS[name]
    accepted = inspect.signature(spec.fn).parameters
    options = {k: v for k, v in FAST_OPTIONS.items() if k in accepted}
    return spec.fn(model, x, y, eps=eps, norm=spec.norms[0], **options, **extra)


def images(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.2, 0.8, [n, 8, 8, 1]).astype("float32"), rng.integers(0, 10, n).astype("int32")


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_every_attack_follows_the_shared_pattern(name):
    model = tiny_image_model()
    x, y = images(3)
    x_adv = call(name, model, x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == tf.float32
    # One compiled function per model and settings, reused by the next call.
    compiled = list(_common._COMPILED[model].values())
    assert compiled
    call(name, model, x[:2], y[:2])
    assert list(_common._COMPILED[model].values()) == compiled

    empty = call(name, model, x[:0], y[:0])
    assert empty.shape == (0, 8, 8, 1)
    # The labels are checked against the model's logits even when there is nothing to do (eps 0).
    for eps in (0.1, 0.0):
        with pytest.raises(ValueError, match=r"Labels must be < num_classes=10\. Received: max\(y\)=12"):
            call(name, model, x, np.array([1, 12, 3], "int32"), eps=eps)
    np.testing.assert_array_equal(call(name, model, x, y, eps=0.0).numpy(), x)

    # The cache holds the model only weakly: a compiled attack never keeps it alive.
    alive = weakref.ref(model)
    del model, compiled
    gc.collect()
    assert alive() is None


TARGETED = sorted(name for name, spec in ATTACKS.items() if "targets" in inspect.signature(spec.fn).parameters)


def test_the_targeted_attacks_are_the_expected_ones():
    assert TARGETED == ["apgd_t", "ead", "fab", "one_pixel", "square"]


@pytest.mark.parametrize("name", TARGETED)
@pytest.mark.parametrize(
    "targets, message",
    [
        (np.array([1, 2, 3]), r"Each target must differ from the true label\. Received a target equal to y\."),
        (np.array([2, 10, 4]), r"targets must lie in \[0, 9\]\. Received: \[2, 10, 4\]"),
        (np.array([2, 3]), r"targets must be integer class labels of the shape of y\. Received: "
                           r"targets\.dtype=int64, targets\.shape=\(2,\), y\.shape=\(3,\)"),
        (np.array([2.0, 3.0, 4.0]), r"targets must be integer class labels of the shape of y"),
    ],
)
def test_one_target_check_with_one_message(name, targets, message):
    x, _ = images(3)
    with pytest.raises(ValueError, match=message):
        call(name, tiny_image_model(), x, np.array([1, 2, 5], "int32"), targets=targets)


def test_keep_best_restart_prefers_fooling_then_higher_loss():
    x = tf.zeros([4, 2])
    best = _common.no_restart_yet(x)
    first = (tf.fill([4, 2], 1.0), tf.constant([1.0, 5.0, 1.0, 2.0]), tf.constant([False, False, True, False]))
    best = _common.keep_best_restart(best, first)
    np.testing.assert_array_equal(best[0].numpy(), np.ones([4, 2]))  # anything beats the clean start
    second = (tf.fill([4, 2], 2.0), tf.constant([3.0, 4.0, 9.0, 0.0]), tf.constant([False, False, False, True]))
    x_best, loss, fooled = _common.keep_best_restart(best, second)
    # 0: higher loss wins; 1: lower loss loses; 2: a fooling point is kept whatever the loss;
    # 3: a fooling point beats a higher loss.
    np.testing.assert_array_equal(x_best.numpy()[:, 0], [2.0, 1.0, 1.0, 2.0])
    np.testing.assert_array_equal(loss.numpy(), [3.0, 5.0, 1.0, 0.0])
    np.testing.assert_array_equal(fooled.numpy(), [False, False, True, True])


def test_bisect_constant_multiplies_until_bounded_then_halves_the_interval():
    const, lower, upper = tf.constant([1.0, 1.0]), tf.zeros([2]), tf.fill([2], _common.NO_UPPER_BOUND)
    history = []
    for succeeded in ([False, True], [False, False], [True, True], [False, True]):
        const, lower, upper = _common.bisect_constant(const, lower, upper, tf.constant(succeeded))
        history.append(const.numpy().tolist())
    # Example 0 fails twice (1 -> 10 -> 100), succeeds at 100 (midpoint of [10, 100] = 55),
    # then fails at 55 (midpoint of [55, 100]). Example 1 succeeds at 1 (midpoint 0.5),
    # fails at 0.5 ([0.5, 1] -> 0.75), succeeds at 0.75 (-> 0.625) and again (-> 0.5625).
    assert history == [[10.0, 0.5], [100.0, 0.75], [55.0, 0.625], [77.5, 0.5625]]
