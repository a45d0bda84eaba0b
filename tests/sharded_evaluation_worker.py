"""Runs `evaluate_robustness` with and without a MirroredStrategy over 2 logical CPU devices.

    python tests/sharded_evaluation_worker.py MODEL.keras DATA.npz OUT.json

Writes `{"single": report dict, "mirrored": report dict, "mirrored_variables": report dict
(the model loaded under the strategy's scope), "devices": {run: [device of each
block's attack call]}, "threads": {run: threads that made them}, "seconds": {run: wall time}}`
to OUT.json. A separate process because logical devices
must be set up before TensorFlow initialises. The attacks and settings are `ATTACKS` and
`KWARGS`, which the test's in-process reference run uses too.
"""
import json
import os
import sys
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from gfa_keras.attacks import ATTACKS as REGISTRY, AttackSpec  # noqa: E402

# (device, thread, eps) of every call of the recording attack, in call order.
CALLS = []


def device_recording_fgsm(model, x, y, **kwargs):
    """FGSM that records the device its output lands on and the thread that called it."""
    x_adv = REGISTRY["fgsm"].fn(model, x, y, **kwargs)
    CALLS.append((tf.identity(x_adv).device, threading.get_ident(), kwargs["eps"]))
    return x_adv


ATTACKS = [AttackSpec("device_fgsm", device_recording_fgsm, ("linf", "l2")), "apgd_ce"]
KWARGS = dict(eps=[0.03, 0.06], batch_size=16, steps={"apgd_ce": 3}, minimum_norm_attacks=["deepfool"],
              checks=True, verbose=0)


def main(model_path, data_path, out):
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from gfa_keras.evaluation import evaluate_robustness

    model = keras.saving.load_model(model_path)
    arrays = np.load(data_path)
    data = (arrays["x"], arrays["y"])
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    result = {"devices": {}, "seconds": {}}
    with strategy.scope():
        # Loaded under the strategy: its weights are MirroredVariables, one copy per device.
        mirrored_model = keras.saving.load_model(model_path)
    for run, chosen in (("single", None), ("mirrored", strategy), ("mirrored_variables", strategy)):
        if run == "mirrored_variables":
            model = mirrored_model
        CALLS.clear()
        start = time.perf_counter()
        report = evaluate_robustness(model, data, ATTACKS, strategy=chosen, **KWARGS)
        result["seconds"][run] = time.perf_counter() - start
        result[run] = report.to_dict()
        # The blocks' calls; the checks' probes at larger eps run on the sample afterwards.
        blocks = [(device, thread) for device, thread, eps in CALLS if eps in KWARGS["eps"]]
        result["devices"][run] = [device for device, _ in blocks]
        result.setdefault("threads", {})[run] = len({thread for _, thread in blocks})
    with open(out, "w", encoding="utf-8") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
