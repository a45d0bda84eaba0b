"""Training-time perturbations: the inner maximisation of adversarial training.

A perturbation maps a clean batch to the batch the task loss is trained on
(Madry et al.: the worst point of the eps-ball found by PGD). Unlike the attacks in
`gfa_keras.attacks`, which evaluate a finished model and validate their inputs
eagerly, these run inside `train_step`'s graph on every batch.

The inner objective is the cross-entropy of the model's logits (Madry et al.),
whatever loss the model is compiled with; labels may be integers or one-hot.
"""
from __future__ import annotations

import abc
import contextlib
import itertools
import threading

import keras
import tensorflow as tf

from gfa_keras.threat_model import NORMS, project, random_start
from gfa_keras.validation import check_choice, check_clip_range, check_eps, check_number, check_positive_int

__all__ = ["Perturbation", "FGSM", "NFGSM", "PGD", "cross_entropy_per_example", "check_ball", "radius_scale",
           "step_seed", "step_seeds"]


def cross_entropy_per_example(y, logits):
    """Cross-entropy of logits against integer or one-hot labels, shape `[batch]`."""
    logits = tf.cast(logits, tf.float32)
    y = tf.convert_to_tensor(y)
    if y.shape.rank == 2 and y.shape[-1] == logits.shape[-1] and y.shape[-1] > 1:
        return tf.nn.softmax_cross_entropy_with_logits(tf.cast(y, tf.float32), logits)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(tf.reshape(tf.cast(y, tf.int32), [-1]), logits)


def check_ball(eps, norm, clip_min, clip_max):
    """Validates the threat model shared by every perturbation; returns eps as float."""
    eps = check_eps(eps, allow_zero=False)
    check_choice("norm", norm, NORMS)
    check_clip_range(clip_min, clip_max)
    return eps


def _ascent_step(gradient, step_size, norm):
    """The steepest-ascent step of size `step_size` in the `norm` geometry."""
    if norm == "linf":
        return step_size * tf.sign(gradient)
    flat = tf.reshape(gradient, [tf.shape(gradient)[0], -1])
    norms = tf.maximum(tf.norm(flat, axis=1), 1e-12)
    return step_size * gradient / tf.reshape(norms, [-1] + [1] * (len(gradient.shape) - 1))


class Perturbation(abc.ABC):
    """Base class: `perturbation(model, x, y) -> x_adv` inside the eps-ball and clip box."""

    def __init__(self, eps, norm="linf", clip_min=0.0, clip_max=1.0):
        self.eps = check_ball(eps, norm, clip_min, clip_max)
        self.norm = norm
        self.clip_min = float(clip_min)
        self.clip_max = float(clip_max)

    def get_config(self):
        return {"eps": self.eps, "norm": self.norm, "clip_min": self.clip_min, "clip_max": self.clip_max}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def _loss_gradient(self, model, x_adv, y, objective):
        with tf.GradientTape() as tape:
            tape.watch(x_adv)
            loss = tf.reduce_sum(objective(y, model(x_adv, training=False)))
        return tape.gradient(loss, x_adv)

    @abc.abstractmethod
    def __call__(self, model, x, y, objective=cross_entropy_per_example):
        """Returns the perturbed batch (no gradient flows back through it)."""


@keras.saving.register_keras_serializable(package="gfa_keras")
class FGSM(Perturbation):
    """One signed-gradient step (Goodfellow et al.), projected onto the eps-ball and clip box.

    Without `random_start` the step starts at x and has size eps. With it, "fast"
    adversarial training (Wong et al. 2020, "Fast is better than free"): the step
    starts from a uniformly random point of the eps-ball and has size 1.25 eps by
    default; the result is projected back onto the ball.

    Args:
        eps: Radius of the ball in pixel scale (e.g. 8/255 for CIFAR-10, Linf).
        norm: "linf" or "l2" (for "l2" the step is along the normalised gradient).
        random_start: Start from a uniformly random point of the ball.
        step_size: The step; default eps, or 1.25 eps with `random_start`.
        clip_min, clip_max: The valid pixel range.

    Raises:
        ValueError: For eps or step_size <= 0 or not finite, an unknown norm, or
            clip_min >= clip_max.

    Example:

    >>> fgsm_rs = FGSM(eps=8 / 255, random_start=True)
    >>> round(fgsm_rs.step_size * 255, 6)
    10.0
    """

    def __init__(self, eps, norm="linf", random_start=False, step_size=None, clip_min=0.0, clip_max=1.0):
        super().__init__(eps, norm, clip_min, clip_max)
        self.random_start = bool(random_start)
        default_step = 1.25 * self.eps if self.random_start else self.eps
        self.step_size = check_eps(default_step if step_size is None else step_size, allow_zero=False,
                                   name="step_size")

    def get_config(self):
        return {**super().get_config(), "random_start": self.random_start, "step_size": self.step_size}

    def start(self, x):
        """Where the step starts: a uniformly random point of the eps-ball (in the clip box)
        with `random_start`, else x itself.

        Under tf.distribute the noise is drawn per replica, so it depends on how the
        batch is split; a subclass can override this for a deterministic start.

        Args:
            x: The clean batch, float32.

        Returns:
            The starting points, shaped like `x`.
        """
        if not self.random_start:
            return x
        return random_start(x, _scaled(self.eps), self.norm, self.clip_min, self.clip_max, step_seed())

    def __call__(self, model, x, y, objective=cross_entropy_per_example):
        x = tf.stop_gradient(tf.cast(x, tf.float32))
        x_start = self.start(x)
        gradient = self._loss_gradient(model, x_start, y, objective)
        x_adv = project(x_start + _ascent_step(gradient, _scaled(self.step_size), self.norm), x, _scaled(self.eps),
                        self.norm, self.clip_min, self.clip_max)
        return tf.stop_gradient(x_adv)


@keras.saving.register_keras_serializable(package="gfa_keras")
class NFGSM(Perturbation):
    """N-FGSM (de Jorge et al. 2022, "Make some noise"): one signed-gradient step of size
    eps from x plus noise uniform in the ball of radius 2 eps, with NO projection back
    onto the eps-ball; only the clip box bounds the result.

    The training points therefore lie up to 3 eps (Linf) from x: the larger noise and
    the missing projection are what keep single-step training from catastrophic
    overfitting without a regularizer, at the cost of one forward-backward pass.

    Args:
        eps: The threat model's radius in pixel scale (e.g. 8/255 for CIFAR-10, Linf).
        norm: "linf" (noise uniform per pixel, signed step) or "l2" (noise uniform in
            the L2 ball, step along the normalised gradient).
        noise_magnitude: Radius of the noise ball; default 2 eps (the paper's k = 2).
        step_size: The step; default eps (the paper's alpha = eps).
        clip_min, clip_max: The valid pixel range.

    Raises:
        ValueError: For eps, noise_magnitude or step_size <= 0 or not finite, an
            unknown norm, or clip_min >= clip_max.

    Example:

    >>> n_fgsm = NFGSM(eps=8 / 255)
    >>> round(n_fgsm.noise_magnitude * 255, 6), round(n_fgsm.step_size * 255, 6)
    (16.0, 8.0)
    """

    def __init__(self, eps, norm="linf", noise_magnitude=None, step_size=None, clip_min=0.0, clip_max=1.0):
        super().__init__(eps, norm, clip_min, clip_max)
        self.noise_magnitude = check_number(
            "noise_magnitude", 2.0 * self.eps if noise_magnitude is None else noise_magnitude,
            low=0.0, low_open=True)
        self.step_size = check_number("step_size", self.eps if step_size is None else step_size,
                                      low=0.0, low_open=True)

    def get_config(self):
        return {**super().get_config(), "noise_magnitude": self.noise_magnitude, "step_size": self.step_size}

    def start(self, x):
        """x plus noise uniform in the ball of radius `noise_magnitude`, in the clip box.

        Under tf.distribute the noise is drawn per replica; a subclass can override this
        for a deterministic start.

        Args:
            x: The clean batch, float32.

        Returns:
            The noisy points, shaped like `x`.
        """
        return random_start(x, _scaled(self.noise_magnitude), self.norm, self.clip_min, self.clip_max, step_seed())

    def __call__(self, model, x, y, objective=cross_entropy_per_example):
        x = tf.stop_gradient(tf.cast(x, tf.float32))
        x_noisy = self.start(x)
        gradient = self._loss_gradient(model, x_noisy, y, objective)
        x_adv = tf.clip_by_value(x_noisy + _ascent_step(gradient, _scaled(self.step_size), self.norm),
                                 self.clip_min, self.clip_max)
        return tf.stop_gradient(x_adv)


@keras.saving.register_keras_serializable(package="gfa_keras")
class PGD(Perturbation):
    """Projected gradient ascent (Madry et al.): `steps` steps of `step_size` from a
    random start in the eps-ball, projected onto the ball and clip box after each.

    Args:
        eps: Radius of the ball in pixel scale (e.g. 8/255 for CIFAR-10, Linf).
        step_size: Default 2.5 * eps / steps (Madry et al.'s rule of thumb).
        steps: Number of ascent steps (>= 1), e.g. 7 for CIFAR-10 training.
        random_start: Start from a uniformly random point of the ball.
        norm: "linf" or "l2".
    """

    def __init__(self, eps, step_size=None, steps=7, random_start=True, norm="linf",
                 clip_min=0.0, clip_max=1.0):
        super().__init__(eps, norm, clip_min, clip_max)
        self.steps = check_positive_int("steps", steps)
        self.step_size = check_eps(2.5 * self.eps / self.steps if step_size is None else step_size,
                                   allow_zero=False, name="step_size")
        self.random_start = bool(random_start)

    def get_config(self):
        return {**super().get_config(), "step_size": self.step_size, "steps": self.steps,
                "random_start": self.random_start}

    def __call__(self, model, x, y, objective=cross_entropy_per_example, start=None):
        x = tf.stop_gradient(tf.cast(x, tf.float32))
        eps, step_size = _scaled(self.eps), _scaled(self.step_size)
        if start is not None:
            x_adv = start
        elif self.random_start:
            x_adv = random_start(x, eps, self.norm, self.clip_min, self.clip_max, step_seed())
        else:
            x_adv = x

        def ascend(i, x_adv):
            gradient = self._loss_gradient(model, x_adv, y, objective)
            x_adv = project(x_adv + _ascent_step(gradient, step_size, self.norm), x, eps, self.norm,
                            self.clip_min, self.clip_max)
            return i + 1, x_adv

        # A while loop, not a Python one: Keras does not autograph train_step, and an
        # unrolled loop would grow the graph with every step.
        _, x_adv = tf.while_loop(lambda i, _: i < self.steps, ascend, (tf.constant(0), x_adv))
        return tf.stop_gradient(x_adv)


_radius = threading.local()


@contextlib.contextmanager
def radius_scale(scale):
    """Inside the block the training perturbations work at `scale` (a scalar tensor in
    [0, 1]) times their radius, step size and noise: `HardenedModel.train_step` passes the
    ramp of `EpsilonWarmup`. Evaluation and the regularizers' own balls (GradAlign's) keep
    the full radius; TRADES' inner PGD is a perturbation and ramps with the rest."""
    outer = getattr(_radius, "scale", None)
    _radius.scale = scale
    try:
        yield
    finally:
        _radius.scale = outer


def _scaled(value):
    """`value` times the radius scale in force (the value itself outside `radius_scale`)."""
    scale = getattr(_radius, "scale", None)
    return value if scale is None else value * tf.cast(scale, tf.float32)


_seeding = threading.local()  # per thread: tf.distribute runs each replica's step in a thread of its own


@contextlib.contextmanager
def step_seeds(seed):
    """Inside the block, `step_seed()` derives its seeds from `seed` (an integer pair;
    `HardenedModel.train_step` passes its own seed and the optimizer's step count), the
    k-th draw of the step folding in k. A step's noise is then a function of what a
    checkpoint saves, so a run resumed from one draws what the uninterrupted run would
    have drawn (a stateful generator restarts its sequence when a loaded model retraces)."""
    outer = getattr(_seeding, "draw", None)
    draws = itertools.count(1)
    _seeding.draw = lambda: tf.random.experimental.stateless_fold_in(seed, next(draws))
    try:
        yield
    finally:
        _seeding.draw = outer


def step_seed():
    """A fresh seed pair for each draw of noise in each batch: inside `step_seeds`, a
    function of the step; outside, from TF's global generator (`keras.utils.set_random_seed`
    makes the sequence reproducible)."""
    draw = getattr(_seeding, "draw", None)
    return draw() if draw is not None else tf.random.uniform((2,), maxval=2**30, dtype=tf.int64)
