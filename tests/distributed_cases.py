"""One small training run per defense method, the same in every process and strategy.

Shared by `test_distribution.py` (the single-device reference, in the pytest process)
and `distributed_worker.py` (the same runs under MirroredStrategy or
MultiWorkerMirroredStrategy, in subprocesses). Everything that could differ between
processes is pinned: seeded initializers, fixed data, SGD, no shuffling, and
deterministic attacks (PGD without a random start, TRADES from a fixed start).
"""
import contextlib
import json

import keras
import numpy as np
import tensorflow as tf

from gfa_keras import HardenedModel, harden
from gfa_keras.training.monitors import CatastrophicOverfittingMonitor, CollapseGuard
from gfa_keras.training.schedules import EpsilonWarmup, WeightPerturbationWarmup
from gfa_keras.training.perturbations import FGSM, NFGSM, PGD
from gfa_keras.training.regularizers import (
    AdversarialMargin, GradAlign, GradientFeatureAlignment, InputGradientNorm, MisclassificationAwareKL, TradesKL,
)
from gfa_keras.training.weight_perturbation import AdversarialWeightPerturbation

GLOBAL_BATCH = 16
EPOCHS = 2
EPS = 0.1
# Validation under a strategy costs seconds per model (its own distributed trace):
# one method checks the test step.
VALIDATED = ("gfa",)


def _pgd():
    return PGD(EPS, steps=3, random_start=False)


class FixedStartTradesKL(TradesKL):
    """TRADES whose KL attack starts from x + 0.001 * a fixed +-1 pattern, the same for
    every example: TRADES' own N(0, 1) start is drawn per replica, so it depends on how
    the batch is split and cannot match single-device training."""

    def attack_start(self, x):
        pattern = np.random.default_rng(5).choice([-1.0, 1.0], size=(8, 8, 1)).astype("float32")
        return tf.clip_by_value(x + 0.001 * pattern, self.attack.clip_min, self.attack.clip_max)


def _pattern(seed):
    """A fixed +-1 pattern, the same for every example (random draws are made per replica)."""
    return np.random.default_rng(seed).choice([-1.0, 1.0], size=(8, 8, 1)).astype("float32")


class FixedStartFGSM(FGSM):
    def start(self, x):
        return tf.clip_by_value(x + 0.5 * self.eps * _pattern(1), self.clip_min, self.clip_max)


class FixedNoiseNFGSM(NFGSM):
    def start(self, x):
        return tf.clip_by_value(x + self.noise_magnitude * _pattern(2), self.clip_min, self.clip_max)


class FixedEtaGradAlign(GradAlign):
    def nearby_points(self, x):
        return tf.clip_by_value(x + self.eps * _pattern(3), self.clip_min, self.clip_max)


# Every defense with a deterministic configuration.
METHODS = {
    "standard": lambda base: harden(base, method="standard"),
    "gfa": lambda base: harden(base, layers=3, penalty_weight=0.5),
    "pgd": lambda base: HardenedModel(base, perturbation=_pgd()),
    "datagrad_l1": lambda base: harden(base, method="datagrad", p=1, penalty_weight=0.05),
    "datagrad_l2": lambda base: harden(base, method="datagrad", p=2, penalty_weight=0.5),
    "hybrid": lambda base: HardenedModel(base, perturbation=_pgd(),
                                         regularizers=[InputGradientNorm(p=2, squared=True, weight=0.5)]),
    "gfa_pgd": lambda base: HardenedModel(base, perturbation=_pgd(),
                                          regularizers=[GradientFeatureAlignment(3, weight=0.5)]),
    "trades": lambda base: HardenedModel(base, regularizers=[FixedStartTradesKL(1.0, EPS, steps=3)]),
    "mart": lambda base: HardenedModel(base, perturbation=_pgd(),
                                       regularizers=[AdversarialMargin(1.0), MisclassificationAwareKL(1.0)]),
    # AWP's perturbation comes from the global batch's gradient (all-reduced), and the
    # weight averages are written through the strategy: both must match one device.
    "pgd_awp": lambda base: HardenedModel(base, perturbation=_pgd(),
                                          weight_perturbation=AdversarialWeightPerturbation(0.05)),
    "trades_awp_ema": lambda base: HardenedModel(base, regularizers=[FixedStartTradesKL(1.0, EPS, steps=3)],
                                                 weight_perturbation=AdversarialWeightPerturbation(0.05),
                                                 ema_momentum=0.5),
}

# The single-step defenses, run by their own worker process (one process for every case
# would outlast the worker timeout on a loaded machine).
SINGLE_STEP = {
    "fgsm_rs": lambda base: HardenedModel(base, perturbation=FixedStartFGSM(EPS, random_start=True)),
    "n_fgsm_gradalign": lambda base: HardenedModel(base, perturbation=FixedNoiseNFGSM(EPS),
                                                   regularizers=[FixedEtaGradAlign(0.5, EPS)]),
    "n_fgsm_gfa": lambda base: HardenedModel(base, perturbation=FixedNoiseNFGSM(EPS),
                                             regularizers=[GradientFeatureAlignment(3, weight=0.5)]),
}

# Callbacks per method: the training monitors log into the history that is compared
# (PGD without a random start, so that the measurement is deterministic).
CALLBACKS = {
    "n_fgsm_gradalign": lambda validation: [
        CatastrophicOverfittingMonitor(validation, EPS, pgd_steps=3, pgd_random_start=False),
        CollapseGuard(validation, on_collapse="stop"),
    ],
    # AWP off in epoch 0, on in epoch 1: the warm-up writes the (mirrored) gamma between epochs.
    "pgd_awp": lambda validation: [WeightPerturbationWarmup(start_epoch=1)],
    # The training radius ramped over 3 steps: the ramp reads the (mirrored) optimizer step count,
    # and TRADES' inner attack runs at its fraction of eps on every replica.
    "trades_awp_ema": lambda validation: [EpsilonWarmup(steps=3)],
}

# What 2 replicas would train if each replica's penalty were not divided by the number of
# replicas: the summed gradients would count the penalty twice (weight 2 x 0.5).
UNSCALED_PENALTY_ON_TWO_REPLICAS = {"gfa_unscaled": lambda base: harden(base, layers=3, penalty_weight=1.0)}


def data():
    """32 training and 16 validation examples of shape (8, 8, 1) in [0, 1], 10 classes."""
    rng = np.random.default_rng(7)
    x = rng.uniform(size=(48, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 10, size=48).astype("int32")
    return (x[:32], y[:32]), (x[32:], y[32:])


def base_model():
    """A three-layer MLP with seeded initializers: identical weights in every process."""
    def init(seed):
        return keras.initializers.GlorotUniform(seed=seed)

    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="relu", kernel_initializer=init(1), bias_initializer="ones",
                               name="dense_1"),
            keras.layers.Dense(16, activation="relu", kernel_initializer=init(2), name="dense_2"),
            keras.layers.Dense(10, kernel_initializer=init(3), name="logits"),
        ],
        name="mlp",
    )


def train(method, strategy=None, jit_compile=False):
    """Trains `method` for EPOCHS epochs; returns (final weights, history dict).

    With a strategy, the model is created and compiled in its scope, as the user would.
    Methods in VALIDATED also get validation data (the val_ metrics of the test step).
    `jit_compile=True` compiles the steps with XLA instead of running them as graphs.
    """
    keras.utils.set_random_seed(0)
    (x, y), validation = data()
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        model = {**METHODS, **UNSCALED_PENALTY_ON_TWO_REPLICAS, **SINGLE_STEP}[method](base_model())
        model.compile(optimizer=keras.optimizers.SGD(0.5),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"],
                      jit_compile=jit_compile)
    history = model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=EPOCHS, shuffle=False,
                        validation_data=validation if method in VALIDATED else None,
                        callbacks=CALLBACKS[method](validation) if method in CALLBACKS else None, verbose=0)
    return [w.numpy() for w in model.base_model.weights], {k: [float(v) for v in vs]
                                                           for k, vs in history.history.items()}


def save(path, results):
    """Writes {method: (weights, history)} to `path` (.npz, the histories as JSON)."""
    arrays = {f"{m}/{i}": w for m, (weights, _) in results.items() for i, w in enumerate(weights)}
    arrays["histories"] = np.array(json.dumps({m: h for m, (_, h) in results.items()}))
    np.savez(path, **arrays)


def load(path):
    """Reads what `save` wrote."""
    with np.load(path) as f:
        histories = json.loads(str(f["histories"]))
        return {m: ([f[f"{m}/{i}"] for i in range(sum(k.startswith(f"{m}/") for k in f.files))], h)
                for m, h in histories.items()}
