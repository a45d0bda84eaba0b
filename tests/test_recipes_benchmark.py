"""benchmarks/recipes.py: its bookkeeping (resuming, evaluation, the table and the published
summaries) on the 8x8 digits with a tiny budget."""
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "recipes.py"


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("recipes_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bench = _load_benchmark()


def test_epochs_scale_multiplies_the_data_sets_epochs():
    args = type("Args", (), {"epochs": 15})()
    assert bench.recipe_epochs(args, "pgd") == 15
    assert bench.recipe_epochs(args, "pgd3_ema_long") == 27
    assert bench.recipe_epochs(args, "n_fgsm_ema_long") == 51
    assert bench.recipe_epochs(args, "pgd5_ema_long") == 21
    assert bench.recipe_epochs(args, "pgd5_ema_long_cosine") == 21


@pytest.mark.parametrize("recipe", [name for name in bench.RECIPES if name.endswith("_cosine")])
def test_a_cosine_recipe_is_its_base_recipe_with_the_decay_only(recipe):
    # the schedule's gain is read off a paired comparison, so nothing else may differ
    base = bench.RECIPES[recipe.removesuffix("_cosine")]
    cosine = dict(bench.RECIPES[recipe])
    assert cosine.pop("learning_rate") == "cosine"
    assert cosine == base


def test_balanced_subset_keeps_the_first_points_of_each_class_in_file_order():
    y = np.array([2, 0, 1, 0, 2, 1, 1, 0, 2, 2])
    x = np.arange(len(y)) * 10
    x_sub, y_sub = bench.balanced_subset(x, y, 6, 3)
    np.testing.assert_array_equal(x_sub, [0, 10, 20, 30, 40, 50])
    np.testing.assert_array_equal(np.bincount(y_sub), [2, 2, 2])


def test_collapse_epoch_is_the_first_fall_of_min_drop_below_the_best_before_it():
    # PGD-3 + EMA seed 1's held-out curve (docs/RESULTS.md): collapsed at epoch 7
    assert bench.collapse_epoch([0.676, 0.698, 0.718, 0.725, 0.723, 0.71, 0.31, 0.047]) == 7
    assert bench.collapse_epoch([0.5, 0.7, 0.51, 0.49]) == 4  # 0.21 below the best, not the last
    assert bench.collapse_epoch([0.5, 0.7, 0.51]) is None
    assert bench.collapse_epoch([0.7, 0.6, 0.55, 0.52, 0.49]) == 5  # a slow slide counts too
    assert bench.collapse_epoch([]) is None
    assert bench.collapse_epoch([0.7, 0.6], min_drop=0.1) == 2


def _run(capsys, *argv):
    capsys.readouterr()
    bench.main(list(argv))
    return capsys.readouterr().out


def test_train_resumes_evaluates_tabulates_and_publishes(tmp_path, capsys):
    runs, published = tmp_path / "runs", tmp_path / "published"
    common = ["--dataset", "digits", "--recipes", "pgd", "--seeds", "0", "--runs", str(runs), "--verbose", "0"]
    _run(capsys, "train", *common, "--epochs", "1")
    directory = runs / "digits" / "pgd" / "seed0"
    first = json.loads((directory / "progress.json").read_text())
    assert first["epochs_done"] == 1 and len(first["held_out"]) == 1 and first["best_epoch"] == 1
    assert first["train_size"] == 1437 - 200 and first["validation_size"] == 200
    assert (directory / "model.keras").exists() and (directory / "best.keras").exists()

    # A second call with more epochs continues from the checkpoint rather than starting over.
    _run(capsys, "train", *common, "--epochs", "2")
    second = json.loads((directory / "progress.json").read_text())
    assert second["epochs_done"] == 2 and len(second["history"]) == 2 and len(second["held_out"]) == 2
    assert second["epoch_finished_at"][0] == first["epoch_finished_at"][0]
    assert second["history"][0] == first["history"][0]

    _run(capsys, "evaluate", *common, "--budget", "screen")
    report = json.loads((directory / "eval_last_screen.json").read_text())
    assert report["settings"]["model_epoch"] == 2
    assert report["settings"]["points"] == "100 test points: the first 10 of each class"
    clean, robust = report["clean_accuracy"], report["robust_accuracy"]["apgd_ce"][0]
    assert 0.0 <= robust <= clean <= 1.0

    table = _run(capsys, "table", *common, "--budget", "screen")
    row = next(line for line in table.splitlines() if line.startswith("| pgd | 0 |"))
    assert f"| {clean:.3f} | {robust:.3f} |" in row
    assert f"| {second['held_out'][1]['apgd_ce']:.3f} | - |" in row  # no held-out collapse

    _run(capsys, "publish", *common, "--to", str(published))
    copied = sorted(str(p.relative_to(published)) for p in published.rglob("*") if p.is_file())
    expected = ["digits/pgd/seed0/eval_last_screen.json", "digits/pgd/seed0/progress.json"]
    if second["best_epoch"] != 2:
        expected.insert(0, "digits/pgd/seed0/eval_best_screen.json")
    assert copied == sorted(expected)
    republished = _run(capsys, "table", *common[:-4], "--runs", str(published), "--verbose", "0",
                       "--budget", "screen")
    assert republished == table


def test_publish_without_runs_copies_nothing(tmp_path, capsys):
    out = _run(capsys, "publish", "--dataset", "digits", "--runs", str(tmp_path / "none"),
               "--to", str(tmp_path / "to"))
    assert "copied 0 files" in out
    assert not (tmp_path / "to").exists()


def test_a_cosine_recipe_decays_over_the_whole_run_and_resumes_on_its_curve(tmp_path, capsys, monkeypatch):
    import keras
    common = ["--dataset", "digits", "--recipes", "pgd_cosine", "--seeds", "0", "--runs", str(tmp_path),
              "--train-size", "256", "--epochs", "2", "--verbose", "0"]  # 2 epochs of 2 steps
    directory = tmp_path / "digits" / "pgd_cosine" / "seed0"

    # Killed after the first epoch was saved, before its held-out check.
    def killed(*args):
        raise KeyboardInterrupt
    with monkeypatch.context() as patch:
        patch.setattr(bench, "held_out_epoch", killed)
        with pytest.raises(KeyboardInterrupt):
            _run(capsys, "train", *common)
    progress = json.loads((directory / "progress.json").read_text())
    assert progress["epochs_done"] == 1 and progress["held_out"] == []
    assert progress["optimizer"] == "Adam(cosine decay from 0.001 to 0 over 4 steps)"
    optimizer = keras.models.load_model(directory / "model.keras").optimizer
    assert int(optimizer.iterations) == 2
    assert float(optimizer.learning_rate) == pytest.approx(5e-4, rel=1e-5)  # halfway down the cosine

    _run(capsys, "train", *common)
    progress = json.loads((directory / "progress.json").read_text())
    assert progress["epochs_done"] == 2 and len(progress["held_out"]) == 2  # the missed check ran
    optimizer = keras.models.load_model(directory / "model.keras").optimizer
    assert int(optimizer.iterations) == 4
    assert float(optimizer.learning_rate) == pytest.approx(0.0, abs=1e-9)
    assert bench.learning_rate("pgd", 4) == bench.LEARNING_RATE
