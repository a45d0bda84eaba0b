"""The warm-up rule and the cyclic learning rate, value by value."""
import keras
import numpy as np
import pytest

from gfa_keras.training.schedules import CyclicLearningRate, PenaltyWarmup, warmup_value


def test_warmup_value_is_zero_then_linear_then_flat():
    got = [warmup_value(e, 0.3, start_epoch=2, end_epoch=5) for e in range(8)]
    np.testing.assert_allclose(got, [0, 0, 0, 0.1, 0.2, 0.3, 0.3, 0.3], atol=1e-12)
    assert warmup_value(4, 0.3, start_epoch=4, end_epoch=4) == 0.3  # a zero-length ramp jumps


def test_cyclic_learning_rate_is_triangular():
    schedule = CyclicLearningRate(0.01, 0.11, half_cycle_steps=4)
    got = [float(schedule(step)) for step in range(10)]
    expected = [0.01, 0.035, 0.06, 0.085, 0.11, 0.085, 0.06, 0.035, 0.01, 0.035]
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_cyclic_learning_rate_drives_an_optimizer_and_round_trips():
    schedule = CyclicLearningRate(0.0, 0.2, half_cycle_steps=2)
    optimizer = keras.optimizers.SGD(schedule)
    variable = keras.Variable(np.zeros(1, "float32"))
    rates = []
    for _ in range(4):
        rates.append(float(optimizer.learning_rate))
        optimizer.apply([np.ones(1, "float32")], [variable])
    np.testing.assert_allclose(rates, [0.0, 0.1, 0.2, 0.1], atol=1e-7)
    np.testing.assert_allclose(variable.numpy(), [-0.4], atol=1e-6)  # the sum of the rates applied
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert restored.get_config() == schedule.get_config()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: CyclicLearningRate(0.1, 0.01, 10), r"max_lr must be >= min_lr"),
        (lambda: CyclicLearningRate(-0.1, 0.1, 10), r"min_lr must be a finite number >= 0. Received: min_lr=-0.1"),
        (lambda: CyclicLearningRate(0.0, 0.1, 0),
         r"half_cycle_steps must be a positive integer. Received: half_cycle_steps=0"),
        (lambda: PenaltyWarmup("gfa", target=-1.0), r"target must be a finite number >= 0. Received: target=-1.0"),
        (lambda: PenaltyWarmup("gfa", 0.1, start_epoch=-1),
         r"start_epoch must be an integer >= 0. Received: start_epoch=-1"),
    ],
)
def test_bad_schedules_raise(make, message):
    with pytest.raises(ValueError, match=message):
        make()
