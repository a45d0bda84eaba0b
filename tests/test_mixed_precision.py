"""Mixed precision: the second-order GFA penalty stays finite and close to float32.

The same small MLP with the same weights is run under the float32 policy and under
a mixed one (float16 with loss scaling, bfloat16 without); the penalty, the
alignments, the penalty's own gradient and a short training run are compared.
Measured differences on this model (1 - cos of the penalty gradient, its relative
error): float16 1e-7, 5e-4; bfloat16 3e-5, 8e-3. The tolerances below leave a
margin of at least 4x over the measured differences.
"""
import math

import keras
import numpy as np
import pytest

from gfa_keras import harden

from conftest import make_mlp

# policy: (penalty and alignment tolerance, relative tolerance on the penalty gradient)
POLICIES = {"mixed_float16": (1e-3, 2e-3), "mixed_bfloat16": (5e-3, 3e-2)}
INITIAL_LOSS_SCALE = 2.0**15  # Keras' LossScaleOptimizer default


def run_under(policy, weights, penalty_weight, work, learning_rate=1.0):
    """Builds the hardened MLP under `policy` with `weights`, compiled with SGD, and
    returns `work(model)`."""
    keras.mixed_precision.set_global_policy(policy)
    try:
        base = make_mlp()
        base.set_weights(weights)
        model = harden(base, layers=3, penalty_weight=penalty_weight)
        model.compile(optimizer=keras.optimizers.SGD(learning_rate),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return work(model)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def flat_weights(model):
    return np.concatenate([w.numpy().astype("float64").ravel() for w in model.base_model.weights])


@pytest.fixture(scope="module")
def initial_weights():
    return make_mlp().get_weights()


@pytest.fixture(scope="module")
def batch(digits):
    (x, y), _ = digits
    return x[:64], y[:64]


@pytest.mark.parametrize("policy", list(POLICIES))
def test_penalty_and_alignments_match_float32(policy, initial_weights, batch):
    def evaluate(model):
        return model.evaluate(*batch, batch_size=64, return_dict=True, verbose=0)

    low, full = (run_under(p, initial_weights, 0.1, evaluate) for p in (policy, "float32"))
    tolerance = POLICIES[policy][0]
    assert full["gfa_penalty"] > 1.0  # cosines near 0 at initialisation: a penalty near 3
    np.testing.assert_allclose(low["gfa_penalty"], full["gfa_penalty"], rtol=tolerance)
    for layer in ("dense_1", "dense_2", "logits"):
        assert abs(low[f"alignment_{layer}"] - full[f"alignment_{layer}"]) < tolerance, layer


@pytest.mark.parametrize("policy", list(POLICIES))
def test_second_order_penalty_gradient_matches_float32(policy, initial_weights, batch):
    # One SGD step (learning rate 1) with beta = 1 and one with beta = 0 from the same
    # weights: their difference is exactly the gradient of the penalty.
    def penalty_gradient(policy):
        def one_step(model):
            model.train_on_batch(*batch)
            return flat_weights(model), model.optimizer

        (plain, _), (hardened, optimizer) = (run_under(policy, initial_weights, beta, one_step) for beta in (0, 1))
        return plain - hardened, optimizer

    low, optimizer = penalty_gradient(policy)
    full, _ = penalty_gradient("float32")
    assert np.all(np.isfinite(low))
    assert np.linalg.norm(full) > 0.1
    relative_error = np.linalg.norm(low - full) / np.linalg.norm(full)
    assert relative_error < POLICIES[policy][1]
    uses_loss_scaling = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    assert uses_loss_scaling == (policy == "mixed_float16")  # bfloat16 has float32's range


@pytest.mark.parametrize("policy", list(POLICIES))
def test_training_stays_finite_and_follows_float32(policy, initial_weights, digits):
    (x, y), _ = digits

    def fit(model):
        history = model.fit(x[:256], y[:256], batch_size=32, epochs=3, shuffle=False, verbose=0).history
        scaled = isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        scale = float(model.optimizer.dynamic_scale) if scaled else None
        return history, flat_weights(model), scale

    (low, low_weights, scale), (full, full_weights, _) = (
        run_under(p, initial_weights, 0.1, fit, learning_rate=0.1) for p in (policy, "float32"))
    for key in ("loss", "task_loss", "gfa_penalty", "alignment_dense_1", "alignment_logits"):
        assert all(math.isfinite(v) for v in low[key]), key
        np.testing.assert_allclose(low[key], full[key], rtol=1e-2, atol=1e-2, err_msg=key)
    assert np.all(np.isfinite(low_weights))
    start = np.concatenate([w.astype("float64").ravel() for w in initial_weights])
    # Measured: per layer, the 24 steps' updates differ by at most 4% of their length.
    assert np.linalg.norm(low_weights - full_weights) < 0.15 * np.linalg.norm(full_weights - start)
    if policy == "mixed_float16":
        assert scale == INITIAL_LOSS_SCALE  # no overflow: no step was skipped and no halving
