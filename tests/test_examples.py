"""Each example runs end to end in its fast mode and prints what it promises."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_example(name, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, str(ROOT / "examples" / name), *args], capture_output=True,
                            text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow  # an example script in a subprocess
def test_quickstart_prints_clean_fgsm_and_pgd_accuracy_for_both_models():
    out = run_example("quickstart.py", "--fast")
    rows = {m.group(1): [float(v) for v in m.groups()[1:]]
            for m in re.finditer(r"^(plain|gfa)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", out, re.M)}
    assert set(rows) == {"plain", "gfa"}, out
    for clean, under_fgsm, under_pgd in rows.values():
        assert 0.3 < clean <= 1.0  # 2 epochs already learn the digits
        assert under_pgd <= clean and under_fgsm <= clean
    assert "tapped layers" in out


def test_readme_commands_are_the_ones_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = re.search(r"^TEST_COMMAND='(.+)'$", ci, re.M).group(1)
    assert test_command in readme


def table_rows(out, labels, columns):
    """{label: [float, ...]} from the printed wrap-up table rows."""
    number = r"\s+([-\d.]+|inf)"
    pattern = rf"^({'|'.join(labels)}){number * columns}"
    return {m.group(1): [float(v) for v in m.groups()[1:]] for m in re.finditer(pattern, out, re.M)}


def report_models(directory):
    return json.loads((directory / "report.json").read_text())["models"]


def non_increasing(values):
    return all(a >= b for a, b in zip(values, values[1:]))


@pytest.mark.slow  # an example script in a subprocess
def test_fashion_mnist_mlp_compares_plain_first_and_deep(tmp_path):
    out = run_example("fashion_mnist_mlp.py", "--dataset", "digits", "--fast", "--out", str(tmp_path))
    rows = table_rows(out, ("plain", "gfa_first", "gfa_deep"), 5)
    assert set(rows) == {"plain", "gfa_first", "gfa_deep"}, out
    for clean, half, full, _median, found in rows.values():
        assert non_increasing([clean, half, full]) and 0.3 < clean <= 1 and 0 <= found <= 1
    models = report_models(tmp_path)
    assert [models[m]["training"]["layers"] for m in rows] == [None, 1, 3]
    assert models["gfa_deep"]["robustness"]["clean_accuracy"] == pytest.approx(rows["gfa_deep"][0], abs=1e-3)
    assert {"robust_accuracy.png", "loss_landscape.png", "minimum_norms.png", "alignment_gfa_deep.png"} <= {
        p.name for p in tmp_path.iterdir()}


@pytest.mark.slow  # an example script in a subprocess
def test_cifar10_cnn_runs_on_digits_in_fast_mode(tmp_path):
    out = run_example("cifar10_cnn.py", "--dataset", "digits", "--fast", "--out", str(tmp_path))
    rows = table_rows(out, ("standard", "gfa_deep", "pgd"), 4)
    assert set(rows) == {"standard", "gfa_deep", "pgd"}, out
    assert all(non_increasing(values) for values in rows.values())
    assert report_models(tmp_path)["pgd"]["robustness"]["eps"] == pytest.approx([2 / 255, 4 / 255, 8 / 255])


@pytest.mark.slow  # an example script in a subprocess
def test_tune_beta_searches_and_evaluates_the_best_model(tmp_path):
    out = run_example("tune_beta.py", "--fast", "--out", str(tmp_path))
    trials = json.loads((tmp_path / "report.json").read_text())["tuning"]["trials"]
    assert len(trials) == 2 and all(1e-4 <= t["hyperparameters"]["penalty_weight"] <= 1 for t in trials)
    best = re.search(r"best model on 360 test points: clean ([\d.]+), worst case at eps=0.1 ([\d.]+)", out)
    assert best and float(best.group(2)) <= float(best.group(1)), out
    assert (tmp_path / "tuning.png").exists()


@pytest.mark.slow  # an example script in a subprocess
def test_compare_defenses_puts_every_method_on_one_chart(tmp_path):
    out = run_example("compare_defenses.py", "--fast", "--out", str(tmp_path))
    methods = ("standard", "gfa", "pgd", "trades", "datagrad", "hybrid", "gfa_pgd")
    rows = table_rows(out, methods, 5)
    assert set(rows) == set(methods), out
    assert all(non_increasing(values[:3]) and values[3] > 0 for values in rows.values())
    models = report_models(tmp_path)
    assert sorted(models) == sorted(methods)
    assert models["trades"]["training"]["method"] == "trades"


@pytest.mark.slow  # an example script in a subprocess
def test_custom_training_loop_penalty_equals_hardens():
    out = run_example("custom_training_loop.py", "--fast")
    match = re.search(r"custom loop ([\d.]+), harden\(\) ([\d.]+)", out)
    assert match, out
    assert float(match.group(1)) == pytest.approx(float(match.group(2)), rel=1e-4)
    assert 0 <= float(match.group(1)) <= 6  # a sum over 3 layers of 1 - cos, each in [0, 2]
    assert float(re.search(r"test accuracy ([\d.]+)", out).group(1)) > 0.5
