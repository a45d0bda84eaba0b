"""`HardenedModel`: trains a wrapped classifier with a perturbation and regularizers.

`model.fit` stays `model.fit`: the wrapper overrides `train_step` (nested tapes for
the second-order penalties) and `test_step` (the same penalties on validation data);
`call` forwards to the wrapped model, whose weights are shared, not copied.

One step, whatever the method:
1. `x_train = perturbation(x)` when there is one (adversarial training), else x. The
   step's noise (random starts and the like) is a function of the model's `seed` and
   the optimizer's step count, both saved: a resumed run repeats the straight one.
   During an `EpsilonWarmup` the perturbation (and TRADES' inner attack) runs at a
   fraction of eps that grows with the same step count.
2. With a weight perturbation (AWP): the objective of steps 3-4 at the current weights,
   its gradient, and the kernels moved by the weight-ascent step (removed after step 5).
3. Under an outer tape, an inner tape records the forward pass through a multi-output
   feature extractor (the taps and the predictions) and the task loss; ONE inner
   backward pass gives dL/dh for every tap and for the input.
4. Each regularizer turns those into a penalty; total = task + sum_r weight_r * penalty_r.
5. The outer tape differentiates total with respect to the weights (second order) and
   the optimizer steps.
6. With weight averaging: the exponential moving average of the weights is updated.

`GFAModel` is the paper's method: a `HardenedModel` with one `GradientFeatureAlignment`.
"""
from __future__ import annotations

import contextlib
import random

import keras
import numpy as np
import tensorflow as tf

from gfa_keras.training.perturbations import Perturbation, radius_scale, step_seeds
from gfa_keras.training.regularizers import GradientFeatureAlignment, Regularizer, StepTensors
from gfa_keras.training.taps import MODEL_INPUT, build_feature_extractor
from gfa_keras.training.weight_perturbation import AdversarialWeightPerturbation, update_variables
from gfa_keras.validation import check_number

__all__ = ["HardenedModel", "GFAModel"]

DEFAULT_PENALTY_WEIGHT = 0.01
_AWP_METRICS = ("awp_norm", "awp_loss_gain")


def require_tensorflow_backend():
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(
            "gfa_keras trains with nested tf.GradientTape and needs the TensorFlow backend. "
            "Set the environment variable KERAS_BACKEND=tensorflow before importing keras. "
            f"Received: keras.backend.backend()={backend!r}"
        )


def check_base_model(model):
    if not isinstance(model, keras.Model):
        raise ValueError(
            "Expected a Keras 3 model (keras.Model, Sequential or Functional). "
            f"Received: model of type {type(model).__name__}"
        )
    if not model.built:
        raise ValueError(
            f"Model '{model.name}' is not built: its layers have no weights yet. Build it first, e.g. "
            "with keras.Input in a Sequential/Functional model, model.build(input_shape), or by "
            "calling it on a batch. Received: an unbuilt model"
        )


def _num_replicas():
    return tf.distribute.get_strategy().num_replicas_in_sync


def _multi_worker(strategy):
    """True when `strategy` is a MultiWorkerMirroredStrategy spanning several workers
    (the condition Keras' trainer itself tests)."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and \
        strategy.extended._in_multi_worker_mode()


def _as_vector(value):
    return tf.reshape(value, [-1]) if isinstance(value, tf.Tensor) and value.shape.rank == 0 else value


def _averaged(variables):
    """The base model's variables that weight averaging follows: every float variable,
    trainable or not, so that batch-norm statistics are averaged with the weights."""
    return [v for v in variables if v.dtype is not None and "float" in str(v.dtype)]


def _swap(pairs):
    """Exchanges the values of each pair of variables (eagerly, outside train_step)."""
    for a, b in pairs:
        # A NumPy copy: a tensor read from a variable may share its buffer, which the
        # assignment would then overwrite.
        value = np.array(keras.ops.convert_to_numpy(a))
        a.assign(keras.ops.convert_to_numpy(b))
        b.assign(value)


def _as_tensors(structure):
    # With run_eagerly=True Keras hands over NumPy arrays, which tapes cannot watch.
    return tf.nest.map_structure(lambda v: v if v is None else tf.convert_to_tensor(v), structure)


def _serialize(obj):
    return keras.saving.serialize_keras_object(obj)


def _deserialize(config, custom_objects=None):
    return keras.saving.deserialize_keras_object(config, custom_objects=custom_objects)


@keras.saving.register_keras_serializable(package="gfa_keras")
class HardenedModel(keras.Model):
    """Wraps a classifier so that `fit` trains it with a perturbation and regularizers.

    Args:
        base_model: A built Keras classifier (Sequential or Functional; a subclassed
            model can be tapped at its input only) whose weights are shared.
        perturbation: None (train on clean data) or a `Perturbation` such as
            `PGD(eps=8/255, steps=7)`: the task loss is then taken on the perturbed batch.
        regularizers: `Regularizer`s (`GradientFeatureAlignment`, `InputGradientNorm`,
            `TradesKL`), each with its own weight; names must be distinct.
        weight_perturbation: None or an `AdversarialWeightPerturbation` (AWP, Wu et al.
            2020): each step then takes its gradient at weights moved up the training
            objective (computed on the perturbed batch) and removes the move after the
            optimizer step. Costs one more forward and backward pass per step.
            Batch-norm moving statistics are then moved by the update's training
            forward pass at the perturbed weights (as in Wu et al.'s code); the ascent
            pass at the unperturbed weights leaves them alone.
        ema_momentum: None, or a number in (0, 1) (e.g. 0.999): keep an exponential
            moving average of the base model's weights AND its non-trainable float
            variables (batch-norm statistics), updated after every step with momentum
            `min(ema_momentum, (1 + t) / (10 + t))` at update t (the first update copies
            the weights). When `fit` returns, the averaged weights are in the base model
            (what `evaluate`, `predict` and `save` use); the next `fit` swaps the trained
            weights back in and goes on from them. Validation during `fit` (`val_*`) sees
            the trained, not the averaged, weights; `averaged_weights()` swaps them in
            for a callback. (Keras' own `use_ema` optimizer option is not used: it averages
            only the variables it trains, not batch-norm statistics, and at the end of
            every `fit` it overwrites the trained weights with the average, so a resumed
            `fit` would go on from the average.)
        seed: The integer seed of the training noise (random starts, N-FGSM's noise,
            GradAlign's nearby points, TRADES' start): each step's noise is a function of
            it and the optimizer's step count, so a run resumed from a saved `.keras`
            file goes on exactly as the uninterrupted run would have. Saved with the
            model; default: drawn from Python's `random`, which `keras.utils.set_random_seed`
            seeds.
        **kwargs: Passed to `keras.Model` (e.g. `name`).

    Logged metrics: `loss` (total), `task_loss`, `<name>_penalty` for each regularizer
    (unweighted), `<name>_weight` (its current weight), `alignment_<layer>` for GFA,
    with AWP `awp_norm` (the global norm of the weight perturbation) and `awp_loss_gain`
    (the objective at the perturbed weights minus at the weights), and the compiled
    metrics; the same with `val_` on validation data (AWP: training only). Validation runs
    on clean data (no perturbation); `TradesKL` runs its own attack there too.

    Trains under `tf.distribute` (`MirroredStrategy`, `MultiWorkerMirroredStrategy`:
    build and compile it in `strategy.scope()`), in mixed precision and with
    `jit_compile=True`; see docs/SCALING.md.

    Example:

    >>> from gfa_keras.training.perturbations import PGD
    >>> from gfa_keras.training.regularizers import InputGradientNorm
    >>> base = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
    ...                          keras.layers.Dense(10)])
    >>> hybrid = HardenedModel(base, perturbation=PGD(eps=0.1, steps=7),
    ...                        regularizers=[InputGradientNorm(p=2, squared=True, weight=0.1)])
    """

    def __init__(self, base_model, perturbation=None, regularizers=(), weight_perturbation=None,
                 ema_momentum=None, seed=None, **kwargs):
        require_tensorflow_backend()
        check_base_model(base_model)
        if perturbation is not None and not isinstance(perturbation, Perturbation):
            raise ValueError(
                "perturbation must be None or a gfa_keras Perturbation (FGSM, NFGSM, PGD). "
                f"Received: perturbation={perturbation!r}"
            )
        regularizers = list(regularizers)
        bad = [r for r in regularizers if not isinstance(r, Regularizer)]
        if bad:
            raise ValueError(
                "regularizers must be gfa_keras Regularizers (GradientFeatureAlignment, InputGradientNorm, "
                f"TradesKL, GradAlign). Received: {bad!r}"
            )
        if weight_perturbation is not None and not isinstance(weight_perturbation, AdversarialWeightPerturbation):
            raise ValueError(
                "weight_perturbation must be None or an AdversarialWeightPerturbation. "
                f"Received: weight_perturbation={weight_perturbation!r}"
            )
        if ema_momentum is not None:
            ema_momentum = check_number("ema_momentum", ema_momentum, low=0, high=1, low_open=True, high_open=True)
        if seed is None:
            seed = random.randrange(2**31)
        elif isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**63:
            raise ValueError(f"seed must be None or a non-negative integer. Received: seed={seed!r}")
        names = [r.name for r in regularizers]
        if len(set(names)) != len(names):
            raise ValueError(f"Each regularizer may appear once. Received regularizers named: {names}")
        attacked = perturbation is not None or any(r.needs_logits for r in regularizers)
        if attacked and len(getattr(base_model, "outputs", None) or [None]) != 1:
            raise ValueError(
                "Adversarial training (a perturbation or TradesKL) attacks the model's logits and needs a "
                f"model with one output. Received: model '{base_model.name}' with "
                f"{len(base_model.outputs)} outputs"
            )
        for regularizer in regularizers:
            regularizer.bind(base_model)
        super().__init__(**kwargs)
        self.base_model = base_model
        self.perturbation = perturbation
        self.regularizers = regularizers
        self.weight_perturbation = weight_perturbation
        self.ema_momentum = ema_momentum
        self.seed = int(seed)

        self._taps = tuple(dict.fromkeys(n for r in regularizers for n in r.tapped_layers if n != MODEL_INPUT))
        self._needs_input_gradient = any(
            r.needs_input_gradient or MODEL_INPUT in r.tapped_layers for r in regularizers
        )
        self._needs_gradients = bool(self._taps) or self._needs_input_gradient
        self._feature_extractor = build_feature_extractor(base_model, self._taps) if self._taps else None
        # Weights are variables so that callbacks (warm-up) can change them without retracing.
        self.penalty_weights = {
            r.name: self.add_weight(shape=(), initializer=keras.initializers.Constant(r.weight),
                                    trainable=False, name=f"{r.name}_weight")
            for r in regularizers
        }
        self.task_loss_tracker = keras.metrics.Mean(name="task_loss")
        self._penalty_trackers = {
            metric: keras.metrics.Mean(name=metric) for r in regularizers for metric in r.metric_names()
        }
        self._weight_trackers = {
            r.name: keras.metrics.Mean(name=f"{r.name}_weight") for r in regularizers
        }
        if weight_perturbation is not None:
            self._penalty_trackers.update({m: keras.metrics.Mean(name=m) for m in _AWP_METRICS})
            # AWP's gamma as the step reads it, for `WeightPerturbationWarmup` to change between
            # epochs without retracing. A tf.Variable, which Keras does not save: a loaded model
            # starts at the configured gamma whatever epoch of a warm-up it was saved in. At gamma
            # 0 the ascent pass still runs (no branch on a variable around an all-reduce).
            self.awp_gamma = tf.Variable(weight_perturbation.gamma, trainable=False, dtype=tf.float32,
                                         name="awp_gamma")
        if perturbation is not None or any(isinstance(getattr(r, "attack", None), Perturbation)
                                           for r in regularizers):  # TRADES' KL runs an attack of its own
            # The length in optimizer steps of `EpsilonWarmup`'s ramp of the training radius; 0
            # (no ramp) unless the callback is training the model. Not saved, like awp_gamma.
            self.eps_warmup_steps = tf.Variable(0.0, trainable=False, dtype=tf.float32, name="eps_warmup_steps")
        self._ema_pairs = []
        if ema_momentum is not None:
            self._ema_pairs = [
                (v, self.add_weight(shape=v.shape, dtype=v.dtype, initializer="zeros", trainable=False,
                                    name=f"ema_{i}"))
                for i, v in enumerate(_averaged(base_model.weights))
            ]
            self._ema_updates = self.add_weight(shape=(), dtype="float32", initializer="zeros", trainable=False,
                                                name="ema_updates")
            # 1 while the base model holds the averaged weights (the trained ones then
            # wait in the ema_* variables); saved, so a loaded model knows which it holds.
            self._ema_swapped = self.add_weight(shape=(), dtype="float32", initializer="zeros", trainable=False,
                                                name="ema_swapped")
        # The base model is built, so the wrapper is too: without this, save_weights,
        # ModelCheckpoint and Keras Tuner fail on a wrapper that was never called.
        self.built = True

    def call(self, inputs, training=None):
        return self.base_model(inputs, training=training)

    def regularizer(self, name) -> Regularizer:
        """The regularizer called `name`, or a ValueError listing the model's ones."""
        for r in self.regularizers:
            if r.name == name:
                return r
        raise ValueError(
            f"No regularizer named {name!r}. Expected one of {[r.name for r in self.regularizers]}."
        )

    def _forward(self, x, clean_x, y, sample_weight, training):
        """Task loss, predictions and the tensors the regularizers need."""
        features, feature_gradients, input_gradient = {}, {}, None
        if not self._needs_gradients:
            y_pred = self.base_model(x, training=training)
            task_loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
            return task_loss, StepTensors(x, clean_x, y, sample_weight, y_pred, {}, {}, None, self, training)

        inputs = [t for t in tf.nest.flatten(x) if t.dtype.is_floating]
        with tf.GradientTape() as inner:
            inner.watch(inputs)
            if self._feature_extractor is not None:
                tapped, y_pred = self._feature_extractor(x, training=training)
                features = dict(zip(self._taps, tapped))
            else:
                y_pred = self.base_model(x, training=training)
            task_loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
            # Per-example gradients: the gradient of the summed (not averaged) loss. The
            # optimizer's loss scale keeps float16 backprop from underflowing.
            batch_size = tf.cast(tf.shape(inputs[0])[0] * _num_replicas(), task_loss.dtype)
            loss_scale = self.optimizer.scale_loss(tf.constant(1.0, task_loss.dtype)) \
                if self.optimizer is not None else 1.0
            inner_target = task_loss * batch_size * loss_scale
        sources = [features[n] for n in self._taps] + (inputs[:1] if self._needs_input_gradient else [])
        gradients = inner.gradient(inner_target, sources)
        names = list(self._taps) + ([MODEL_INPUT] if self._needs_input_gradient else [])
        missing = [n for n, g in zip(names, gradients) if g is None]
        if missing:
            raise RuntimeError(
                f"The loss does not depend on the input of {missing}: its gradient is None. "
                "Tap layers on the path from the input to the output."
            )
        gradients = [g / tf.cast(loss_scale, g.dtype) for g in gradients]
        feature_gradients = dict(zip(names, gradients))
        if self._needs_input_gradient:
            features[MODEL_INPUT] = inputs[0]
            input_gradient = feature_gradients[MODEL_INPUT]
        step = StepTensors(x, clean_x, y, sample_weight, y_pred, features, feature_gradients, input_gradient,
                           self, training)
        return task_loss, step

    def _total_loss(self, x, y, sample_weight, training, x_train=None, cache=None):
        """(total, task_loss, {metric: value}, y_pred) for one batch.

        `x_train` is the already perturbed batch (else the perturbation runs here);
        `cache` lets regularizers reuse their own attacks' points between the two passes
        of an AWP step."""
        clean_x = x
        if x_train is not None:
            x = x_train
        elif training and self.perturbation is not None:
            x = self.perturbation(self.base_model, x, y)
        task_loss, step = self._forward(x, clean_x, y, sample_weight, training)
        if cache is not None:
            step.cache = cache
        total, logs = task_loss, {}
        for r in self.regularizers:
            value, extra = r.penalty(step)
            # Keras scales the compiled loss by 1/replicas so that summed replica
            # gradients average; penalties (batch means) get the same treatment.
            weighted = self.penalty_weights[r.name] * tf.cast(value, task_loss.dtype) / _num_replicas()
            total = total + tf.cast(weighted, task_loss.dtype)
            logs[f"{r.name}_penalty"] = value
            logs.update(extra)
        return total, task_loss, logs, step.y_pred

    def _update_trackers(self, x, total, task_loss, logs):
        batch_size = tf.shape(tf.nest.flatten(x)[0])[0]
        # compute_loss does not update the `loss` tracker in Keras 3.15; the built-in
        # train_step does it itself (undoing the 1/replicas scaling), so we do too.
        replicas = _num_replicas()
        self._loss_tracker.update_state(total * replicas, sample_weight=batch_size)
        self.task_loss_tracker.update_state(task_loss * replicas, sample_weight=batch_size)
        for name, value in logs.items():
            self._penalty_trackers[name].update_state(value, sample_weight=batch_size)
        for name, tracker in self._weight_trackers.items():
            tracker.update_state(self.penalty_weights[name])

    def _step_logs(self, x, y, y_pred, sample_weight):
        logs = self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
        if _multi_worker(self.distribute_strategy):
            # Keras 3 averages step outputs across workers with strategy.reduce(axis=0),
            # which fails on scalars (keras-team/keras#20585): give it vectors of one.
            logs = tf.nest.map_structure(_as_vector, logs)
        return logs

    def train_step(self, data):
        with step_seeds(self._step_noise_seed()), radius_scale(self._radius_scale()):
            return self._train_step(data)

    def _radius_scale(self):
        """This step's fraction of the training radius: (step + 1) / warm-up steps, at most 1;
        1 without a warm-up. The step count is the optimizer's, saved with it, so a resumed
        run continues the ramp where it stopped."""
        steps = getattr(self, "eps_warmup_steps", None)
        if steps is None:
            return None
        progress = (tf.cast(self.optimizer.iterations, tf.float32) + 1.0) / tf.maximum(steps, 1.0)
        return tf.where(steps > 0.0, tf.minimum(progress, 1.0), 1.0)

    def _step_noise_seed(self):
        """The seed of this step's noise: the model's seed, the optimizer's step count and,
        under tf.distribute, the replica (each draws its own)."""
        seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(self.optimizer.iterations, tf.int64)])
        context = tf.distribute.get_replica_context()
        replica = context.replica_id_in_sync_group if context is not None else 0
        return tf.random.experimental.stateless_fold_in(seed, replica)

    def _train_step(self, data):
        x, y, sample_weight = _as_tensors(keras.utils.unpack_x_y_sample_weight(data))
        x_train = self.perturbation(self.base_model, x, y) if self.perturbation is not None else x
        cache = {}
        perturbed, deltas = [], []
        if self.weight_perturbation is not None:
            perturbed, deltas, base_total = self._weight_ascent(x, x_train, y, sample_weight, cache)
        with tf.GradientTape() as outer:
            total, task_loss, logs, y_pred = self._total_loss(x, y, sample_weight, training=True, x_train=x_train,
                                                              cache=cache)
            scaled_total = self.optimizer.scale_loss(total)
        variables = self.trainable_variables
        self.optimizer.apply(outer.gradient(scaled_total, variables), variables)
        if self.weight_perturbation is not None:
            # Wu et al.'s order: the optimizer steps at the perturbed weights, then the
            # perturbation is taken away again.
            update_variables(perturbed, deltas, lambda v, d: v.assign_sub(d))
            logs["awp_norm"] = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(d)) for d in deltas]))
            logs["awp_loss_gain"] = (total - base_total) * _num_replicas()
        if self._ema_pairs:
            self._update_averages()
        self._update_trackers(x, total, task_loss, logs)
        return self._step_logs(x, y, y_pred, sample_weight)

    def _weight_ascent(self, x, x_train, y, sample_weight, cache):
        """AWP's ascent: moves the kernels by the weight perturbation, returns
        (variables, deltas, objective at the unperturbed weights)."""
        perturbed = self.weight_perturbation.perturbed(self.trainable_variables)
        # The ascent pass runs in training mode, like the update's, but must not move
        # batch-norm statistics: they are put back afterwards, and the update's pass (at
        # the perturbed weights) moves them once, as Wu et al.'s proxy model arranges.
        statistics = _averaged(self.base_model.non_trainable_variables)
        saved = [tf.identity(keras.ops.convert_to_tensor(v)) for v in statistics]
        with tf.GradientTape() as tape:
            base_total, _, _, _ = self._total_loss(x, y, sample_weight, training=True, x_train=x_train, cache=cache)
        gradients = tape.gradient(base_total, perturbed)
        context = tf.distribute.get_replica_context()
        if context is not None and tf.distribute.has_strategy():
            # The loss is already divided by the number of replicas: summing gives the
            # gradient of the global batch, the same perturbation on every replica.
            present = [i for i, g in enumerate(gradients) if g is not None]
            reduced = context.all_reduce(tf.distribute.ReduceOp.SUM, [gradients[i] for i in present])
            gradients = list(gradients)
            for i, g in zip(present, reduced):
                gradients[i] = g
        deltas = self.weight_perturbation.deltas(perturbed, gradients, gamma=self.awp_gamma)
        if statistics:
            update_variables(statistics, saved, lambda v, value: v.assign(value))
        update_variables(perturbed, deltas, lambda v, d: v.assign_add(d))
        return perturbed, deltas, tf.stop_gradient(base_total)

    def _update_averages(self):
        count = keras.ops.convert_to_tensor(self._ema_updates)
        momentum = tf.minimum(self.ema_momentum, (1.0 + count) / (10.0 + count))
        momentum = tf.where(count > 0, momentum, 0.0)  # the first update copies the weights
        values = [momentum * tf.cast(a, tf.float32) + (1.0 - momentum) * tf.cast(w, tf.float32)
                  for w, a in self._ema_pairs]
        update_variables([a for _, a in self._ema_pairs], values, lambda v, value: v.assign(value))
        update_variables([self._ema_updates], [count + 1.0], lambda v, value: v.assign(value))

    def _holds_averages(self):
        return bool(self._ema_pairs) and float(keras.ops.convert_to_numpy(self._ema_swapped)) == 1.0

    def use_averaged_weights(self, averaged: bool = True):
        """Puts the averaged (or, with `averaged=False`, the trained) weights into the base
        model. Without weight averaging, or before the first update, it does nothing."""
        if not self._ema_pairs or float(keras.ops.convert_to_numpy(self._ema_updates)) == 0.0:
            return
        if self._holds_averages() != bool(averaged):
            _swap(self._ema_pairs)
            self._ema_swapped.assign(1.0 if averaged else 0.0)

    @contextlib.contextmanager
    def averaged_weights(self):
        """Context manager: the averaged weights inside, the previous ones after (a no-op
        without weight averaging). For callbacks that judge the model during `fit`."""
        before = self._holds_averages()
        self.use_averaged_weights(True)
        try:
            yield self
        finally:
            self.use_averaged_weights(before)

    def fit(self, *args, **kwargs):
        """`keras.Model.fit`; with weight averaging, trains the trained weights and leaves
        the averaged ones in the base model when it returns (see the class docstring)."""
        if not self._ema_pairs:
            return super().fit(*args, **kwargs)
        self.use_averaged_weights(False)
        try:
            return super().fit(*args, **kwargs)
        finally:
            self.use_averaged_weights(True)

    def test_step(self, data):
        x, y, sample_weight = _as_tensors(keras.utils.unpack_x_y_sample_weight(data))
        total, task_loss, logs, y_pred = self._total_loss(x, y, sample_weight, training=False)
        self._update_trackers(x, total, task_loss, logs)
        # AWP acts in training only: no val_awp_* entries.
        return {k: v for k, v in self._step_logs(x, y, y_pred, sample_weight).items() if k not in _AWP_METRICS}

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras 3 learns the batch shapes by reducing one distributed batch with
        # strategy.reduce, which MultiWorkerMirroredStrategy rejects for a tuple
        # (keras-team/keras#20585); one replica's share has the same shapes.
        strategy = self.distribute_strategy
        if iterator is not None and _multi_worker(strategy):
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0]
                    if isinstance(v, tf.distribute.DistributedValues) else v,
                    next(batches))
                break
            iterator = None
        if self._distribute_strategy is None:
            # Without a strategy Keras defers building to the first trace of train_step:
            # the optimizer's and the compiled metrics' variables are then created inside
            # it, and tf.function traces the whole step a second time (the nested tapes
            # of a ResNet took minutes each). Build them first, as Keras does under a
            # strategy, so the first step traces once.
            if iterator is not None and getattr(iterator, "steps_per_epoch", None) is None:
                # Each epoch starts a fresh iterator, so peeking at one batch loses none
                # (with steps_per_epoch the iterator carries over: no peeking then).
                for _, _, batches in iterator:
                    data_batch = next(batches)
                    break
            if data_batch is not None:
                self._symbolic_build(data_batch=data_batch)
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "base_model": _serialize(self.base_model),
                "perturbation": None if self.perturbation is None else _serialize(self.perturbation),
                "regularizers": [_serialize(r) for r in self.regularizers],
                "weight_perturbation": None if self.weight_perturbation is None
                else _serialize(self.weight_perturbation),
                "ema_momentum": self.ema_momentum,
                "seed": self.seed,
            }
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # Subclasses (GFAModel) drop some parts from their config: only those present are rebuilt.
        config = dict(config)
        config["base_model"] = _deserialize(config["base_model"], custom_objects)
        for part in ("perturbation", "weight_perturbation"):
            if config.get(part) is not None:
                config[part] = _deserialize(config[part], custom_objects)
        if "regularizers" in config:
            config["regularizers"] = [_deserialize(r, custom_objects) for r in config["regularizers"]]
        return cls(**config)


@keras.saving.register_keras_serializable(package="gfa_keras")
class GFAModel(HardenedModel):
    """The paper's method: a `HardenedModel` trained with the layer-wise GFA penalty.

    total = task_loss + penalty_weight * mean_over_batch(sum_l (1 - cos(dL/dh_l, h_l)))

    Args:
        base_model: A built Keras classifier (Sequential or Functional; a subclassed
            model only with `layers=1`, the alignment at its input).
        layers: An int N (the inputs of the first N layers with trainable weights,
            normalisation excluded; 1 = the input image, the paper's FIRST; 3 = DEEP) or
            a list of layer names or layer objects.
        penalty_weight: beta, the weight of the penalty; 0 gives plain training.
        epsilon: Added to the norms' product in the cosine (> 0).
        **kwargs: Passed to `keras.Model` (e.g. `name`).

    Logged metrics: `loss` (total), `task_loss`, `gfa_penalty` (unweighted),
    `gfa_weight`, and `alignment_<layer>` for each tapped layer (the batch-mean cosine,
    1 = fully aligned), plus the compiled metrics; the same with `val_` on validation data.

    Example:

    >>> base = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> model = GFAModel(base, layers=1, penalty_weight=0.1)
    >>> model.tapped_layers
    ('dense',)
    """

    def __init__(self, base_model, layers=3, penalty_weight=DEFAULT_PENALTY_WEIGHT, epsilon=1e-12, **kwargs):
        require_tensorflow_backend()
        check_base_model(base_model)
        # Checked here, under its public name, before the regularizer checks it as `weight`.
        penalty_weight = check_number("penalty_weight", penalty_weight, low=0.0)
        alignment = GradientFeatureAlignment(layers=layers, weight=penalty_weight, epsilon=epsilon)
        super().__init__(base_model, regularizers=[alignment], **kwargs)

    @property
    def tapped_layers(self):
        """The names of the layers whose inputs are aligned."""
        return self.regularizers[0].tapped_layers

    @property
    def penalty_weight(self):
        """beta, as configured (the live value is `penalty_weights["gfa"]`)."""
        return self.regularizers[0].weight

    def get_config(self):
        config = super().get_config()
        alignment = self.regularizers[0]
        del config["perturbation"], config["regularizers"]
        config.update({"layers": list(alignment.tapped_layers), "penalty_weight": alignment.weight,
                       "epsilon": alignment.epsilon})
        return config
