"""The gfa-keras command: subcommands in-process and as a subprocess on tiny data, exit codes, files, JSON."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from gfa_keras.cli import commands as cli
from gfa_keras.cli.commands import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, CommandError, main
from gfa_keras.data import load_digits

TEST_POINTS = 50
TRAIN = ["train", "--model", "mlp", "--dataset", "digits", "--train-limit", "300", "--verbose", "0"]


def accuracy_on_digits(model_path, n=TEST_POINTS):
    """Clean accuracy computed here, independently of the command."""
    x, y = load_digits().test
    model = keras.saving.load_model(model_path, compile=False)
    return float(np.mean(np.argmax(model.predict(x[:n], verbose=0), axis=1) == y[:n]))


def error_lines(captured):
    """The lines of stderr that are our own (TensorFlow may log its own at start-up)."""
    return [line for line in captured.err.splitlines() if line.startswith("gfa-keras")]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """`train` for 2 epochs with --evaluate fast: the run the resume tests continue."""
    keras.utils.set_random_seed(0)
    out = tmp_path_factory.mktemp("train") / "gfa"
    code = main(TRAIN + ["--epochs", "2", "--out", str(out), "--evaluate", "fast", "--eval-eps", "0.05", "0.1",
                         "--test-limit", str(TEST_POINTS), "--attack-steps", "3", "--landscape-points", "10"])
    assert code == EXIT_OK
    return out


@pytest.fixture(scope="module")
def plain_model_file(tmp_path_factory, trained_digits_model):
    path = tmp_path_factory.mktemp("models") / "plain.keras"
    trained_digits_model.save(path)
    return path


def test_train_writes_model_checkpoint_history_and_evaluated_report(trained_run):
    files = {p.name for p in trained_run.iterdir()}
    assert {"mlp_gfa.keras", "checkpoint.keras", "checkpoint.json", "report.json", "report.md", "report.html",
            "robust_accuracy.png", "loss_landscape.png", "alignment_mlp_gfa.png"} <= files
    assert json.loads((trained_run / "checkpoint.json").read_text())["epoch"] == 2
    model = json.loads((trained_run / "report.json").read_text())["models"]["mlp_gfa"]
    alignment_keys = sorted(k for k in model["history"] if k.startswith("alignment_"))
    assert alignment_keys == ["alignment_hidden_1", "alignment_hidden_2", "alignment_logits"]  # DEEP by default
    assert all(len(model["history"][k]) == 2 for k in alignment_keys)
    robustness = model["robustness"]
    assert robustness["eps"] == [0.05, 0.1] and robustness["attacks"] == ["pgd", "fgsm"]
    assert robustness["settings"]["num_points"] == TEST_POINTS
    assert robustness["clean_accuracy"] == pytest.approx(accuracy_on_digits(trained_run / "mlp_gfa.keras"))
    assert robustness["clean_accuracy"] >= robustness["worst_case_accuracy"][0] >= robustness["worst_case_accuracy"][1]
    assert len(model["landscape"]["radial"]) == 21
    assert model["training"]["method"] == "gfa" and model["training"]["epochs"] == 2


def test_resume_continues_the_optimizer_and_the_history(trained_run, tmp_path):
    out = tmp_path / "gfa"
    shutil.copytree(trained_run, out)
    before = json.loads((out / "checkpoint.json").read_text())["history"]
    assert main(TRAIN + ["--epochs", "3", "--out", str(out), "--resume"]) == EXIT_OK
    state = json.loads((out / "checkpoint.json").read_text())
    assert state["epoch"] == 3
    assert all(state["history"][k][:2] == before[k] and len(state["history"][k]) == 3 for k in before)
    # 270 training examples (10% held out), batch 128: 3 steps per epoch, 9 in 3 epochs if not restarted.
    checkpoint = keras.saving.load_model(out / "checkpoint.keras")
    assert int(checkpoint.optimizer.iterations.numpy()) == 9


@pytest.mark.parametrize("extra, message", [
    ([], "already holds a checkpoint (epoch 2). Pass --resume"),
    (["--resume", "--method", "datagrad"], "method: 'gfa' in the checkpoint, 'datagrad' now"),
    (["--resume", "--epochs", "2"], "Nothing to resume"),
])
def test_train_refuses_to_clobber_or_resume_with_other_flags(trained_run, extra, message, capsys):
    flags = TRAIN + ["--out", str(trained_run)] + (extra if "--epochs" in extra else ["--epochs", "2"] + extra)
    assert main(flags) == EXIT_FAILURE
    lines = error_lines(capsys.readouterr())
    assert len(lines) == 1 and message in lines[0], lines


def test_resume_without_a_checkpoint_and_adversarial_method_without_eps(tmp_path, capsys):
    assert main(TRAIN + ["--out", str(tmp_path / "new"), "--resume"]) == EXIT_FAILURE
    assert main(TRAIN + ["--out", str(tmp_path / "new"), "--method", "pgd"]) == EXIT_FAILURE
    lines = error_lines(capsys.readouterr())
    assert "Nothing to resume" in lines[0] and "needs --eps" in lines[1]


def test_evaluate_adds_several_models_to_one_report(plain_model_file, trained_run, tmp_path):
    out = tmp_path / "compare"
    common = ["--dataset", "digits", "--out", str(out), "--test-limit", str(TEST_POINTS), "--verbose", "0",
              "--landscape-points", "0"]
    assert main(["evaluate", str(plain_model_file), "--attacks", "fgsm", "--eps", "0.05", "0.2",
                 "--minimum-norm", "deepfool", "--no-checks"] + common) == EXIT_OK
    assert main(["evaluate", str(trained_run / "mlp_gfa.keras"), "--name", "gfa", "--attacks", "pgd,fgsm",
                 "--eps", "0.05", "--attack-steps", "3"] + common) == EXIT_OK
    report = json.loads((out / "report.json").read_text())
    assert sorted(report["models"]) == ["gfa", "plain"]
    plain = report["models"]["plain"]["robustness"]
    assert plain["clean_accuracy"] == pytest.approx(accuracy_on_digits(plain_model_file))
    assert plain["eps"] == [0.05, 0.2] and plain["flags"] == []
    assert len(plain["minimum_norm"]["deepfool"]["norms"]) == TEST_POINTS
    assert report["models"]["gfa"]["robustness"]["flags"]  # checks on by default
    assert not any(p.name.endswith("evaluation_state.json") for p in out.iterdir())  # removed once finished
    assert {"robust_accuracy.png", "minimum_norms.png", "report.html"} <= {p.name for p in out.iterdir()}


@pytest.mark.slow  # a search or a subprocess
def test_tune_saves_the_best_model_and_every_trial(tmp_path):
    out = tmp_path / "tune"
    code = main(["tune", "--dataset", "digits", "--train-limit", "300", "--trials", "2", "--epochs", "1",
                 "--min-weight", "0.001", "--max-weight", "0.1", "--robust-points", "30", "--attack-steps", "2",
                 "--out", str(out), "--verbose", "0"])
    assert code == EXIT_OK
    tuning = json.loads((out / "report.json").read_text())["tuning"]
    assert len(tuning["trials"]) == 2 and tuning["objective"] == "val_tradeoff"
    assert 0.001 <= tuning["best_hyperparameters"]["penalty_weight"] <= 0.1
    best = max((t for t in tuning["trials"] if t["status"] == "COMPLETED"), key=lambda t: t["objective"])
    assert best["hyperparameters"] == tuning["best_hyperparameters"]
    assert keras.saving.load_model(out / "mlp_tuned.keras").output_shape == (None, 10)
    assert (out / "tuning.png").exists()


def test_report_merges_directories(trained_run, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(trained_run, other)
    report = json.loads((other / "report.json").read_text())
    report["models"] = {"copy": report["models"]["mlp_gfa"]}
    (other / "report.json").write_text(json.dumps(report))
    assert main(["report", str(trained_run), str(other), "--out", str(tmp_path / "both"), "--title", "Both"]) == 0
    merged = json.loads((tmp_path / "both" / "report.json").read_text())
    assert sorted(merged["models"]) == ["copy", "mlp_gfa"] and merged["title"] == "Both"
    assert "<title>Both</title>" in (tmp_path / "both" / "report.html").read_text()
    assert main(["report", str(trained_run), str(other)]) == EXIT_USAGE
    assert main(["report", str(tmp_path / "missing")]) == EXIT_FAILURE
    lines = error_lines(capsys.readouterr())
    assert "give --out DIR" in lines[0] and "No report.json" in lines[1]


@pytest.mark.parametrize("argv, message", [
    (["train", "--epochs", "0", "--out", "x"], "argument --epochs: expected a positive integer, received '0'"),
    (["train", "--method", "magic", "--out", "x"], "argument --method: invalid choice: 'magic'"),
    (["train", "--model", "resnet", "--out", "x"],
     "expected a built-in architecture ['madry_cnn', 'mlp', 'resnet18', 'small_cnn']"),
    (["evaluate", "m.keras"], "the following arguments are required: --out"),
    (["evaluate", "m.keras", "--out", "x", "--attacks", "bogus"], "unknown attack(s) ['bogus']"),
    (["evaluate", "m.keras", "--out", "x", "--eps", "-1"], "expected a finite number >= 0, received '-1'"),
    (["evaluate", "m.keras", "--out", "x", "--minimum-norm", "pgd"], "unknown attack(s) ['pgd']"),
    (["tune", "--out", "x", "--min-weight", "1", "--max-weight", "0.1"], "--min-weight must be below"),
    (["--bogus-flag"], "the following arguments are required: COMMAND"),
])
def test_bad_command_lines_exit_2_with_one_line(argv, message, capsys):
    assert main(argv) == EXIT_USAGE
    lines = error_lines(capsys.readouterr())
    assert len(lines) == 1 and message in lines[0] and "--help" in lines[0], lines


def test_bad_model_files_exit_1_with_one_actionable_line(tmp_path, capsys):
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"not a keras archive")
    lambda_model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Lambda(lambda t: 2.0 * t),
                                     keras.layers.Flatten(), keras.layers.Dense(10)])
    lambda_model.save(tmp_path / "lambda.keras")
    wide = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    wide.save(tmp_path / "wide.keras")
    cases = [("missing.keras", "Model file not found"), ("corrupt.keras", "not a .keras archive"),
             ("lambda.keras", "rerun with --unsafe-load"), ("wide.keras", "takes inputs of shape (28, 28, 1)")]
    for name, message in cases:
        assert main(["evaluate", str(tmp_path / name), "--out", str(tmp_path / "out")]) == EXIT_FAILURE
        lines = error_lines(capsys.readouterr())
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in lines[0], (name, lines)
    # Turning safe mode off is explicit, and then the file loads.
    assert main(["evaluate", str(tmp_path / "lambda.keras"), "--unsafe-load", "--out", str(tmp_path / "out"),
                 "--attacks", "fgsm", "--test-limit", "20", "--no-checks", "--landscape-points", "0",
                 "--verbose", "0"]) == EXIT_OK


def start_command(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.Popen([sys.executable, "-m", "gfa_keras", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def finish(process):
    """(exit code, stdout, stderr) of a started command."""
    out, err = process.communicate(timeout=600)
    return process.returncode, out, err


def run_command(*args):
    return finish(start_command(*args))


@pytest.mark.slow  # a search or a subprocess
def test_subprocess_evaluate_succeeds_and_writes_the_report(plain_model_file, tmp_path):
    code, out, err = run_command("evaluate", str(plain_model_file), "--out", str(tmp_path), "--attacks", "fgsm",
                                 "--eps", "0.1", "--test-limit", "30", "--landscape-points", "5", "--verbose", "0")
    assert code == EXIT_OK, err[-2000:]
    assert f"report: {tmp_path / 'report.html'}" in out
    # Even silent, the command says which budget ran.
    assert "plain: not the AutoAttack standard version (attacks fgsm instead of apgd_ce, apgd_t, fab_t, square), " \
        "30 points" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["models"]["plain"]["robustness"]["settings"]["num_points"] == 30
    assert report["models"]["plain"]["robustness"]["standard"] is False


@pytest.mark.slow  # a search or a subprocess
def test_subprocess_errors_exit_codes_and_one_line(tmp_path):
    # Both at once: each spends most of its time importing TensorFlow.
    started = [start_command("train", "--epochs", "zero", "--out", str(tmp_path)),
               start_command("evaluate", str(tmp_path / "nope.keras"), "--out", str(tmp_path))]
    (usage_code, _, usage_err), (missing_code, _, missing_err) = [finish(p) for p in started]
    assert (usage_code, missing_code) == (EXIT_USAGE, EXIT_FAILURE)
    for err in (usage_err, missing_err):
        ours = [line for line in err.splitlines() if line.startswith("gfa-keras")]
        assert len(ours) == 1 and "Traceback" not in err, err
    assert "argument --epochs: expected a positive integer, received 'zero'" in usage_err
    assert "Model file not found" in missing_err


def test_help_lists_every_subcommand(capsys):
    assert main(["--help"]) == EXIT_OK
    out = capsys.readouterr().out
    assert all(name in out for name in ("train", "evaluate", "tune", "report", "Exit codes"))


def test_ctrl_c_exits_130_with_how_to_continue(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_train", interrupted)
    assert main(TRAIN + ["--out", "x"]) == EXIT_INTERRUPTED
    assert error_lines(capsys.readouterr()) == [
        "gfa-keras train: interrupted; rerun with --resume to continue from the last finished epoch"]


def test_traceback_flag_shows_the_exception_instead(tmp_path):
    with pytest.raises(CommandError, match="Model file not found"):
        main(["--traceback", "evaluate", str(tmp_path / "missing.keras"), "--out", str(tmp_path)])


@pytest.mark.slow  # a search or a subprocess
def test_installed_console_script_is_the_same_command():
    """`pip install` puts `gfa-keras` beside the interpreter; it must reach `cli.main`."""
    script = Path(sys.executable).parent / "gfa-keras"
    result = subprocess.run([str(script), "report", "--help"], capture_output=True, text=True, timeout=300)
    assert result.returncode == EXIT_OK, result.stderr[-2000:]
    assert "usage: gfa-keras report" in result.stdout
