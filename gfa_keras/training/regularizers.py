"""Penalties added to the task loss by `HardenedModel`, each a small serializable object.

A regularizer says which gradients it needs (`tapped_layers`, `needs_input_gradient`);
the model computes them all in ONE inner backward pass and hands them over in a
`StepTensors`. `penalty()` returns the unweighted penalty and any extra values to log;
the model multiplies by the regularizer's weight (a variable, so that a callback can
warm it up).
"""
from __future__ import annotations

import abc
import dataclasses

import keras
import tensorflow as tf

from gfa_keras.threat_model import random_start
from gfa_keras.training.alignment import alignment_penalty
from gfa_keras.training.batch_norm import frozen_moving_statistics
from gfa_keras.training.perturbations import PGD, check_ball, cross_entropy_per_example, step_seed
from gfa_keras.training.taps import resolve_tapped_layers
from gfa_keras.validation import check_choice, check_int, check_number

__all__ = [
    "StepTensors",
    "Regularizer",
    "GradientFeatureAlignment",
    "InputGradientNorm",
    "TradesKL",
    "GradAlign",
    "AdversarialMargin",
    "MisclassificationAwareKL",
    "metric_safe",
]


def metric_safe(name):
    """A layer name made safe for a metric name."""
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)


@dataclasses.dataclass
class StepTensors:
    """What one training or test step computed, for the regularizers to use.

    Attributes:
        x: The batch the task loss was computed on (perturbed, when training with a
            perturbation).
        clean_x: The batch before any perturbation.
        y, sample_weight: As unpacked from the data.
        y_pred: The model's output on `x`, under the outer tape.
        features: Tapped layer name -> its input h_l.
        feature_gradients: Tapped layer name -> dL/dh_l.
        input_gradient: Per-example gradient of the task loss with respect to `x` (the
            gradient of the summed, sample-weighted per-example losses), or None.
        model: The `HardenedModel` (its `base_model` gives logits).
        training: True in `train_step`.
        cache: Values a regularizer may keep for the next pass over the same batch (an
            AWP step computes the objective twice: `TradesKL` attacks only once).
    """

    x: object
    clean_x: object
    y: object
    sample_weight: object
    y_pred: object
    features: dict
    feature_gradients: dict
    input_gradient: object
    model: object
    training: bool
    cache: dict = dataclasses.field(default_factory=dict)


class Regularizer(abc.ABC):
    """Base class: a named penalty with a non-negative weight."""

    name = "regularizer"
    needs_input_gradient = False
    needs_logits = False  # True for penalties that attack the model's (single) logits output

    def __init__(self, weight):
        self.weight = check_number("weight", weight, low=0.0)

    @property
    def tapped_layers(self):
        """Names of the layers whose inputs (and gradients) this penalty needs."""
        return ()

    def bind(self, base_model):
        """Resolves anything model-specific (layer names); called once by the model."""

    def metric_names(self):
        return [f"{self.name}_penalty"]

    @abc.abstractmethod
    def penalty(self, step: StepTensors):
        """Returns `(penalty, extra)`: the unweighted scalar and a dict of values to log."""

    def get_config(self):
        return {"weight": self.weight}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="gfa_keras")
class GradientFeatureAlignment(Regularizer):
    """Layer-wise Gradient-Feature Alignment (Lin et al. 2025): mean over the batch of
    sum_l (1 - cos(dL/dh_l, h_l)).

    Args:
        layers: An int N (the inputs of the first N weighted layers; 1 = the input
            image, the paper's FIRST; 3 = DEEP) or layer names / layer objects.
        weight: beta.
        epsilon: Added to the norms' product in the cosine (> 0, so that a zero gradient or
            feature gives a zero cosine rather than NaN).
    """

    name = "gfa"

    def __init__(self, layers=3, weight=0.01, epsilon=1e-12):
        super().__init__(weight)
        self.layers = layers
        self.epsilon = check_number("epsilon", epsilon, low=0.0, low_open=True)
        self._names = None

    def bind(self, base_model):
        self._names = resolve_tapped_layers(base_model, self.layers)
        self.layers = list(self._names)

    @property
    def tapped_layers(self):
        if self._names is None:
            raise ValueError("GradientFeatureAlignment is not bound to a model yet.")
        return self._names

    def metric_names(self):
        return [f"{self.name}_penalty"] + [f"alignment_{metric_safe(n)}" for n in self.tapped_layers]

    def penalty(self, step):
        gradients = [step.feature_gradients[n] for n in self.tapped_layers]
        features = [step.features[n] for n in self.tapped_layers]
        value, alignments = alignment_penalty(gradients, features, step.sample_weight, self.epsilon)
        extra = {f"alignment_{metric_safe(n)}": a for n, a in zip(self.tapped_layers, alignments)}
        return value, extra

    def get_config(self):
        layers = self.layers if isinstance(self.layers, int) else [
            layer if isinstance(layer, str) else layer.name for layer in self.layers
        ]
        return {"layers": layers, "weight": self.weight, "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="gfa_keras")
class InputGradientNorm(Regularizer):
    """Double-backprop penalty on the input gradient: mean over the batch of
    ||dL_i/dx_i||_p (DataGrad, Ororbia et al.: p = 1 or 2), or its square
    (`squared=True`, the hybrid's ||dL/dx||_2^2). Taken at the points the task loss is
    trained on: with a PGD perturbation, at the perturbed points.

    Args:
        p: 1 or 2.
        weight: lambda.
        squared: Penalise ||g||_p^2 instead of ||g||_p.
    """

    name = "input_gradient"
    needs_input_gradient = True

    def __init__(self, p=2, weight=0.01, squared=False):
        super().__init__(weight)
        self.p = check_choice("p", check_int("p", p), (1, 2), what="norm order p")
        self.squared = bool(squared)

    def penalty(self, step):
        g = tf.reshape(tf.cast(step.input_gradient, tf.float32), [tf.shape(step.input_gradient)[0], -1])
        if self.p == 1:
            norms = tf.reduce_sum(tf.abs(g), axis=1)
        else:
            squares = tf.reduce_sum(tf.square(g), axis=1)
            # sqrt'(0) is infinite: the floor keeps a zero gradient from turning NaN.
            norms = squares if self.squared else tf.sqrt(tf.maximum(squares, 1e-30))
        if self.p == 1 and self.squared:
            norms = tf.square(norms)
        return tf.reduce_mean(norms), {}

    def get_config(self):
        return {"p": self.p, "weight": self.weight, "squared": self.squared}


def _kl_per_example(p_clean, logits_adv):
    """KL(p_clean || softmax(logits_adv)) per example."""
    log_q = tf.nn.log_softmax(tf.cast(logits_adv, tf.float32))
    p = tf.cast(p_clean, tf.float32)
    return tf.reduce_sum(p * (tf.math.log(tf.maximum(p, 1e-12)) - log_q), axis=1)


@keras.saving.register_keras_serializable(package="gfa_keras")
class TradesKL(Regularizer):
    """TRADES (Zhang et al. 2019): KL(f(x) || f(x')) with x' the KL-maximising point of
    the eps-ball found by PGD from x + 0.001 N(0, 1). Needs logits.

    Args:
        weight: TRADES' beta (6 in the paper for CIFAR-10).
        eps, step_size, steps, norm, clip_min, clip_max: The inner attack (TRADES
            uses eps=8/255 (0.031), step 0.007, 10 steps on CIFAR-10).
    """

    name = "trades"
    needs_logits = True

    def __init__(self, weight=6.0, eps=8 / 255, step_size=None, steps=10, norm="linf",
                 clip_min=0.0, clip_max=1.0):
        super().__init__(weight)
        self.attack = PGD(eps, step_size=step_size, steps=steps, random_start=False, norm=norm,
                          clip_min=clip_min, clip_max=clip_max)

    def penalty(self, step):
        base = step.model.base_model
        # The extra training-mode passes normalize with their own batch statistics but
        # leave the moving ones to the step's training forward pass (batch_norm.py).
        with frozen_moving_statistics(base):
            # TRADES' clean term: the step's own predictions unless they were made on a
            # perturbed batch (TRADES combined with adversarial training).
            logits_clean = step.y_pred if step.x is step.clean_x else base(step.clean_x, training=step.training)
            p_clean = tf.nn.softmax(tf.cast(logits_clean, tf.float32))
            x = tf.stop_gradient(tf.cast(step.clean_x, tf.float32))
            key = f"{self.name}_x_adv"
            x_adv = step.cache.get(key)
            if x_adv is None:
                x_adv = self.attack(base, x, tf.stop_gradient(p_clean), objective=_kl_per_example,
                                    start=self.attack_start(x))
                step.cache[key] = x_adv
            logits_adv = base(x_adv, training=step.training)
        return tf.reduce_mean(_kl_per_example(p_clean, logits_adv)), {}

    def attack_start(self, x):
        """Where the KL attack starts: x + 0.001 N(0, 1) in the clip box (at x itself the
        KL's gradient is zero).

        Under tf.distribute the noise is drawn per replica, so it depends on how the
        batch is split; a subclass can override this for a deterministic start.

        Args:
            x: The clean batch, float32.

        Returns:
            The starting points, shaped like `x`.
        """
        a = self.attack
        noise = tf.random.stateless_normal(tf.shape(x), step_seed())
        return tf.clip_by_value(x + 0.001 * noise, a.clip_min, a.clip_max)

    def get_config(self):
        a = self.attack
        return {"weight": self.weight, "eps": a.eps, "step_size": a.step_size, "steps": a.steps,
                "norm": a.norm, "clip_min": a.clip_min, "clip_max": a.clip_max}


@keras.saving.register_keras_serializable(package="gfa_keras")
class GradAlign(Regularizer):
    """GradAlign (Andriushchenko & Flammarion 2020): mean over the batch of
    1 - cos(grad_x CE(x), grad_x CE(x + eta)), eta uniform in the eps-ball, each
    gradient flattened per example, both differentiated again (double backprop).

    Keeps single-step adversarial training (`FGSM`, `NFGSM`) from catastrophic
    overfitting: the loss must stay close to linear inside the ball, so one gradient
    step keeps finding a strong point. Taken at the clean batch whatever the
    perturbation, on the model's logits (cross-entropy, as in the paper), whatever
    loss the model is compiled with; two extra forward and double backward passes.

    Args:
        weight: lambda (the paper: 0.2 for CIFAR-10 at eps 8/255, growing with eps).
        eps: Radius of the ball eta is drawn from, in pixel scale.
        norm: "linf" (eta uniform per pixel) or "l2" (uniform in the L2 ball).
        clip_min, clip_max: The valid pixel range; x + eta is clipped to it.

    Logged: `gradalign_penalty` (unweighted) and `gradient_cosine` (its batch-mean cosine).

    Raises:
        ValueError: For a negative or non-finite weight, eps <= 0 or not finite, an
            unknown norm, or clip_min >= clip_max.

    Example:

    >>> from gfa_keras.training.perturbations import FGSM
    >>> base = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
    ...                          keras.layers.Dense(10)])
    >>> from gfa_keras.training.model import HardenedModel
    >>> model = HardenedModel(base, perturbation=FGSM(0.1),
    ...                       regularizers=[GradAlign(weight=0.2, eps=0.1)])
    """

    name = "gradalign"
    needs_logits = True

    def __init__(self, weight=0.2, eps=8 / 255, norm="linf", clip_min=0.0, clip_max=1.0):
        super().__init__(weight)
        self.eps = check_ball(eps, norm, clip_min, clip_max)
        self.norm = norm
        self.clip_min = float(clip_min)
        self.clip_max = float(clip_max)

    def metric_names(self):
        return [f"{self.name}_penalty", "gradient_cosine"]

    def nearby_points(self, x):
        """x + eta, eta uniform in the eps-ball, clipped to the box.

        Under tf.distribute the noise is drawn per replica; a subclass can override this
        for a deterministic eta.

        Args:
            x: The clean batch, float32.

        Returns:
            The points, shaped like `x`.
        """
        return random_start(x, self.eps, self.norm, self.clip_min, self.clip_max, step_seed())

    def penalty(self, step):
        base = step.model.base_model
        optimizer = step.model.optimizer
        # The cosine ignores the gradients' scale, so the loss scale (mixed precision)
        # only keeps float16 backprop from underflowing.
        scale = optimizer.scale_loss(tf.constant(1.0)) if optimizer is not None else 1.0
        x = tf.stop_gradient(tf.cast(step.clean_x, tf.float32))
        x_near = tf.stop_gradient(self.nearby_points(x))
        gradients = []
        for points in (x, x_near):
            # Moving batch-norm statistics are the training forward pass's alone (batch_norm.py).
            with tf.GradientTape() as tape, frozen_moving_statistics(base):
                tape.watch(points)
                loss = tf.reduce_sum(cross_entropy_per_example(step.y, base(points, training=step.training)))
                loss = loss * tf.cast(scale, loss.dtype)
            gradients.append(tape.gradient(loss, points))
        value, (cosine,) = alignment_penalty([gradients[0]], [gradients[1]], step.sample_weight)
        return value, {"gradient_cosine": cosine}

    def get_config(self):
        return {"weight": self.weight, "eps": self.eps, "norm": self.norm, "clip_min": self.clip_min,
                "clip_max": self.clip_max}


def _true_class_probabilities(y, probabilities):
    """p_y per example, for integer or one-hot labels, and the one-hot mask of y."""
    num_classes = probabilities.shape[-1]
    y = tf.convert_to_tensor(y)
    if y.shape.rank == 2 and y.shape[-1] == num_classes and num_classes > 1:
        y = tf.argmax(y, axis=-1)
    mask = tf.one_hot(tf.reshape(tf.cast(y, tf.int32), [-1]), num_classes, dtype=probabilities.dtype)
    return tf.reduce_sum(mask * probabilities, axis=1), mask


@keras.saving.register_keras_serializable(package="gfa_keras")
class AdversarialMargin(Regularizer):
    """MART's margin term (Wang et al. 2020): mean over the batch of
    -log(1.0001 - max_{k != y} p_k(x)) at the step's (perturbed) batch.

    With the cross-entropy task loss it makes MART's "boosted cross-entropy": besides
    raising the true class's probability it lowers the strongest wrong class's. No extra
    passes: it reads the step's own predictions. Needs logits.

    Args:
        weight: Its weight (1 in MART).
    """

    name = "mart_margin"
    needs_logits = True

    def __init__(self, weight=1.0):
        super().__init__(weight)

    def penalty(self, step):
        p = tf.nn.softmax(tf.cast(step.y_pred, tf.float32))
        _, mask = _true_class_probabilities(step.y, p)
        # MART's constants: 1.0001 keeps the log finite as the wrong class's p nears 1.
        strongest_wrong = tf.reduce_max(p - 2.0 * mask, axis=1)
        return tf.reduce_mean(-tf.math.log(1.0001 - strongest_wrong + 1e-12)), {}


@keras.saving.register_keras_serializable(package="gfa_keras")
class MisclassificationAwareKL(Regularizer):
    """MART's robustness term (Wang et al. 2020): mean over the batch of
    KL(p(x) || p(x')) * (1 - p_y(x)), x the clean batch and x' the step's perturbed one.

    Weighting each example by how far its clean prediction is from the truth puts the
    pull toward a smooth prediction on the misclassified and barely classified points.
    Gradients flow through both the clean and the perturbed predictions, as in MART's
    code. One extra forward and backward pass (the clean batch); needs logits and a
    perturbation (without one x' = x and the term is 0).

    Args:
        weight: MART's lambda (6 in the paper for CIFAR-10).
    """

    name = "mart_kl"
    needs_logits = True

    def __init__(self, weight=6.0):
        super().__init__(weight)

    def penalty(self, step):
        base = step.model.base_model
        if step.x is step.clean_x:
            logits_clean = step.y_pred
        else:
            # The clean pass normalizes with its own batch statistics but leaves the moving
            # ones to the step's training forward pass (batch_norm.py).
            with frozen_moving_statistics(base):
                logits_clean = base(step.clean_x, training=step.training)
        p_clean = tf.nn.softmax(tf.cast(logits_clean, tf.float32))
        true_clean, _ = _true_class_probabilities(step.y, p_clean)
        kl = _kl_per_example(p_clean, step.y_pred)
        # MART's 1.0000001 keeps a perfectly classified point's weight above zero.
        return tf.reduce_mean(kl * (1.0000001 - true_clean)), {}
