"""Runs the training cases of `distributed_cases.py` under a tf.distribute strategy.

    python tests/distributed_worker.py mirrored OUT.npz [METHOD ...]
        MirroredStrategy over 2 logical CPU devices of this process.
    TF_CONFIG=... python tests/distributed_worker.py multiworker OUT.npz [METHOD ...]
        One worker of a MultiWorkerMirroredStrategy cluster described by TF_CONFIG.
    python tests/distributed_worker.py single OUT.npz [METHOD ...]
        No strategy: the one-device reference.
    python tests/distributed_worker.py compare A.npz B.npz
        Prints, per method, the largest weight difference relative to the largest weight.

Writes {method: (final weights, history)} to OUT.npz. A separate process because
logical devices and a cluster must be set up before TensorFlow initialises.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import distributed_cases  # noqa: E402

MODES = ("mirrored", "multiworker", "single", "compare")


def strategy_for(mode):
    if mode == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    if mode == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return None


def compare(path_a, path_b):
    a, b = distributed_cases.load(path_a), distributed_cases.load(path_b)
    for method in [m for m in a if m in b]:
        difference = max(float(np.max(np.abs(x - y)) / np.max(np.abs(y)))
                         for x, y in zip(a[method][0], b[method][0]))
        print(f"{method:<12} {difference:.1e}")


def main(mode, *args):
    if mode not in MODES:
        raise SystemExit(f"Unknown mode. Expected one of {MODES}. Received: {mode!r}")
    if mode == "compare":
        return compare(*args)
    out, *methods = args
    strategy = strategy_for(mode)
    results = {m: distributed_cases.train(m, strategy) for m in methods or distributed_cases.METHODS}
    distributed_cases.save(out, results)


if __name__ == "__main__":
    main(*sys.argv[1:])
