"""benchmarks/autoattack_speed.py: the comparison's bookkeeping on made-up inputs, and (with
torch installed) both sides on a tiny model."""
import importlib.util
import inspect
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "autoattack_speed.py"


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("autoattack_speed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


bench = _load_benchmark()
HAVE_TORCH = importlib.util.find_spec("torch") is not None and importlib.util.find_spec("torchattacks") is not None
NO_TORCH_REASON = 'the reference side needs torch and torchattacks (pip install -e ".[bench]")'


def test_standard_error_of_a_proportion():
    assert bench.standard_error(0.5, 100) == pytest.approx(0.05)
    assert bench.standard_error(0.64, 500) == pytest.approx(math.sqrt(0.64 * 0.36 / 500))
    assert bench.standard_error(1.0, 10) == 0.0
    with pytest.raises(ValueError, match="Received: n=0"):
        bench.standard_error(0.5, 0)
    with pytest.raises(ValueError, match="Received: p=1.5"):
        bench.standard_error(1.5, 10)


class _Clock:
    """A clock that each attack call advances by a known amount."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_cascade_attacks_only_the_points_still_robust_and_times_each_attack():
    # Column 0 is what the "model" predicts, column 1 the point's id.
    y = np.array([0, 1, 2, 3, 4, 5, 6])
    x = np.stack([y.copy(), np.arange(7)], axis=1).astype(float)
    x[2, 0] = 9  # misclassified without attack
    clock = _Clock()
    calls = {"first": [], "second": []}

    def first(xb, yb):  # breaks even ids, costs 2 s per call
        calls["first"].append(xb[:, 1].astype(int).tolist())
        clock.now += 2.0
        adv = xb.copy()
        adv[xb[:, 1] % 2 == 0, 0] = 99
        return adv

    def second(xb, yb):  # breaks everything it gets, costs 5 s per call, but id 5's output is rejected
        calls["second"].append(xb[:, 1].astype(int).tolist())
        clock.now += 5.0
        adv = xb.copy()
        adv[:, 0] = -1
        return adv

    def verify(xb, adv, yb):
        return (adv[:, 0] != yb) & (xb[:, 1] != 5)

    broken_by, seconds, x_adv = bench.cascade(
        [("first", first), ("second", second)], x, y, predict=lambda xb: xb[:, 0], verify=verify,
        batch_size=2, clock=clock)
    assert calls["first"] == [[0, 1], [3, 4], [5, 6]]  # point 2 is never attacked
    assert calls["second"] == [[1, 3], [5]]
    assert broken_by == ["first", "second", "clean", "second", "first", None, "first"]
    assert seconds == {"first": 6.0, "second": 10.0}
    assert x_adv[0, 0] == 99 and x_adv[1, 0] == -1
    np.testing.assert_array_equal(x_adv[5], x[5])  # the rejected output is not kept
    np.testing.assert_array_equal(x_adv[2], x[2])


def test_per_attack_counts_follow_the_cascade():
    broken_by = ["clean", "apgd_ce", "apgd_ce", "apgd_t", None, None, "square", "clean", None, "apgd_ce"]
    assert bench.per_attack_counts(broken_by) == [
        ("apgd_ce", 8, 3, 5), ("apgd_t", 5, 1, 4), ("fab_t", 4, 0, 4), ("square", 4, 1, 3)]


def test_budget_deviations_name_what_differs_from_the_standard_version():
    assert bench.budget_deviations(bench.STANDARD_BUDGET) == []
    shipped = json.loads(json.dumps(bench.STANDARD_BUDGET))
    shipped["apgd_ce"]["steps"] = 10
    shipped["fab_t"]["steps"] = 10
    shipped["square"]["rescaled_schedule"] = True
    del shipped["apgd_t"]
    assert bench.budget_deviations(shipped) == [
        "apgd_ce: steps 10 (standard: 100)",
        "apgd_t: not run",
        "fab_t: steps 10 (standard: 100)",
        "square: rescaled_schedule True (standard: False)",
    ]


def _side(name, robust, total, seconds=None, n=500, clean=400):
    broken = clean - robust
    broken_by = ["clean"] * (n - clean) + ["apgd_ce"] * broken + [None] * robust
    return bench.SideResult(name, broken_by, seconds or {a: total / 4 for a in bench.ATTACKS}, total,
                            budget=bench.STANDARD_BUDGET)


def test_compare_applies_the_three_targets():
    n = 500
    reference = _side("ref", robust=325, total=300.0)  # 65.0%, SE 2.13%
    c = bench.compare(_side("ours", robust=330, total=100.0), reference)  # 66.0%: +1.0 point
    assert c["speedup"] == pytest.approx(3.0) and c["speed_met"]
    assert c["difference"] == pytest.approx(0.01)
    assert c["standard_error"]["reference"] == pytest.approx(math.sqrt(0.65 * 0.35 / n))
    assert c["within_points_met"] and c["not_above_met"]
    assert c["disagreements"] == 5

    c = bench.compare(_side("ours", robust=320, total=200.0), reference)  # -1.0 point, 1.5x
    assert c["within_points_met"] and c["not_above_met"] and not c["speed_met"]
    c = bench.compare(_side("ours", robust=319, total=100.0), reference)  # -1.2 points: too strong is fine,
    assert not c["within_points_met"] and c["not_above_met"]  # but not within a point
    c = bench.compare(_side("ours", robust=337, total=100.0), reference)  # +2.4 points > SE: too weak
    assert not c["within_points_met"] and not c["not_above_met"]
    with pytest.raises(ValueError, match="same points"):
        bench.compare(_side("ours", robust=10, total=1.0, n=20, clean=15), reference)


def test_format_report_shows_times_counts_accuracies_and_verdicts():
    ours = _side("gfa_keras", robust=330, total=100.0,
                 seconds={"apgd_ce": 10.0, "apgd_t": 40.0, "fab_t": 20.0, "square": 25.0})
    reference = _side("torchattacks", robust=325, total=300.0,
                      seconds={"apgd_ce": 30.0, "apgd_t": 120.0, "fab_t": 50.0, "square": 95.0})
    reference.budget = {**bench.STANDARD_BUDGET, "apgd_ce": {"steps": 10, "restarts": 1}}
    text = bench.format_report(ours, reference)
    assert "| apgd_t | 40.0 | 120.0 | 3.00x | 330 / 0 | 325 / 0 |" in text
    assert "| apgd_ce | 10.0 | 30.0 | 3.00x | 400 / 70 | 400 / 75 |" in text
    assert "| whole suite | 100.0 | 300.0 | 3.00x |" in text
    assert "gfa_keras 66.00% (SE 2.12%), torchattacks 65.00% (SE 2.13%); difference +1.00 points" in text
    assert "3.00x, met." in text
    assert "- gfa_keras budget: the standard version's." in text
    assert "- torchattacks budget: differs from the standard version: apgd_ce: steps 10 (standard: 100)." in text
    slow = bench.format_report(_side("gfa_keras", robust=330, total=200.0), reference)
    assert "1.50x, **not met**." in slow


def test_timed_attacks_time_every_call_and_restore_the_registry():
    from gfa_keras.attacks import ATTACKS, get_attack

    before = {name: ATTACKS[name] for name in bench.ATTACKS}
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    x = np.random.default_rng(0).uniform(size=(5, 4)).astype("float32")
    seconds = {}
    with bench._timed_attacks(seconds):
        spec = get_attack("apgd_ce")
        assert spec is not before["apgd_ce"]
        assert inspect.signature(spec.fn) == inspect.signature(before["apgd_ce"].fn)
        spec.fn(model, x, np.zeros(5, "int32"), eps=0.1, steps=2)
        spec.fn(model, x, np.zeros(5, "int32"), eps=0.1, steps=2)
    assert set(seconds) == {"apgd_ce"} and seconds["apgd_ce"] > 0
    assert all(ATTACKS[name] is before[name] for name in bench.ATTACKS)


def test_our_autoattack_preset_has_the_standard_budget():
    from gfa_keras.attacks import get_attack
    from gfa_keras.evaluation.presets import attack_budgets

    specs = [get_attack(name) for name in bench.ATTACKS]
    budgets = attack_budgets(specs, preset="autoattack", num_classes=10)
    assert bench.budget_deviations(bench.our_budget(budgets)) == []
    cut = attack_budgets(specs, preset="autoattack", steps={"fab_t": 50, "square": 1000}, num_classes=10)
    assert bench.budget_deviations(bench.our_budget(cut)) == [
        "fab_t: steps 50 (standard: 100)", "square: queries 1000 (standard: 5000)"]
    assert bench.our_budget(budgets)["square"]["rescaled_schedule"] is False


def _tiny_model(path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((12, 12, 1)),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])
    model.save(path)
    return model


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_TORCH, reason=NO_TORCH_REASON)
def test_both_sides_run_on_a_tiny_model(tmp_path):
    model = _tiny_model(str(tmp_path / "tiny.keras"))
    x = np.random.default_rng(0).uniform(size=(12, 12, 12, 1)).astype("float32")
    predicted = np.argmax(np.asarray(model(x)), axis=1)
    y = np.where(np.arange(12) < 8, predicted, (predicted + 1) % 10)  # 8 clean-correct points
    # At eps 0.5 APGD-CE breaks every point of an untrained model on both sides, which keeps this
    # end-to-end run (two processes, two backends, the standard budget) short.
    ours, reference = bench.run_both(str(tmp_path / "tiny.keras"), x, y, eps=0.5, batch_size=5, threads=2,
                                     reference="standard", cache_dir=str(tmp_path / "cache"))
    assert ours.clean_accuracy == reference.clean_accuracy == pytest.approx(8 / 12)
    assert bench.budget_deviations(ours.budget) == bench.budget_deviations(reference.budget) == []
    assert reference.info["broken points the TF model does not confirm"] == 0
    for side in (ours, reference):
        assert bench.per_attack_counts(side.broken_by) == [
            ("apgd_ce", 8, 8, 0), ("apgd_t", 0, 0, 0), ("fab_t", 0, 0, 0), ("square", 0, 0, 0)]
        assert side.seconds["apgd_ce"] > 0
    text = bench.format_report(ours, reference)
    assert "Robust accuracy: gfa_keras 0.00% (SE 0.00%), torchattacks (standard) 0.00%" in text
    # A second call reuses both cached sides instead of running them again.
    again = bench.run_both(str(tmp_path / "tiny.keras"), x, y, eps=0.5, batch_size=5, threads=2,
                           reference="standard", cache_dir=str(tmp_path / "cache"))
    assert [side.total_seconds for side in again] == [ours.total_seconds, reference.total_seconds]


_SHIPPED_CHECK = """
import importlib.util, json, sys
import numpy as np, torch, keras, torchattacks
spec = importlib.util.spec_from_file_location("b", sys.argv[1]); b = importlib.util.module_from_spec(spec)
sys.modules["b"] = b
spec.loader.exec_module(b)
module = b._torch_module(keras.saving.load_model(sys.argv[2], compile=False))
x = torch.from_numpy(np.random.default_rng(1).uniform(size=(10, 1, 12, 12)).astype("float32"))
y = module(x).argmax(1).detach()
y[7:] = (y[7:] + 1) % 10
attacks = b._reference_attacks(module, 0.04, "shipped")
budget = b._reference_budget(attacks)
# Fewer Square queries keep the test short; both runs below use these same attack objects.
shipped = torchattacks.AutoAttack(module, norm="Linf", eps=0.04, version="standard", n_classes=10, seed=0)
attacks = list(zip(b.ATTACKS, shipped._autoattack.attacks))
attacks[3][1].n_queries = 100
whole = shipped(x, y)
robust_whole = (module(whole).argmax(1) == y).tolist()
calls = [(n, (lambda a: lambda xb, yb: a(xb, torch.as_tensor(yb)).detach())(a)) for n, a in attacks]
predict = lambda xb: module(xb).argmax(1).detach().numpy()
verify = lambda xb, adv, yb: (module(adv).argmax(1) != torch.as_tensor(yb)).numpy()
broken_by, _, _ = b.cascade(calls, x, y.numpy(), predict=predict, verify=verify, batch_size=10)
print(json.dumps({"whole": robust_whole, "cascade": [by is None for by in broken_by], "by": broken_by,
                  "budget": budget}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_TORCH, reason=NO_TORCH_REASON)
def test_the_cascade_reproduces_torchattacks_autoattack(tmp_path):
    _tiny_model(str(tmp_path / "tiny.keras"))
    out = subprocess.run([sys.executable, "-c", _SHIPPED_CHECK, str(SCRIPT), str(tmp_path / "tiny.keras")],
                         env=dict(os.environ, KERAS_BACKEND="torch"), capture_output=True, text=True,
                         check=True, timeout=600)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["cascade"] == result["whole"]
    assert result["by"][7:] == ["clean"] * 3
    # What torchattacks' AutoAttack(version="standard") runs: not fra31's standard budget.
    assert result["budget"]["apgd_ce"]["steps"] == 10
    assert result["budget"]["fab_t"]["steps"] == 10
    assert result["budget"]["square"] == {"queries": 5000, "restarts": 1, "p_init": 0.8, "rescaled_schedule": True}
