"""Argument checks shared by the whole package: one function, and one message, per kind of mistake.

Every public function and constructor checks its arguments here, so the same mistake reads the
same everywhere ("steps must be a positive integer. Received: steps=0"). Each check returns the
value converted to its plain Python type, so call sites can write
`self.steps = check_positive_int("steps", steps)`.

This module sits at the bottom of the package: it imports nothing from gfa_keras.

Example:

>>> from gfa_keras.validation import check_number, check_choice
>>> check_number("eps", 0.1, low=0.0, low_open=True)
0.1
>>> check_choice("norm", "l3", ("linf", "l2"))
Traceback (most recent call last):
...
ValueError: Unknown norm. Expected one of ['linf', 'l2']. Received: norm='l3'
"""
from __future__ import annotations

import numbers

import numpy as np

__all__ = [
    "ArgumentValueError",
    "check_int",
    "check_positive_int",
    "check_number",
    "check_eps",
    "check_choice",
    "check_clip_range",
    "check_labelled_data",
]


class ArgumentValueError(ValueError):
    """The ValueError of `check_int` and `check_number`, with the parts of its message as attributes.

    Attributes:
        name: The argument's name.
        expected: What was expected, e.g. "a positive integer" (the command line reuses it).
        value: The value received.
    """

    def __init__(self, name, expected, value):
        super().__init__(f"{name} must be {expected}. Received: {name}={value!r}")
        self.name, self.expected, self.value = name, expected, value


def check_int(name, value, minimum=None):
    """Returns `value` as an int, or raises unless it is an integer (not a bool) >= `minimum`.

    Args:
        name: The argument's name, used in the message.
        value: The value to check; Python and NumPy integers are accepted, floats such as `3.0` are not.
        minimum: The smallest allowed value, or None for any integer.

    Returns:
        `int(value)`.

    Raises:
        ArgumentValueError: "{name} must be a positive integer" (minimum 1), "an integer >= {minimum}"
            or "an integer", followed by "Received: {name}={value!r}".
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or (minimum is not None and value < minimum)
    ):
        if minimum is None:
            expected = "an integer"
        elif minimum == 1:
            expected = "a positive integer"
        else:
            expected = f"an integer >= {minimum}"
        raise ArgumentValueError(name, expected, value)
    return int(value)


def check_positive_int(name, value, minimum=1):
    """Returns `value` as an int, or raises unless it is an integer >= `minimum` (1 by default).

    The common case of `check_int`, for counts such as `steps`, `restarts` or `batch_size`.
    """
    return check_int(name, value, minimum=minimum)


def check_number(name, value, low=None, high=None, low_open=False, high_open=False):
    """Returns `value` as a float, or raises unless it is a finite real number in range.

    Args:
        name: The argument's name, used in the message.
        value: The value to check; bools, strings, NaN and infinities are rejected.
        low: The lower bound, or None for none.
        high: The upper bound, or None for none.
        low_open: Whether `low` itself is excluded (`value > low` rather than `>=`).
        high_open: Whether `high` itself is excluded.

    Returns:
        `float(value)`.

    Raises:
        ArgumentValueError: "{name} must be a finite number > 0 and <= 1. Received: {name}={value!r}",
            with the bounds that apply.
    """
    if isinstance(value, np.ndarray) and value.ndim == 0:  # e.g. a number read back from an .npz file
        value = value.item()
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and bool(np.isfinite(value))
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        bounds = [f"{'>' if low_open else '>='} {low:g}"] if low is not None else []
        bounds += [f"{'<' if high_open else '<='} {high:g}"] if high is not None else []
        expected = " ".join(["a finite number", " and ".join(bounds)]).strip()
        raise ArgumentValueError(name, expected, value)
    return float(value)


def check_eps(eps, allow_zero=True, name="eps"):
    """Returns a perturbation radius as a float: a finite number >= 0 (> 0 when `allow_zero=False`).

    Training against perturbations needs `eps > 0`; evaluation accepts `eps = 0` (clean accuracy).
    """
    return check_number(name, eps, low=0.0, low_open=not allow_zero)


def check_choice(name, value, choices, what=None):
    """Returns `value`, or raises unless it is one of `choices`.

    Args:
        name: The argument's name, used in the message.
        value: The value to check.
        choices: The valid values (a tuple, list, or the keys of a dict).
        what: What the value names, when it differs from `name` (e.g. `"architecture"` for `name`).

    Raises:
        ValueError: "Unknown {what}. Expected one of [...]. Received: {name}={value!r}".
    """
    choices = list(choices)
    try:
        known = value in choices
    except (TypeError, ValueError):  # e.g. an array compared with names
        known = False
    if not known:
        raise ValueError(f"Unknown {what or name}. Expected one of {choices}. Received: {name}={value!r}")
    return value


def check_clip_range(clip_min, clip_max):
    """Returns `(clip_min, clip_max)` as floats, or raises unless they are finite with `clip_min < clip_max`.

    Raises:
        ValueError: "clip_min must be smaller than clip_max. Received: clip_min=..., clip_max=...", or
            the `check_number` message when either is not a finite number.
    """
    clip_min = check_number("clip_min", clip_min)
    clip_max = check_number("clip_max", clip_max)
    if not clip_min < clip_max:
        raise ValueError(
            f"clip_min must be smaller than clip_max. Received: clip_min={clip_min}, clip_max={clip_max}"
        )
    return clip_min, clip_max


def check_labelled_data(name, data):
    """Returns an `(x, y)` pair of arrays as `x` (float32, shape `(n, ...)`) and integer labels `y` (shape `(n,)`).

    Labels may be integers or one-hot rows (turned into their argmax). Used wherever a
    held-out set is passed as a pair of arrays (validation data, a monitor's batch).

    Raises:
        ValueError: "{name} must be an (x, y) pair of arrays. Received: {name} of type ...", or
            "{name} must hold as many labels (integers or one-hot rows) as examples, at least one.
            Received: x.shape=..., y.shape=...".
    """
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError(f"{name} must be an (x, y) pair of arrays. Received: {name} of type {type(data).__name__}")
    x, y = np.asarray(data[0]), np.asarray(data[1])
    labels = np.argmax(y, axis=-1) if y.ndim == 2 and y.shape[-1] > 1 else y.reshape(-1) if y.ndim == 2 else y
    if x.ndim < 2 or labels.ndim != 1 or len(x) != len(labels) or len(x) == 0:
        raise ValueError(
            f"{name} must hold as many labels (integers or one-hot rows) as examples, at least one. "
            f"Received: x.shape={x.shape}, y.shape={y.shape}"
        )
    return x.astype("float32"), labels.astype("int32")
