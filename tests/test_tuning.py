"""Tests for `tune` and `GFAHyperModel`: reported objectives against the trials' own logs, the
robust objective against a separate evaluation, NaN trials, all-failed searches, bad input
before any trial, Keras Tuner's distributed mode (a chief and two workers) and kill-and-resume."""
import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import keras
import keras_tuner as kt
import numpy as np
import pytest

from conftest import make_mlp
from gfa_keras.tuning import search as tuning
from gfa_keras.evaluation.cascade import evaluate_robustness
from gfa_keras.tuning.search import GFAHyperModel, tune

N_TRAIN, N_VAL = 400, 60
EPS = 0.03
PROCESS_TIMEOUT = 300


class _RecordTrials(keras.callbacks.Callback):
    """Keeps every fit's epoch logs, as later callbacks (and Keras Tuner) see them.

    Class-level storage: Keras Tuner deep-copies callbacks for each trial.
    """

    fits = []

    def on_train_begin(self, logs=None):
        _RecordTrials.fits.append([])

    def on_epoch_end(self, epoch, logs=None):
        _RecordTrials.fits[-1].append(dict(logs))


class _Diverge(keras.callbacks.Callback):
    """Sets every weight to NaN in the fits listed in `poisoned` (0-based fit count)."""

    calls = 0

    def __init__(self, poisoned):
        super().__init__()
        self.poisoned = poisoned

    def on_train_begin(self, logs=None):
        if _Diverge.calls in self.poisoned:
            for v in self.model.trainable_variables:
                v.assign(np.full(v.shape, np.nan, dtype="float32"))
        _Diverge.calls += 1


@pytest.fixture
def data(digits):
    (x, y), (x_val, y_val) = digits
    return x[:N_TRAIN], y[:N_TRAIN], (x_val[:N_VAL], y_val[:N_VAL])


def _options(**kwargs):
    return {"optimizer": lambda: keras.optimizers.Adam(1e-2), "epochs": 2, "batch_size": 64, "verbose": 0,
            **kwargs}


@pytest.mark.slow  # whole searches
def test_search_reports_the_trials_own_values_and_the_robust_objective_matches_an_evaluation(data, tmp_path):
    x, y, validation = data
    _RecordTrials.fits = []
    # Betas up to 0.1: above that GFA DEEP collapses this MLP within 2 epochs and the
    # CollapseGuard fails the trial (tested in test_monitors.py).
    result = tune(make_mlp, x, y, validation_data=validation, objective="robust_accuracy", eps=EPS,
                  attack_steps=3, layers=(1, 3), max_trials=3, directory=tmp_path, callbacks=[_RecordTrials()],
                  penalty_weight=(1e-4, 0.1), **_options())
    assert [t["status"] for t in result.trials] == ["COMPLETED"] * 3
    assert len(_RecordTrials.fits) == 3
    for trial, epochs in zip(result.trials, _RecordTrials.fits):
        robust = [e["val_robust_accuracy"] for e in epochs]
        best = int(np.argmax(robust))  # the first best epoch, like Keras Tuner
        assert trial["objective"] == pytest.approx(robust[best])
        assert trial["robust_accuracy"] == pytest.approx(robust[best])
        assert trial["clean_accuracy"] == pytest.approx(epochs[best]["val_clean_accuracy"])
        for e in epochs:
            expected = 0.5 * e["val_clean_accuracy"] + 0.5 * e["val_robust_accuracy"]
            assert e["val_tradeoff"] == pytest.approx(expected)
    best_trial = max(result.trials, key=lambda t: t["objective"])
    assert result.best_hyperparameters == best_trial["hyperparameters"]
    assert set(best_trial["hyperparameters"]) == {"penalty_weight", "layers"}

    x_val, y_val = validation
    separate = evaluate_robustness(result.best_model, validation, ["apgd_ce"], eps=EPS, steps=3, seed=0,
                                   checks=False, verbose=0)
    assert separate.worst_case_accuracy[0] == pytest.approx(best_trial["objective"])
    predictions = np.argmax(result.best_model.predict(x_val, verbose=0), axis=1)
    assert np.mean(predictions == y_val) == pytest.approx(best_trial["clean_accuracy"])

    front = result.pareto_front()
    points = [(t["clean_accuracy"], t["robust_accuracy"]) for t in result.trials]
    ids = {t["trial_id"] for t in front}
    for t, (c, r) in zip(result.trials, points):
        dominated = any(c2 >= c and r2 >= r and (c2, r2) != (c, r) for c2, r2 in points)
        assert (t["trial_id"] in ids) == (not dominated)
    table = result.to_markdown().splitlines()
    assert len(table) == 2 + 3 and sum(line.endswith("| yes |") for line in table) == len(front)
    figure = result.plot_tradeoff(tmp_path / "tradeoff.png")
    assert os.path.getsize(tmp_path / "tradeoff.png") > 0
    assert len(figure.axes[0].collections[0].get_offsets()) == 3


@pytest.mark.slow  # whole searches
def test_alignment_objective_is_the_documented_formula(data, tmp_path):
    x, y, validation = data
    _RecordTrials.fits = []
    reference = 0.5
    result = tune(make_mlp, x, y, validation_data=validation, objective="alignment", tuner="bayesian",
                  reference_task_loss=reference, max_trials=2, directory=tmp_path, callbacks=[_RecordTrials()],
                  **_options())
    assert result.direction == "min" and [t["status"] for t in result.trials] == ["COMPLETED"] * 2
    for trial, epochs in zip(result.trials, _RecordTrials.fits):
        gaps = []
        for e in epochs:
            alignment = np.mean([v for k, v in e.items() if k.startswith("val_alignment_") and k[-3:] != "gap"])
            gaps.append(abs(alignment - 0.93) + max(0.0, e["val_task_loss"] / reference - 1.0))
        assert trial["objective"] == pytest.approx(min(gaps), rel=1e-5)
        assert trial["robust_accuracy"] is None  # no eps: no attack ran


@pytest.mark.slow  # whole searches
def test_a_diverging_trial_fails_and_the_search_goes_on(data, tmp_path):
    x, y, validation = data
    _Diverge.calls = 0
    result = tune(make_mlp, x, y, validation_data=validation, objective="clean_accuracy", max_trials=2,
                  directory=tmp_path, callbacks=[_Diverge(poisoned={0})], **_options())
    assert [t["status"] for t in result.trials] == ["FAILED", "COMPLETED"]
    assert "diverged" in result.trials[0]["message"] and result.trials[0]["objective"] is None
    assert result.best_hyperparameters == result.trials[1]["hyperparameters"]


@pytest.mark.slow  # whole searches
def test_a_search_where_every_trial_failed_raises_why(data, tmp_path):
    x, y, validation = data
    _Diverge.calls = 0
    with pytest.raises(RuntimeError, match="No trial completed.*FAILED.*diverged"):
        tune(make_mlp, x, y, validation_data=validation, objective="clean_accuracy", max_trials=2,
             directory=tmp_path, callbacks=[_Diverge(poisoned={0, 1})], **_options())


@pytest.mark.parametrize("kwargs, error, message", [
    ({"penalty_weight": (1.0, 1e-4)}, ValueError, r"0 < low < high.*Received: penalty_weight=\(1\.0, 0\.0001\)"),
    ({"penalty_weight": (0.01, 0.01)}, ValueError, "0 < low < high"),
    ({"penalty_weight": (0.0, 1.0)}, ValueError, "0 < low < high"),
    ({"layers": ()}, ValueError, "layers must be a non-empty"),
    ({"methods": ("gfa", "magic")}, ValueError, r"methods must be a non-empty list of distinct names in .*Received: "
                                                r"methods=\['gfa', 'magic'\]"),
    ({"objective": "accuracy"}, ValueError, "Unknown objective"),
    ({"objective": "robust_accuracy"}, ValueError, "needs an attack bound"),
    ({"objective": "robust_accuracy", "eps": 0.1, "attack": "no_such_attack"}, ValueError, "Unknown attack"),
    ({"objective": "robust_accuracy", "eps": 0.1, "attack": "deepfool"}, ValueError, "bounded attack"),
    ({"objective": "alignment", "methods": ("gfa", "pgd")}, ValueError,
     r"objective='alignment' needs the alignment, which only .* log\. Received: methods=\['gfa', 'pgd'\]"),
    ({"objective": kt.Objective("val_no_such_metric", "max")}, ValueError, "would report the objective"),
    ({"layers": (3, 7)}, ValueError, "more weighted layers"),
    ({"tuner": "grid"}, ValueError,
     r"Unknown tuner\. Expected one of \['random', 'bayesian', 'hyperband'\]\. Received: tuner='grid'"),
    ({"norm": "l1"}, ValueError, r"Unknown norm\. Expected one of \['linf', 'l2'\]\. Received: norm='l1'"),
    ({"seed": 1.5}, ValueError, r"seed must be an integer\. Received: seed=1\.5"),
    ({"eps": 0.0}, ValueError, r"eps must be a finite number > 0\. Received: eps=0\.0"),
    ({"epochs": 0}, ValueError, r"epochs must be a positive integer\. Received: epochs=0"),
    ({"tradeoff_weight": 1.5}, ValueError, r"tradeoff_weight must be a finite number >= 0 and <= 1\. Received"),
])
def test_bad_input_fails_before_any_trial(data, tmp_path, kwargs, error, message):
    x, y, validation = data
    with pytest.raises(error, match=message):
        tune(make_mlp, x, y, validation_data=validation, directory=tmp_path / "search",
             **{"objective": "clean_accuracy", **kwargs})
    assert not (tmp_path / "search").exists()


def test_missing_tensorboard_is_reported_before_any_trial(data, tmp_path, monkeypatch):
    x, y, validation = data
    real_import = tuning.importlib.import_module

    def import_without_tensorboard(name, *args):
        if name.startswith("tensorboard"):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args)

    monkeypatch.setattr(tuning.importlib, "import_module", import_without_tensorboard)
    with pytest.raises(ImportError, match="pip install tensorboard.*No module named"):
        tune(make_mlp, x, y, validation_data=validation, objective="clean_accuracy", directory=tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_hypermodel_searches_method_with_conditional_beta():
    hypermodel = GFAHyperModel(make_mlp, objective="clean_accuracy", methods=("gfa", "standard"), layers=(1, 3))
    hp = kt.HyperParameters()
    hp.values["method"] = "standard"
    model = hypermodel.build(hp)
    assert not model.regularizers and "penalty_weight" not in hp.values and "layers" not in hp.values
    hp = kt.HyperParameters()
    model = hypermodel.build(hp)  # defaults: the first method, the low end of the range, the first layers
    assert hp.values == {"method": "gfa", "penalty_weight": 1e-4, "layers": 1}
    assert model.tapped_layers == ("dense_1",)
    assert float(model.penalty_weights["gfa"].numpy()) == pytest.approx(1e-4)


def test_a_built_model_is_cloned_with_fresh_weights_and_the_optimizer_copied_for_each_trial():
    base = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                             keras.layers.Dense(16, activation="relu"), keras.layers.Dense(10)])
    hypermodel = GFAHyperModel(base, objective="clean_accuracy", layers=(1,),
                               optimizer=keras.optimizers.SGD(0.05))
    first, second = hypermodel.build(kt.HyperParameters()), hypermodel.build(kt.HyperParameters())
    kernels = [np.asarray(m.layers[1].kernel) for m in (base, first.base_model, second.base_model)]
    assert not np.allclose(kernels[0], kernels[1]) and not np.allclose(kernels[1], kernels[2])
    assert first.optimizer is not second.optimizer
    assert float(first.optimizer.learning_rate) == pytest.approx(0.05)


# A search in its own process: digits, a tiny MLP, robust objective; logs each fit's beta.
_SEARCH_SCRIPT = textwrap.dedent("""
    import json, os, sys
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np
    from sklearn.datasets import load_digits
    from gfa_keras.tuning.search import tune

    directory, fit_log, result_path, kill_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

    class LogFits(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            with open(fit_log, "a") as f:
                f.write(f"{os.environ.get('KERASTUNER_TUNER_ID', 'local')} "
                        f"{float(self.model.penalty_weights['gfa'].numpy())!r}\\n")
            with open(fit_log) as f:
                if len(f.readlines()) == kill_at:
                    os._exit(17)  # killed mid-trial, before any epoch ended

    def make_mlp():
        inputs = keras.Input((8, 8, 1))
        h = keras.layers.Flatten()(inputs)
        h = keras.layers.Dense(16, activation="relu")(h)
        h = keras.layers.Dense(16, activation="relu")(h)
        return keras.Model(inputs, keras.layers.Dense(10)(h))

    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    y = digits.target.astype("int32")
    result = tune(make_mlp, x[:300], y[:300], validation_data=(x[1500:1540], y[1500:1540]),
                  objective="tradeoff", eps=0.03, attack_steps=2, layers=(2,), max_trials=3, epochs=1,
                  batch_size=64, directory=directory, project_name="search", verbose=0,
                  callbacks=[LogFits()])
    if result is not None:
        with open(result_path, "w") as f:
            json.dump(result.trials, f)
""")


def _wait_for_port(port, process):
    """Waits until the chief oracle listens, so that workers do not start in gRPC's reconnect back-off."""
    deadline = time.monotonic() + PROCESS_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)


def _run_processes(commands_and_envs, port=None):
    processes = []
    outputs = []
    try:
        for c, e in commands_and_envs:
            processes.append(subprocess.Popen(c, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                              text=True))
            if port is not None and len(processes) == 1:
                _wait_for_port(port, processes[0])
        for p in processes:
            outputs.append(p.communicate(timeout=PROCESS_TIMEOUT)[0])
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [p.returncode for p in processes], outputs


def _search_command(tmp_path, kill_at=0):
    script = tmp_path / "search.py"
    script.write_text(_SEARCH_SCRIPT)
    return [sys.executable, str(script), str(tmp_path / "dir"), str(tmp_path / "fits.log"),
            str(tmp_path / "result.json"), str(kill_at)]


def _base_env():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "",
            "OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}


def _fit_log(tmp_path):
    return [line.split() for line in (tmp_path / "fits.log").read_text().splitlines()]


@pytest.mark.slow  # whole searches
def test_killed_search_resumes_without_redoing_completed_trials(tmp_path):
    command = _search_command(tmp_path, kill_at=3)
    codes, outputs = _run_processes([(command, _base_env())])
    assert codes == [17], outputs[0][-3000:]
    assert not (tmp_path / "result.json").exists()
    command[-1] = "0"
    codes, outputs = _run_processes([(command, _base_env())])
    assert codes == [0], outputs[0][-3000:]
    trials = json.loads((tmp_path / "result.json").read_text())
    assert [t["status"] for t in trials] == ["COMPLETED"] * 3
    betas = [float(beta) for _, beta in _fit_log(tmp_path)]
    # First run: trials 0 and 1 completed, trial 2 killed. Second run: only trial 2, with the same beta.
    assert len(betas) == 4 and betas[3] == betas[2]
    assert [t["hyperparameters"]["penalty_weight"] for t in trials] == pytest.approx(betas[:3], rel=1e-6)


@pytest.mark.slow  # whole searches
def test_distributed_search_with_a_chief_and_two_workers(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = _search_command(tmp_path)
    roles = ["chief", "tuner0", "tuner1"]
    envs = [{**_base_env(), "KERASTUNER_TUNER_ID": role, "KERASTUNER_ORACLE_IP": "127.0.0.1",
             "KERASTUNER_ORACLE_PORT": str(port)} for role in roles]
    codes, outputs = _run_processes([(command, env) for env in envs], port=port)
    assert codes == [0, 0, 0], "\n".join(o[-2000:] for o in outputs)
    trials = json.loads((tmp_path / "result.json").read_text())  # written by the chief only
    assert [t["status"] for t in trials] == ["COMPLETED"] * 3
    fits = _fit_log(tmp_path)
    assert len(fits) == 3 and {role for role, _ in fits} <= {"tuner0", "tuner1"}
    assert sorted(float(b) for _, b in fits) == pytest.approx(
        sorted(t["hyperparameters"]["penalty_weight"] for t in trials), rel=1e-6)
    for t in trials:
        assert (tmp_path / "dir" / "search" / f"trial_{t['trial_id']}" / "checkpoint.weights.h5").exists()


def test_distributed_mode_refuses_settings_that_would_break_the_shared_search(data, tmp_path, monkeypatch):
    x, y, validation = data
    for name, value in (("KERASTUNER_TUNER_ID", "tuner0"), ("KERASTUNER_ORACLE_IP", "127.0.0.1"),
                        ("KERASTUNER_ORACLE_PORT", "1")):
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match="overwrite=False"):
        tune(make_mlp, x, y, validation_data=validation, objective="clean_accuracy", overwrite=True,
             directory=tmp_path / "s")
    with pytest.raises(ValueError, match="reference_task_loss"):
        tune(make_mlp, x, y, validation_data=validation, objective="alignment", directory=tmp_path / "s")
    assert not (tmp_path / "s").exists()
