"""Tests for evaluation that scales out: shards and `merge_reports`, streaming from a Dataset,
resuming per block, and a `tf.distribute` strategy (in a subprocess, see
`sharded_evaluation_worker.py`)."""
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import gfa_keras
from gfa_keras.attacks import AttackSpec
from gfa_keras.evaluation import merge_reports
from gfa_keras.evaluation.cascade import evaluate_robustness
from gfa_keras.evaluation.report import RobustnessReport

N_POINTS = 70
BATCH = 16  # 5 blocks: 4 of 16 and one of 6
WORKER = Path(__file__).with_name("sharded_evaluation_worker.py")


@pytest.fixture
def data(digits):
    _, (x, y) = digits
    return x[:N_POINTS], y[:N_POINTS]


def comparable(report):
    """A report's dict without its date (the only field a merge cannot reproduce)."""
    data = report.to_dict()
    data["settings"].pop("date")
    return data


def noise_attack(model, x, y, *, eps, norm="linf", clip_min=0.0, clip_max=1.0, seed=0):
    """Random signs from `seed`, drawn for the whole batch: a point's result depends on its batch."""
    noise = tf.sign(tf.random.stateless_uniform(tf.shape(x), [seed, 7], -1.0, 1.0))
    return tf.clip_by_value(x + eps * noise, clip_min, clip_max)


NOISE = AttackSpec("noise", noise_attack, ("linf", "l2"), white_box=False)
KWARGS = dict(attacks=["fgsm", NOISE, "apgd_ce"], eps=[0.03, 0.06], batch_size=BATCH, steps={"apgd_ce": 3},
              minimum_norm_attacks=["deepfool"], checks=True, thorough=True, verbose=0)


@pytest.fixture(scope="module")
def whole(trained_digits_model, digits):
    _, (x, y) = digits
    return evaluate_robustness(trained_digits_model, (x[:N_POINTS], y[:N_POINTS]), **KWARGS)


def test_the_whole_run_is_not_trivial(whole):
    row = whole.broken_by[1]
    # Every attack breaks some points and some survive, so a merge in the wrong order would show.
    assert {"clean", "fgsm", None} <= set(row)
    assert len(row) == N_POINTS
    checks = {f["check"] for f in whole.flags}
    assert {"input_gradients", "zero_gradients", "accuracy_decreases_with_eps",
            "more_iterations_change_little", "accuracy_at_large_eps"} <= checks


@pytest.mark.parametrize("count", [2, 3])
def test_shards_merge_into_the_unsharded_report(trained_digits_model, data, whole, count):
    parts = [evaluate_robustness(trained_digits_model, data, shard=(i, count), **KWARGS) for i in range(count)]
    for i, part in enumerate(parts):
        blocks = list(range(i, 5, count))
        assert part.shard["blocks"] == blocks
        assert part.settings["num_points"] == len(part.broken_by[0]) == sum(min(BATCH, N_POINTS - k * BATCH)
                                                                             for k in blocks)
        assert part.flags == []
        assert (part.shard["sample"] is not None) == (i == 0)
    random.Random(count).shuffle(parts)
    merged = merge_reports(parts)
    assert comparable(merged) == comparable(whole)
    assert merged.shard is None


def test_a_merge_of_json_files_equals_the_whole_run(trained_digits_model, data, whole, tmp_path):
    paths = []
    for i in range(2):
        part = evaluate_robustness(trained_digits_model, data, shard=(i, 2), **KWARGS)
        paths.append(tmp_path / f"part{i}.json")
        part.to_json(paths[-1])
    assert comparable(gfa_keras.merge_reports(paths)) == comparable(whole)
    loaded = [RobustnessReport.from_json(p) for p in paths]
    assert comparable(merge_reports([r.to_dict() for r in loaded])) == comparable(whole)


def test_one_eps_carries_the_probes_at_larger_eps(trained_digits_model, data):
    kwargs = {**KWARGS, "eps": 0.05, "minimum_norm_attacks": ()}
    whole = evaluate_robustness(trained_digits_model, data, **kwargs)
    parts = [evaluate_robustness(trained_digits_model, data, shard=(i, 2), **kwargs) for i in range(2)]
    probes = parts[0].shard["sample"]["probes"]
    # The eps check's probes (fgsm at 1x, 2x, 4x eps) and the thorough reruns of each white-box attack.
    assert {(p["attack"], p["eps"]) for p in probes} >= {("fgsm", 0.05), ("fgsm", 0.1), ("fgsm", 0.2),
                                                         ("apgd_ce", 0.05)}
    assert comparable(merge_reports(parts)) == comparable(whole)
    flag = next(f for f in whole.flags if f["check"] == "accuracy_decreases_with_eps")
    assert "one eps evaluated" in flag["reason"]
