"""Each example runs end to end in its fast mode and prints what it promises."""
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_example(name, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, str(ROOT / "examples" / name), *args], capture_output=True,
                            text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


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
