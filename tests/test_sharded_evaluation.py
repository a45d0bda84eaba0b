"""Tests for evaluation that scales out: shards and `merge_shard_reports`, streaming from a Dataset,
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
from gfa_keras.evaluation import merge_shard_reports
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


def every_other_point(model, x, y, *, eps=None, norm="linf", clip_min=0.0, clip_max=1.0, seed=0):
    """A minimum-norm attack that moves only every other point of its batch (the rest fail: norm inf)."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=model(x))
    moved = tf.clip_by_value(x + 0.3 * tf.sign(tape.gradient(loss, x)), clip_min, clip_max)
    return tf.where((tf.range(tf.shape(x)[0]) % 2 == 0)[:, None, None, None], moved, x)


NOISE = AttackSpec("noise", noise_attack, ("linf", "l2"), white_box=False)
HALF = AttackSpec("every_other", every_other_point, ("linf", "l2"), kind="minimum_norm")
KWARGS = dict(attacks=["fgsm", NOISE, "apgd_ce"], eps=[0.03, 0.06], batch_size=BATCH, steps={"apgd_ce": 3},
              minimum_norm_attacks=["deepfool", HALF], checks=True, thorough=True, verbose=0)


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
    merged = merge_shard_reports(parts)
    assert comparable(merged) == comparable(whole)
    assert merged.shard is None


def test_a_merge_of_json_files_equals_the_whole_run(trained_digits_model, data, whole, tmp_path):
    paths = []
    for i in range(2):
        part = evaluate_robustness(trained_digits_model, data, shard=(i, 2), **KWARGS)
        paths.append(tmp_path / f"part{i}.json")
        part.to_json(paths[-1])
    assert comparable(gfa_keras.merge_shard_reports(paths)) == comparable(whole)
    loaded = [RobustnessReport.from_json(p) for p in paths]
    assert comparable(merge_shard_reports([r.to_dict() for r in loaded])) == comparable(whole)
    # A minimum-norm attack failed on some points: their inf norms survive the JSON (as null) and the merge.
    assert np.isinf(whole.minimum_norm["every_other"]["norms"]).any()


def test_one_eps_carries_the_probes_at_larger_eps(trained_digits_model, data):
    kwargs = {**KWARGS, "eps": 0.05, "minimum_norm_attacks": ()}
    whole = evaluate_robustness(trained_digits_model, data, **kwargs)
    parts = [evaluate_robustness(trained_digits_model, data, shard=(i, 2), **kwargs) for i in range(2)]
    probes = parts[0].shard["sample"]["probes"]
    # The eps check's probes (fgsm at 1x, 2x, 4x eps) and the thorough reruns of each white-box attack.
    assert {(p["attack"], p["eps"]) for p in probes} >= {("fgsm", 0.05), ("fgsm", 0.1), ("fgsm", 0.2),
                                                         ("apgd_ce", 0.05)}
    assert comparable(merge_shard_reports(parts)) == comparable(whole)
    flag = next(f for f in whole.flags if f["check"] == "accuracy_decreases_with_eps")
    assert "one eps evaluated" in flag["reason"]


@pytest.mark.slow
def test_a_mirrored_strategy_over_two_devices_gives_the_single_device_report(trained_digits_model, data, tmp_path):
    import sharded_evaluation_worker as worker

    model_path, data_path, out = tmp_path / "model.keras", tmp_path / "data.npz", tmp_path / "out.json"
    trained_digits_model.save(model_path)
    np.savez(data_path, x=data[0], y=data[1])
    reference = evaluate_robustness(trained_digits_model, data, worker.ATTACKS, **worker.KWARGS)
    subprocess.run([sys.executable, str(WORKER), str(model_path), str(data_path), str(out)], check=True,
                   timeout=300, env=worker_env())
    result = json.loads(out.read_text())
    runs = ("single", "mirrored", "mirrored_variables")
    for run in runs:
        result[run]["settings"].pop("date")
    assert result["mirrored"] == result["single"] == comparable(reference)
    assert result["mirrored_variables"] == result["single"]
    # The strategy's runs attacked blocks on both devices, from two threads; the plain run on one.
    for run in ("mirrored", "mirrored_variables"):
        assert {d.split("device:")[-1] for d in result["devices"][run]} == {"CPU:0", "CPU:1"}
    assert {d.split("device:")[-1] for d in result["devices"]["single"]} == {"CPU:0"}
    assert result["threads"] == {"mirrored": 2, "mirrored_variables": 2, "single": 1}
    # One call per block and eps: 5 blocks, 2 eps.
    assert [len(result["devices"][run]) for run in runs] == [10, 10, 10]


def worker_env():
    import os

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1]), env.get("PYTHONPATH", "")])
    return env


def test_a_dataset_streams_block_by_block_and_equals_the_arrays(trained_digits_model, data):
    x, y = data
    served = []
    first_call = []

    def batches():
        for start in range(0, N_POINTS, 7):
            served.append(start)
            yield x[start:start + 7], y[start:start + 7]

    def watching(model, x, y, **kwargs):
        if not first_call:
            first_call.append(len(served))
        return noise_attack(model, x, y, **kwargs)

    dataset = tf.data.Dataset.from_generator(batches, output_signature=(
        tf.TensorSpec([None, 8, 8, 1], tf.float32), tf.TensorSpec([None], tf.int32)))
    # tf.data would otherwise read a couple of batches ahead on its own; count only the evaluation's reads.
    options = tf.data.Options()
    options.experimental_optimization.inject_prefetch = False
    dataset = dataset.with_options(options)
    kwargs = {**KWARGS, "attacks": ["fgsm", AttackSpec("noise", watching, ("linf",), white_box=False), "apgd_ce"]}
    streamed = evaluate_robustness(trained_digits_model, dataset, **kwargs)
    from_arrays = evaluate_robustness(trained_digits_model, data, **kwargs)
    assert comparable(streamed) == comparable(from_arrays)
    # When the first block (16 points) was attacked, only the 3 batches of 7 it needs had been read, of 10.
    assert first_call == [3] and len(served) == 10
    # A shard streams too and merges with one from arrays.
    parts = [evaluate_robustness(trained_digits_model, dataset, shard=(0, 2), **kwargs),
             evaluate_robustness(trained_digits_model, data, shard=(1, 2), **kwargs)]
    assert comparable(merge_shard_reports(parts)) == comparable(from_arrays)


def test_a_dataset_with_bad_data_in_a_later_block_fails_there(trained_digits_model, data):
    x, y = data
    bad = x.copy()
    bad[40] = 2.0  # block 2
    dataset = tf.data.Dataset.from_tensor_slices((bad, y)).batch(10)
    with pytest.raises(ValueError, match=r"must lie in \[clip_min, clip_max\]"):
        evaluate_robustness(trained_digits_model, dataset, [NOISE], 0.1, batch_size=BATCH, checks=False, verbose=0)
    unbatched = tf.data.Dataset.from_tensor_slices((x, y))
    with pytest.raises(ValueError, match=r"batches \(a leading batch axis\)"):
        evaluate_robustness(trained_digits_model, unbatched, [NOISE], 0.1, verbose=0)
    with pytest.raises(ValueError, match=r"must yield \(x, y\) batches"):
        evaluate_robustness(trained_digits_model, unbatched.map(lambda a, b: {"x": a}).batch(4), [NOISE], 0.1,
                            verbose=0)


class Interrupting:
    """The noise attack, raising on its `fail_on`-th call; counts its calls."""

    def __init__(self, fail_on=None):
        self.fail_on, self.calls = fail_on, 0

    def __call__(self, model, x, y, **kwargs):
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError("interrupted")
        return noise_attack(model, x, y, **kwargs)


def test_an_interrupted_shard_resumes_to_the_same_report(trained_digits_model, data, tmp_path):
    attack = Interrupting()
    kwargs = {**KWARGS, "checks": False, "thorough": False, "shard": (1, 2), "steps": None,
              "attacks": ["fgsm", AttackSpec("noise", attack, ("linf",), white_box=False)]}
    uninterrupted = evaluate_robustness(trained_digits_model, data, **kwargs)
    state = tmp_path / "state.json"
    attack.fail_on, attack.calls = 3, 0  # block 3, first eps (shard 1 of 2 holds blocks 1 and 3)
    with pytest.raises(RuntimeError, match="interrupted"):
        evaluate_robustness(trained_digits_model, data, state_path=state, **kwargs)
    saved = json.loads(state.read_text())
    assert saved["version"] == 4 and sorted(saved["blocks"]) == ["block1", "block3"]
    assert "eps0/fgsm" in saved["blocks"]["block3"]["stages"]
    assert "eps0/noise" not in saved["blocks"]["block3"]["stages"]
    attack.fail_on, attack.calls = None, 0
    resumed = evaluate_robustness(trained_digits_model, data, state_path=state, **kwargs)
    assert comparable(resumed) == comparable(uninterrupted)
    assert attack.calls == 2  # block 3 at both eps; block 1 was done
    # The state belongs to shard 1 of 2: another shard is refused.
    with pytest.raises(ValueError, match=r"shard: \[1, 2\] there, \[0, 2\] now"):
        evaluate_robustness(trained_digits_model, data, state_path=state, **{**kwargs, "shard": (0, 2)})


FAST = dict(attacks=[NOISE], eps=0.1, batch_size=BATCH, checks=False, verbose=0)


@pytest.mark.parametrize("shard, message", [
    ((2, 2), r"The shard index must lie in \[0, 2\)\. Received: shard=\(2, 2\)"),
    ((-1, 2), r"The shard index must lie in \[0, 2\)\. Received: shard=\(-1, 2\)"),
    ((0, 0), r"The shard count must be >= 1\. Received: shard=\(0, 0\)"),
    ("0/2", r"shard must be a pair of integers \(index, count\)\. Received: shard='0/2'"),
    ((0.5, 2), r"pair of integers.*Received: shard=\(0\.5, 2\)"),
    ((0,), r"pair of integers.*Received: shard=\(0,\)"),
    ((5, 6), r"Shard 5 of 6 would hold no block: the data has only 5 blocks of 16 points"),
])
def test_bad_shards_raise_before_any_attack(trained_digits_model, data, shard, message):
    attack = Interrupting(fail_on=1)
    with pytest.raises(ValueError, match=message):
        evaluate_robustness(trained_digits_model, data, **{**FAST, "attacks": [AttackSpec("a", attack, ("linf",))]},
                            shard=shard)
    assert attack.calls == 0


def test_a_strategy_must_be_a_tf_distribute_strategy(trained_digits_model, data):
    with pytest.raises(ValueError, match=r"tf.distribute.Strategy over local devices.*Received: strategy of type str"):
        evaluate_robustness(trained_digits_model, data, **FAST, strategy="/cpu:0")


@pytest.fixture(scope="module")
def parts(trained_digits_model, digits):
    _, (x, y) = digits
    return [evaluate_robustness(trained_digits_model, (x[:N_POINTS], y[:N_POINTS]), **FAST, shard=(i, 2))
            for i in range(2)]


def tampered(report, **shard):
    data = report.to_dict()
    data["shard"].update(shard)
    return data


def test_merging_bad_sets_of_shards_names_what_is_wrong(trained_digits_model, data, parts):
    x, y = data
    whole = evaluate_robustness(trained_digits_model, data, **FAST)
    assert comparable(merge_shard_reports(parts)) == comparable(whole)
    cases = [
        ([], r"at least one shard report\. Received: reports=\[\]"),
        (parts[0], r"must be a list of shard reports.*Received: reports of type RobustnessReport"),
        ([parts[0], 3], r"Received: report 1 of type int"),
        ([parts[0], whole], r"Report 1 is not a shard report"),
        ([parts[0], parts[0]], r"Shards given twice: \[0\]\. Expected each of the 2 shards once\. "
                               r"Received shard indices \[0, 0\]"),
        ([parts[1]], r"Shards missing: \[0\] of 2\. .*Received shard indices \[1\]"),
        ([parts[0], tampered(parts[1], index=5)], r"Shard index must lie in \[0, 2\)\. Received: index=5 in report 1"),
        ([tampered(parts[0], count=0), tampered(parts[1], count=0)],
         r"Shard count must be an integer >= 1\. Received: count=0 in report 0"),
        ([parts[0], tampered(parts[1], count=3)],
         r"the shard count \(count\) differs.*Received: 2 in report 0 \(shard 0\), "
         r"3 in report 1 \(shard 1\)"),
    ]
    other_eps = evaluate_robustness(trained_digits_model, data, **{**FAST, "eps": 0.2}, shard=(1, 2))
    cases.append(([parts[0], other_eps], r"settings\['eps'\] differs.*Received: \[0\.1\] in report 0 \(shard 0\), "
                                         r"\[0\.2\] in report 1 \(shard 1\)"))
    other_data = evaluate_robustness(trained_digits_model, (x[::-1].copy(), y[::-1].copy()), **FAST, shard=(1, 2))
    cases.append(([parts[0], other_data], r"the data digest \(data_sha256\) differs"))
    other_model = keras_clone_with_other_weights(trained_digits_model)
    changed = evaluate_robustness(other_model, data, **FAST, shard=(1, 2))
    cases.append(([parts[0], changed], r"the model digest \(model_sha256\) differs"))
    for reports, message in cases:
        with pytest.raises(ValueError, match=message):
            merge_shard_reports(reports)


def keras_clone_with_other_weights(model):
    import keras

    clone = keras.models.clone_model(model)
    clone.set_weights([w * 1.01 for w in model.get_weights()])
    assert clone.name == model.name
    return clone


CLI_FLAGS = ["--dataset", "digits", "--test-limit", "60", "--attacks", "fgsm,apgd_ce", "--attack-steps", "3",
             "--eps", "0.05", "0.1", "--eval-batch-size", "16", "--minimum-norm", "deepfool", "--landscape-points",
             "5", "--verbose", "0"]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, trained_digits_model):
    path = tmp_path_factory.mktemp("models") / "plain.keras"
    trained_digits_model.save(path)
    return path


@pytest.mark.slow  # two subprocesses
def test_two_cli_processes_with_shards_merge_into_the_single_process_report(model_file, tmp_path):
    from gfa_keras.cli.commands import EXIT_OK, main

    shards = tmp_path / "shards"
    started = [subprocess.Popen([sys.executable, "-m", "gfa_keras", "evaluate", str(model_file), *CLI_FLAGS,
                                 "--shard", f"{i}/2", "--out", str(shards)], env=worker_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=600) for p in started]
    assert [p.returncode for p in started] == [0, 0], [err[-2000:] for _, err in outputs]
    assert "plain: not the AutoAttack standard version (attacks fgsm, apgd_ce instead of apgd_ce, apgd_t, fab_t, " \
           "square), 32 points of shard 0/2" in outputs[0][0]  # blocks 0 and 2 of 16 points
    files = sorted(shards.glob("plain.shard-*-of-2.json"))
    assert [f.name for f in files] == ["plain.shard-0-of-2.json", "plain.shard-1-of-2.json"]
    assert not (shards / "report.json").exists()
    assert main(["merge", *map(str, files[::-1]), "--out", str(tmp_path / "merged")]) == EXIT_OK
    assert main(["evaluate", str(model_file), *CLI_FLAGS, "--out", str(tmp_path / "single")]) == EXIT_OK
    merged, single = [json.loads((tmp_path / d / "report.json").read_text())["models"]["plain"]
                      for d in ("merged", "single")]
    for sections in (merged, single):
        sections["robustness"]["settings"].pop("date")
    assert merged["robustness"] == single["robustness"]
    assert merged["landscape"] == single["landscape"]
    assert (tmp_path / "merged" / "report.html").exists()


@pytest.mark.parametrize("shard", ["2/2", "x", "1/0", "-1/2", "1/2/3"])
def test_bad_shard_flags_exit_2_with_one_line(shard, capsys):
    from gfa_keras.cli.commands import EXIT_USAGE, main

    assert main(["evaluate", "m.keras", "--out", "x", f"--shard={shard}"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "argument --shard: expected I/N" in err and f"received {shard!r}" in err


def test_merging_a_missing_or_incomplete_set_exits_1(parts, tmp_path, capsys):
    from gfa_keras.cli.commands import EXIT_FAILURE, main

    assert main(["merge", str(tmp_path / "nope.json"), "--out", str(tmp_path / "out")]) == EXIT_FAILURE
    assert "Cannot read the shard report" in capsys.readouterr().err
    parts[1].to_json(tmp_path / "one.json")
    assert main(["merge", str(tmp_path / "one.json"), "--out", str(tmp_path / "out")]) == EXIT_FAILURE
    assert "Shards missing: [0] of 2" in capsys.readouterr().err
    assert not (tmp_path / "out" / "report.json").exists()


def test_a_sharded_run_with_an_attack_seed_cannot_reach_warns(trained_digits_model, data):
    with pytest.warns(UserWarning, match=r"\['pgd'\] draw their random start from TensorFlow's global random state"):
        evaluate_robustness(trained_digits_model, data, **{**FAST, "attacks": ["pgd"]}, steps=2, shard=(0, 2))


def test_cli_mirrored_gives_the_plain_report(model_file, tmp_path):
    from gfa_keras.cli.commands import EXIT_OK, main

    flags = ["--dataset", "digits", "--test-limit", "40", "--attacks", "fgsm", "--eps", "0.1", "--eval-batch-size",
             "16", "--landscape-points", "0", "--verbose", "0"]
    assert main(["evaluate", str(model_file), *flags, "--mirrored", "--out", str(tmp_path / "mirrored")]) == EXIT_OK
    assert main(["evaluate", str(model_file), *flags, "--out", str(tmp_path / "plain")]) == EXIT_OK
    mirrored, plain = [json.loads((tmp_path / d / "report.json").read_text())["models"]["plain"]["robustness"]
                       for d in ("mirrored", "plain")]
    for report in (mirrored, plain):
        report["settings"].pop("date")
    assert mirrored == plain and len(plain["broken_by"][0]) == 40
