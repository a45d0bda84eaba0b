"""Argument checks shared across the package, with Keras-style messages."""
from __future__ import annotations

import numbers

import numpy as np

__all__ = ["check_positive_int", "check_number"]


def check_positive_int(name, value, minimum=1):
    """Returns `value` as an int, or raises a ValueError unless it is an integer >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        expected = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {expected}. Received: {name}={value!r}")
    return int(value)


def check_number(name, value, low=None, high=None, low_open=False):
    """Returns `value` as a float, or raises a ValueError unless it is a real number in range."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and bool(np.isfinite(value))
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        bounds = [f"{'>' if low_open else '>='} {low}"] if low is not None else []
        bounds += [f"<= {high}"] if high is not None else []
        raise ValueError(f"{name} must be a number {' and '.join(bounds)}. Received: {name}={value!r}")
    return float(value)
