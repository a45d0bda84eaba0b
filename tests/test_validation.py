"""The shared argument checks: the values they let through, converted, and one message per mistake."""
import numpy as np
import pytest

from gfa_keras.validation import (
    ArgumentValueError,
    check_choice,
    check_clip_range,
    check_eps,
    check_int,
    check_labelled_data,
    check_number,
    check_positive_int,
)


@pytest.mark.parametrize("value", [1, 7, np.int64(3), np.int32(1)])
def test_positive_int_returns_a_python_int(value):
    result = check_positive_int("steps", value)
    assert result == int(value) and type(result) is int


@pytest.mark.parametrize("value", [0, -2, 1.0, 2.5, True, "3", None, float("nan")])
def test_positive_int_rejects_with_one_message(value):
    with pytest.raises(ValueError, match=rf"^steps must be a positive integer\. Received: steps={value!r}$"):
        check_positive_int("steps", value)


def test_int_minimum_shapes_the_message():
    assert check_int("seed", -5) == -5
    assert check_int("start_epoch", 0, minimum=0) == 0
    assert check_positive_int("population", 4, minimum=4) == 4
    with pytest.raises(ValueError, match=r"^seed must be an integer\. Received: seed=0\.5$"):
        check_int("seed", 0.5)
    with pytest.raises(ValueError, match=r"^start_epoch must be an integer >= 0\. Received: start_epoch=-1$"):
        check_int("start_epoch", -1, minimum=0)
    with pytest.raises(ValueError, match=r"^population must be an integer >= 4\. Received: population=3$"):
        check_positive_int("population", 3, minimum=4)


@pytest.mark.parametrize(
    "kwargs, value, expected",
    [
        ({}, -3, -3.0),
        ({"low": 0.0}, 0, 0.0),
        ({"low": 0.0, "high": 1.0}, 1, 1.0),
        ({"low": 0.0, "low_open": True}, np.float32(0.25), 0.25),
    ],
)
def test_number_in_range_returns_a_python_float(kwargs, value, expected):
    result = check_number("x", value, **kwargs)
    assert result == expected and type(result) is float


@pytest.mark.parametrize(
    "kwargs, value, message",
    [
        ({}, float("nan"), r"x must be a finite number\. Received: x=nan"),
        ({}, float("inf"), r"x must be a finite number\. Received: x=inf"),
        ({}, True, r"x must be a finite number\. Received: x=True"),
        ({}, "0.1", r"x must be a finite number\. Received: x='0.1'"),
        ({"low": 0.0}, -0.5, r"x must be a finite number >= 0\. Received: x=-0.5"),
        ({"low": 0.0, "low_open": True}, 0.0, r"x must be a finite number > 0\. Received: x=0.0"),
        ({"low": 0.0, "high": 1.0}, 1.5, r"x must be a finite number >= 0 and <= 1\. Received: x=1.5"),
        ({"low": 0, "high": 1, "low_open": True, "high_open": True}, 1, r"x must be a finite number > 0 and < 1\."),
        ({"high": 2.0}, 3.0, r"x must be a finite number <= 2\. Received: x=3.0"),
    ],
)
def test_number_rejects_with_its_bounds_in_the_message(kwargs, value, message):
    with pytest.raises(ValueError, match=f"^{message}"):
        check_number("x", value, **kwargs)


def test_eps_zero_is_allowed_only_when_asked():
    assert check_eps(0) == 0.0
    assert check_eps(0.1, allow_zero=False) == pytest.approx(0.1)
    with pytest.raises(ValueError, match=r"^eps must be a finite number > 0\. Received: eps=0$"):
        check_eps(0, allow_zero=False)
    with pytest.raises(ValueError, match=r"^eps must be a finite number >= 0\. Received: eps=-0.1$"):
        check_eps(-0.1)
    with pytest.raises(ValueError, match=r"^step_size must be a finite number > 0\."):
        check_eps(float("inf"), allow_zero=False, name="step_size")


def test_choice_lists_the_valid_names():
    assert check_choice("norm", "l2", ("linf", "l2")) == "l2"
    assert check_choice("method", "gfa", {"gfa": 1, "pgd": 2}) == "gfa"
    with pytest.raises(ValueError, match=r"^Unknown norm\. Expected one of \['linf', 'l2'\]\. Received: norm='l1'$"):
        check_choice("norm", "l1", ("linf", "l2"))
    with pytest.raises(ValueError, match=r"^Unknown architecture\. Expected one of \['mlp'\]\. Received: name='vit'$"):
        check_choice("name", "vit", ["mlp"], what="architecture")
    with pytest.raises(ValueError, match=r"^Unknown norm\. .* Received: norm=\['linf'\]$"):
        check_choice("norm", ["linf"], ("linf", "l2"))


def test_clip_range_must_be_an_ordered_pair_of_numbers():
    assert check_clip_range(0, 1) == (0.0, 1.0)
    assert check_clip_range(-1.0, 1.0) == (-1.0, 1.0)
    with pytest.raises(ValueError, match=r"^clip_min must be smaller than clip_max\. "
                                         r"Received: clip_min=1.0, clip_max=0.0$"):
        check_clip_range(1.0, 0.0)
    with pytest.raises(ValueError, match=r"^clip_min must be smaller than clip_max\. "
                                         r"Received: clip_min=0.5, clip_max=0.5$"):
        check_clip_range(0.5, 0.5)
    with pytest.raises(ValueError, match=r"^clip_max must be a finite number\. Received: clip_max=nan$"):
        check_clip_range(0.0, float("nan"))


def test_the_error_carries_what_was_expected():
    with pytest.raises(ArgumentValueError) as info:
        check_number("learning_rate", -1.0, low=0.0, low_open=True)
    assert (info.value.name, info.value.expected, info.value.value) == ("learning_rate", "a finite number > 0", -1.0)
    assert isinstance(info.value, ValueError)
    with pytest.raises(ArgumentValueError, match=r"^epochs must be a positive integer\. Received: epochs='3'$"):
        check_positive_int("epochs", "3")


def _tiny_model():
    import keras

    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])


def _entry_points():
    """Public entry points of every layer of the package, each called with one argument wrong."""
    import gfa_keras
    from gfa_keras.attacks import pgd
    from gfa_keras.evaluation.masking_checks import large_eps

    x, y = np.zeros((2, 4), "float32"), np.zeros(2, "int32")
    return {
        "harden": lambda **bad: gfa_keras.harden(_tiny_model(), method="pgd", **{"eps": 0.1, **bad}),
        "PGD": lambda **bad: gfa_keras.PGD(**{"eps": 0.1, **bad}),
        "pgd attack": lambda **bad: pgd(_tiny_model(), x, y, **{"eps": 0.1, **bad}),
        "evaluate_robustness": lambda **bad: gfa_keras.evaluate_robustness(
            _tiny_model(), (x, y), "fast", **{"eps": 0.1, "verbose": 0, **bad}),
        "RobustAccuracy": lambda **bad: gfa_keras.RobustAccuracy((x, y), **{"eps": 0.1, **bad}),
        "GFAHyperModel": lambda **bad: gfa_keras.GFAHyperModel(_tiny_model(), objective="clean_accuracy", **bad),
        "large_eps": lambda **bad: large_eps(bad.get("norm", "linf"), (4,)),
    }


@pytest.mark.parametrize("entry", ["harden", "PGD", "pgd attack", "evaluate_robustness", "RobustAccuracy",
                                   "GFAHyperModel", "large_eps"])
def test_every_layer_reports_an_unknown_norm_the_same_way(entry):
    with pytest.raises(ValueError, match=r"^Unknown norm\. Expected one of \['linf', 'l2'\]\. Received: norm='l3'$"):
        _entry_points()[entry](norm="l3")


@pytest.mark.parametrize("entry, argument", [("harden", "steps"), ("PGD", "steps"), ("pgd attack", "steps"),
                                             ("evaluate_robustness", "steps"), ("RobustAccuracy", "steps"),
                                             ("GFAHyperModel", "attack_steps")])
def test_every_layer_reports_a_zero_step_count_the_same_way(entry, argument):
    with pytest.raises(ValueError, match=rf"^{argument} must be a positive integer\. Received: {argument}=0$"):
        _entry_points()[entry](**{argument: 0})


@pytest.mark.parametrize("entry", ["harden", "PGD", "pgd attack", "evaluate_robustness", "RobustAccuracy",
                                   "GFAHyperModel"])
def test_every_layer_reports_a_negative_eps_the_same_way(entry):
    # Training and its monitors need eps > 0; evaluation also accepts eps = 0 (the clean accuracy).
    with pytest.raises(ValueError, match=r"^eps must be a finite number (>|>=) 0\. Received: eps=-0\.1$"):
        _entry_points()[entry](eps=-0.1)


def test_labelled_data_turns_one_hot_rows_into_labels():
    x = np.arange(12, dtype="float64").reshape(3, 2, 2)
    one_hot = np.eye(4)[[2, 0, 3]]
    for y in ([2, 0, 3], np.array([[2], [0], [3]]), one_hot):
        got_x, got_y = check_labelled_data("validation_data", (x, y))
        assert got_x.dtype == np.float32 and got_x.shape == (3, 2, 2)
        assert got_y.dtype == np.int32 and got_y.tolist() == [2, 0, 3]


@pytest.mark.parametrize("data, message", [
    (np.zeros((3, 2)), r"^validation_data must be an \(x, y\) pair of arrays\. Received: validation_data of type "
                       r"ndarray$"),
    ((np.zeros((3, 2)), np.zeros(2)), r"as many labels \(integers or one-hot rows\) as examples, at least one\. "
                                      r"Received: x\.shape=\(3, 2\), y\.shape=\(2,\)$"),
    ((np.zeros((0, 2)), np.zeros(0)), r"at least one\. Received: x\.shape=\(0, 2\)"),
    ((np.zeros(3), np.zeros(3)), r"at least one\. Received: x\.shape=\(3,\)"),
])
def test_labelled_data_rejects_with_the_shapes(data, message):
    with pytest.raises(ValueError, match=message):
        check_labelled_data("validation_data", data)
