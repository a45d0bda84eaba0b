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

import keras
import tensorflow as tf

from gfa_keras.threat_model import NORMS, project, random_start
from gfa_keras.validation import check_choice, check_clip_range, check_eps, check_positive_int

__all__ = ["Perturbation", "FGSM", "PGD", "cross_entropy_per_example", "check_ball"]


def cross_entropy_per_example(y, logits):
    """Cross-entropy of logits against integer or one-hot labels, shape `[batch]`."""
    logits = tf.cast(logits, tf.float32)
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
    """One signed-gradient step of size eps (Goodfellow et al.); with `random_start`,
    from a random point of the ball ("fast" adversarial training, Wong et al.), then
    with step size `step_size` (default 1.25 eps)."""

    def __init__(self, eps, norm="linf", random_start=False, step_size=None, clip_min=0.0, clip_max=1.0):
        super().__init__(eps, norm, clip_min, clip_max)
        self.random_start = bool(random_start)
        default_step = 1.25 * self.eps if self.random_start else self.eps
        self.step_size = check_eps(default_step if step_size is None else step_size, allow_zero=False,
                                   name="step_size")

    def get_config(self):
        return {**super().get_config(), "random_start": self.random_start, "step_size": self.step_size}

    def __call__(self, model, x, y, objective=cross_entropy_per_example):
        x = tf.stop_gradient(tf.cast(x, tf.float32))
        x_adv = random_start(x, self.eps, self.norm, self.clip_min, self.clip_max, _step_seed()) \
            if self.random_start else x
        gradient = self._loss_gradient(model, x_adv, y, objective)
        x_adv = project(x_adv + _ascent_step(gradient, self.step_size, self.norm), x, self.eps, self.norm,
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
        if start is not None:
            x_adv = start
        elif self.random_start:
            x_adv = random_start(x, self.eps, self.norm, self.clip_min, self.clip_max, _step_seed())
        else:
            x_adv = x

        def ascend(i, x_adv):
            gradient = self._loss_gradient(model, x_adv, y, objective)
            x_adv = project(x_adv + _ascent_step(gradient, self.step_size, self.norm), x, self.eps, self.norm,
                            self.clip_min, self.clip_max)
            return i + 1, x_adv

        # A while loop, not a Python one: Keras does not autograph train_step, and an
        # unrolled loop would grow the graph with every step.
        _, x_adv = tf.while_loop(lambda i, _: i < self.steps, ascend, (tf.constant(0), x_adv))
        return tf.stop_gradient(x_adv)


def _step_seed():
    """A fresh seed for each batch; TF's global seed (`keras.utils.set_random_seed`)
    makes the sequence reproducible."""
    return tf.random.uniform((2,), maxval=2**30, dtype=tf.int64)
