"""Every defense under tf.distribute, and compiled with XLA, trains exactly as on one
device in graph mode.

The distributed runs happen in subprocesses (`distributed_worker.py`): logical CPU
devices and a worker cluster must be set up before TensorFlow initialises, which
the pytest process did long ago. The single-device reference runs here. Same
initial weights, data, global batch and SGD: the final weights must agree to float
round-off and the logged loss, penalties and alignments must be equal.
"""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import distributed_cases as cases

# Subprocesses with their own TensorFlow, and one-device reference runs of every defense.
pytestmark = pytest.mark.slow

WORKER = Path(__file__).with_name("distributed_worker.py")
MULTI_WORKER_METHODS = ("gfa", "hybrid")  # taps, the input gradient and a PGD perturbation
# Bounds a hung worker (e.g. a peer that died during start-up); a normal run takes well
# under a minute on 2 idle cores.
TIMEOUT_SECONDS = 300
RTOL, ATOL = 1e-5, 1e-6


def worker_env(tf_config=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return env


def free_ports(count):
    """Ports of 127.0.0.1 free right now (held open together, so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.fixture(scope="module")
def one_device():
    names = list(cases.METHODS) + list(cases.UNSCALED_PENALTY_ON_TWO_REPLICAS) + list(cases.SINGLE_STEP)
    return {m: cases.train(m) for m in names}


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    out = tmp_path_factory.mktemp("mirrored") / "results.npz"
    result = subprocess.run([sys.executable, str(WORKER), "mirrored", str(out)], env=worker_env(),
                            capture_output=True, text=True, timeout=TIMEOUT_SECONDS)
    assert result.returncode == 0, result.stderr[-3000:]
    return cases.load(out)


@pytest.fixture(scope="module")
def mirrored_single_step(tmp_path_factory):
    out = tmp_path_factory.mktemp("mirrored_single_step") / "results.npz"
    result = subprocess.run([sys.executable, str(WORKER), "mirrored", str(out), *cases.SINGLE_STEP],
                            env=worker_env(), capture_output=True, text=True, timeout=TIMEOUT_SECONDS)
    assert result.returncode == 0, result.stderr[-3000:]
    return cases.load(out)


@pytest.fixture(scope="module")
def multi_worker(tmp_path_factory):
    """Two worker processes on 127.0.0.1; returns each worker's results."""
    tmp = tmp_path_factory.mktemp("multi_worker")
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    workers = []
    try:
        for index in range(2):
            env = worker_env({"cluster": cluster, "task": {"type": "worker", "index": index}})
            log = open(tmp / f"worker{index}.log", "w")
            workers.append((subprocess.Popen([sys.executable, str(WORKER), "multiworker",
                                              str(tmp / f"worker{index}.npz"), *MULTI_WORKER_METHODS],
                                             env=env, stdout=log, stderr=subprocess.STDOUT), log))
        for process, _ in workers:
            process.wait(timeout=TIMEOUT_SECONDS)
    finally:
        for process, log in workers:
            if process.poll() is None:
                process.kill()
                process.wait()
            log.close()
    for index, (process, _) in enumerate(workers):
        assert process.returncode == 0, (tmp / f"worker{index}.log").read_text()[-3000:]
    return [cases.load(tmp / f"worker{index}.npz") for index in range(2)]


def assert_same_training(distributed, reference):
    weights, history = distributed
    reference_weights, reference_history = reference
    for w, r in zip(weights, reference_weights, strict=True):
        np.testing.assert_allclose(w, r, rtol=RTOL, atol=ATOL)
    assert history.keys() == reference_history.keys()
    for key, values in history.items():
        np.testing.assert_allclose(values, reference_history[key], rtol=RTOL, atol=ATOL, err_msg=key)


def max_difference(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b, strict=True))


def test_the_comparison_would_see_a_penalty_counted_once_per_replica(one_device):
    # Without the 1/replicas scaling, 2 replicas would train like penalty weight 2 x beta.
    weights, _ = one_device["gfa"]
    unscaled, _ = one_device["gfa_unscaled"]
    assert max_difference(weights, unscaled) > 1000 * ATOL


@pytest.mark.parametrize("method", list(cases.METHODS))
def test_mirrored_strategy_on_two_devices_trains_like_one_device(method, mirrored, one_device):
    assert_same_training(mirrored[method], one_device[method])


def test_mirrored_run_logs_every_penalty_and_validation_metric(mirrored):
    _, gfa_history = mirrored["gfa"]
    for key in ("loss", "task_loss", "gfa_penalty", "alignment_dense_1", "alignment_logits", "val_gfa_penalty",
                "val_alignment_dense_2", "accuracy", "val_accuracy"):
        assert key in gfa_history, key
    for method, penalty in (("datagrad_l2", "input_gradient_penalty"), ("hybrid", "input_gradient_penalty"),
                            ("trades", "trades_penalty")):
        assert mirrored[method][1][penalty][0] > 0.0, method


@pytest.mark.parametrize("method", MULTI_WORKER_METHODS)
def test_multi_worker_strategy_with_two_processes_trains_like_one_process(method, multi_worker, one_device):
    first, second = multi_worker
    for w0, w1 in zip(first[method][0], second[method][0], strict=True):
        np.testing.assert_array_equal(w0, w1)  # all-reduced gradients: identical updates
    assert first[method][1] == second[method][1]
    assert_same_training(first[method], one_device[method])


@pytest.mark.parametrize("method", ["gfa", "hybrid"])
def test_jit_compiled_training_matches_graph_mode(method, one_device):
    assert_same_training(cases.train(method, jit_compile=True), one_device[method])


@pytest.mark.slow
@pytest.mark.parametrize("method", list(cases.SINGLE_STEP))
def test_single_step_defenses_on_two_devices_train_like_one_device(method, mirrored_single_step, one_device):
    assert_same_training(mirrored_single_step[method], one_device[method])


@pytest.mark.slow
def test_mirrored_run_logs_the_training_monitors(mirrored_single_step):
    _, history = mirrored_single_step["n_fgsm_gradalign"]
    for key in ("val_fgsm_accuracy", "val_pgd_accuracy", "catastrophic_overfitting", "robust_collapse",
                "val_top_class_share", "val_task_loss_to_chance"):
        assert len(history[key]) == cases.EPOCHS, key
