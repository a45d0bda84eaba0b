"""What every attack shares: the uniform signature, input validation, the registry.

Every attack is a plain function with one flat signature::

    x_adv = attack(model, x, y, *, eps, norm="linf", steps=..., clip_min=0.0,
                   clip_max=1.0, seed=0, **attack_specific_options)

- `model` is a callable (usually a `keras.Model`) that maps a batch to **logits**.
- `x` is a float batch in pixel scale `[clip_min, clip_max]`; `y` holds the **true**
  integer labels, always required (no defaulting to the model's own predictions,
  which would let a wrong clean prediction count as "robust").
- `eps` bounds the perturbation in the `norm` ball. Minimum-norm attacks
  (`kind="minimum_norm"`) accept `eps=None` for "as small as you can find".
- The result has the shape and dtype of `x`. Whether it fools the model and stays
  within `eps` is checked again by the evaluation, which trusts no attack.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import tensorflow as tf

from gfa_keras.threat_model import NORMS, perturbation_norms, project, random_start
from gfa_keras.validation import check_choice, check_clip_range, check_eps

__all__ = [
    "NORMS",
    "AttackSpec",
    "ATTACKS",
    "register_attack",
    "get_attack",
    "validate_attack_inputs",
    "perturbation_norms",
    "project",
    "random_start",
]


@dataclasses.dataclass(frozen=True)
class AttackSpec:
    """A registered attack and what it supports.

    Attributes:
        name: Registry key, e.g. `"apgd_ce"`.
        fn: The attack function (uniform signature above).
        norms: Threat models the attack supports, a subset of `NORMS`.
        kind: `"bounded"` (finds a point inside the eps-ball) or
            `"minimum_norm"` (finds the smallest perturbation it can; eps optional).
        white_box: False for score-based black-box attacks (Square, SPSA, OnePixel).
        source: `"cleverhans"` when the attack is cleverhans' own code, else `"gfa_keras"`.
    """

    name: str
    fn: Callable
    norms: tuple
    kind: str = "bounded"
    white_box: bool = True
    source: str = "gfa_keras"


ATTACKS: dict[str, AttackSpec] = {}


def register_attack(name, *, norms, kind="bounded", white_box=True, source="gfa_keras"):
    """Decorator that adds an attack function to `ATTACKS` under `name`."""
    if kind not in ("bounded", "minimum_norm"):
        raise ValueError(
            f"Unknown attack kind. Expected 'bounded' or 'minimum_norm'. Received: kind={kind!r}"
        )
    unknown = [n for n in norms if n not in NORMS]
    if unknown:
        raise ValueError(f"Unknown norms. Expected a subset of {NORMS}. Received: norms={norms!r}")

    def decorate(fn):
        if name in ATTACKS:
            raise ValueError(f"An attack named {name!r} is already registered.")
        ATTACKS[name] = AttackSpec(name, fn, tuple(norms), kind, white_box, source)
        return fn

    return decorate


def get_attack(name) -> AttackSpec:
    """Returns the registered attack `name`, or raises a ValueError listing the known ones."""
    if isinstance(name, AttackSpec):
        return name
    try:
        return ATTACKS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown attack. Expected one of {sorted(ATTACKS)}. Received: attack={name!r}"
        ) from None


def validate_attack_inputs(x, y, *, eps=0.0, norm="linf", clip_min=0.0, clip_max=1.0,
                           num_classes=None, allow_eps_none=False):
    """Checks an attack's arguments before any compute is spent.

    Returns `(x, y)` as float32 / int32 tensors. Raises ValueError with what was
    expected and what was received.
    """
    check_choice("norm", norm, NORMS)
    if eps is None:
        if not allow_eps_none:
            raise ValueError("This attack needs a perturbation bound. Received: eps=None")
    else:
        check_eps(eps)
    clip_min, clip_max = check_clip_range(clip_min, clip_max)
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        raise ValueError(f"x must be a floating-point batch in pixel scale. Received: x.dtype={x.dtype.name}")
    x = tf.cast(x, tf.float32)
    y = tf.convert_to_tensor(y)
    if y.dtype.is_floating:
        y_np = y.numpy()
        if not np.all(np.equal(np.mod(y_np, 1), 0)):
            raise ValueError("y must hold integer class labels (not one-hot or probabilities).")
    if y.shape.rank != 1:
        raise ValueError(
            "y must be a 1-D vector of integer class labels. "
            f"Received: y.shape={tuple(y.shape)}"
        )
    y = tf.cast(y, tf.int32)
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            "x and y must hold the same number of examples. "
            f"Received: len(x)={x.shape[0]}, len(y)={y.shape[0]}"
        )
    if not bool(tf.reduce_all(tf.math.is_finite(x))):
        raise ValueError("x contains NaN or infinite values.")
    if bool(tf.reduce_any(x < clip_min)) or bool(tf.reduce_any(x > clip_max)):
        raise ValueError(
            f"x must lie in [clip_min, clip_max] = [{clip_min}, {clip_max}]. "
            f"Received values in [{float(tf.reduce_min(x))}, {float(tf.reduce_max(x))}]"
        )
    if y.shape[0] and bool(tf.reduce_any(y < 0)):
        raise ValueError(f"Labels must be >= 0. Received: min(y)={int(tf.reduce_min(y))}")
    if num_classes is not None and y.shape[0] and bool(tf.reduce_any(y >= num_classes)):
        raise ValueError(
            f"Labels must be < num_classes={num_classes}. Received: max(y)={int(tf.reduce_max(y))}"
        )
    return x, y
