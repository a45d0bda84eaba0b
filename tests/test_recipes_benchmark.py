"""benchmarks/recipes.py: its bookkeeping (resuming, evaluation, the table and the published
summaries) on the 8x8 digits with a tiny budget."""
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from gfa_keras.reports import plots

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
    assert bench.recipe_epochs(args, "pgd5_ema_equal") == 18
    assert bench.recipe_epochs(args, "pgd5_ema_long") == 21
    assert bench.recipe_epochs(args, "pgd5_ema_long_cosine") == 21
    assert bench.recipe_epochs(args, "pgd_double") == 30
    assert bench.RECIPES["pgd_double"]["harden"] == bench.RECIPES["pgd"]["harden"]


def test_the_full_budget_variant_of_pgd5_awp_stays_inside_pgd7s_gradient_passes():
    args = type("Args", (), {"epochs": 15})()
    epochs = bench.recipe_epochs(args, "pgd5_awp_ema_equal")
    assert epochs == 17
    assert bench.RECIPES["pgd5_awp_ema_equal"]["harden"] == bench.RECIPES["pgd5_awp_ema"]["harden"]
    # passes per training image over the run: 7 a step for 17 epochs against PGD-7's 8 for 15
    assert int(bench.RECIPES["pgd5_awp_ema_equal"]["passes"]) * epochs <= int(bench.RECIPES["pgd"]["passes"]) * 15


@pytest.mark.parametrize("suffix, recipe", [(suffix, base + suffix)
                                            for suffix, (_, bases) in bench.VARIANTS.items()
                                            for base in bases])
def test_a_variant_is_its_base_recipe_with_its_one_setting_only(suffix, recipe):
    # the setting's gain is read off a paired comparison, so nothing else may differ
    expected = {"_cosine": {"learning_rate": "cosine"}, "_wd": {"weight_decay": bench.WEIGHT_DECAY},
                "_lr2": {"learning_rate": 2 * bench.LEARNING_RATE},
                "_lr05": {"learning_rate": 0.5 * bench.LEARNING_RATE},
                "_lr3": {"learning_rate": 3 * bench.LEARNING_RATE},
                "_sgd": {"optimizer": "sgd", "learning_rate": "piecewise", "awp_warmup_epochs": 1},
                "_epswarm": {"eps_warmup_epochs": 3}, "_augment": {"augment": True},
                "_eps12": {"train_eps_scale": 1.2}}[suffix]
    variant = dict(bench.RECIPES[recipe])
    assert {key: variant.pop(key) for key in expected} == expected
    assert variant == bench.RECIPES[recipe.removesuffix(suffix)]


@pytest.mark.parametrize("recipe, description, setting, value", [
    ("pgd_wd", "Adam(0.001, weight decay 0.05)", "weight_decay", 0.05),
    ("pgd_lr2", "Adam(0.002)", "learning_rate", 2e-3),
])
def test_an_optimizer_variant_trains_with_its_setting_and_keeps_it_when_resumed(
        tmp_path, capsys, recipe, description, setting, value):
    import keras
    common = ["--dataset", "digits", "--recipes", recipe, "--seeds", "0", "--runs", str(tmp_path),
              "--train-size", "256", "--verbose", "0", "--epochs"]
    directory = tmp_path / "digits" / recipe / "seed0"
    _run(capsys, "train", *common, "1")
    assert json.loads((directory / "progress.json").read_text())["optimizer"] == description
    _run(capsys, "train", *common, "2")  # resumed from model.keras
    assert json.loads((directory / "progress.json").read_text())["epochs_done"] == 2
    optimizer = keras.models.load_model(directory / "model.keras").optimizer
    assert float(getattr(optimizer, setting)) == pytest.approx(value) and int(optimizer.iterations) == 4
    assert bench.optimizer_description(1e-3) == "Adam(0.001)"


def test_architecture_trains_that_model_resumes_only_as_it_and_never_shares_a_table(tmp_path, capsys):
    import keras
    common = ["--dataset", "digits", "--recipes", "pgd", "--seeds", "0", "--runs", str(tmp_path),
              "--train-size", "128", "--verbose", "0", "--epochs", "1"]
    directory = tmp_path / "digits" / "pgd" / "seed0"
    _run(capsys, "train", *common, "--architecture", "madry_cnn")
    assert json.loads((directory / "progress.json").read_text())["architecture"] == "madry_cnn"
    model = keras.models.load_model(directory / "model.keras")
    assert model.base_model.name == "madry_cnn"
    with pytest.raises(SystemExit, match="holds a madry_cnn run; it resumes only as one. "
                                         "Received: --architecture small_cnn"):
        _run(capsys, "train", *common[:-1], "2")  # the default model
    # A small_cnn run beside it: the tables refuse to compare the two.
    _run(capsys, "train", *common[:2], "--recipes", "pgd5_awp_ema", *common[4:])
    with pytest.raises(SystemExit, match="mixes runs of different models.*madry_cnn.*small_cnn"):
        _run(capsys, "curves", "--dataset", "digits", "--runs", str(tmp_path))


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


def test_train_resumes_evaluates_tabulates_and_publishes(tmp_path, capsys, monkeypatch):
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
    # ... and ends where a straight run of both epochs ends (the same shuffles and attack noise).
    _run(capsys, "train", *common[:-4], "--runs", str(tmp_path / "straight"), "--verbose", "0", "--epochs", "2")
    straight = json.loads((tmp_path / "straight" / "digits" / "pgd" / "seed0" / "progress.json").read_text())
    assert straight["history"] == second["history"] and straight["held_out"] == second["held_out"]

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
    seeds = _run(capsys, "seeds", *common, "--budget", "screen")
    assert "| APGD-CE-100 (screen) per seed |" in seeds
    assert (f"| pgd | 0 | 8 x 2 (1.00x) | {100 * robust:.1f} | {100 * robust:.1f} | 0.0 | {100 * clean:.1f} "
            "| reference |") in seeds

    _run(capsys, "publish", *common, "--to", str(published))
    copied = sorted(str(p.relative_to(published)) for p in published.rglob("*") if p.is_file())
    expected = ["digits/pgd/seed0/eval_last_screen.json", "digits/pgd/seed0/progress.json"]
    if second["best_epoch"] != 2:
        expected.insert(0, "digits/pgd/seed0/eval_best_screen.json")
    assert copied == sorted(expected)
    republished = _run(capsys, "table", *common[:-4], "--runs", str(published), "--verbose", "0",
                       "--budget", "screen")
    assert republished == table

    # curves --plot draws each run's training accuracy against its held-out robust accuracy.
    held = [h["apgd_ce"] for h in second["held_out"]]
    printed = _run(capsys, "curves", *common, "--plot", str(tmp_path / "curves.png"))
    assert f"best {max(held):.3f} at {held.index(max(held)) + 1}" in printed
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    drawn = {}
    monkeypatch.setattr(plots, "plot_robust_overfitting", lambda curves, path, title: drawn.update(curves, title=title))
    _run(capsys, "curves", *common, "--plot", str(tmp_path / "again.png"))
    assert sorted(drawn) == ["pgd seed0", "title"]
    assert drawn["pgd seed0"] == {"accuracy": [h["accuracy"] for h in second["history"]], "val_robust_accuracy": held}
    assert drawn["title"] == "digits, small_cnn, 1,237 training images:\nheld-out APGD-CE-10"
    assert "pgd " not in _run(capsys, "curves", *common[:4], "--seeds", "1", *common[6:])  # only the runs named


@pytest.mark.parametrize("checkpoints, best_epoch, expected", [
    (["last", "best"], 1, ["last", "best"]),
    (["last", "best"], 2, ["last"]),  # the best epoch is the last: attacked once
    (["last"], 1, ["last"]),
    (["best"], 1, ["best"]),
    (["best"], 2, []),
])
def test_checkpoints_names_the_saved_models_evaluated(tmp_path, monkeypatch, checkpoints, best_epoch, expected):
    directory = tmp_path / "digits" / "pgd" / "seed0"
    directory.mkdir(parents=True)
    (directory / "progress.json").write_text(json.dumps({"epochs_done": 2, "best_epoch": best_epoch}))
    attacked = []
    monkeypatch.setattr(bench, "evaluate", lambda args, recipe, seed, which: attacked.append(which))
    args = type("Args", (), {"runs": str(tmp_path), "dataset": "digits", "checkpoints": checkpoints})()
    bench.evaluate_checkpoints(args, "pgd", 0)
    assert attacked == expected


def test_publish_copies_only_the_runs_named(tmp_path, capsys):
    runs = tmp_path / "runs" / "digits"
    for recipe, seed in (("pgd", 0), ("pgd", 1), ("pgd5_ema_equal", 0), ("pgd5_ema_equal", 1)):
        directory = runs / recipe / f"seed{seed}"
        directory.mkdir(parents=True)
        (directory / "progress.json").write_text(json.dumps({"recipe": recipe, "seed": seed}))
        (directory / "eval_last.json").write_text("{}")
        (directory / "eval_last_epoch2.state.json").write_text("{}")  # resumable state: never published
    (runs / "cost.json").write_text("{}")
    common = ["--dataset", "digits", "--runs", str(tmp_path / "runs")]

    def published(to, *argv):
        _run(capsys, "publish", *common, "--to", str(to), *argv)
        return sorted(str(p.relative_to(to / "digits")) for p in to.rglob("*") if p.is_file())
    assert published(tmp_path / "some", "--recipes", "pgd5_ema_equal", "--seeds", "1") == [
        "cost.json", "pgd5_ema_equal/seed1/eval_last.json", "pgd5_ema_equal/seed1/progress.json"]
    assert published(tmp_path / "seed0", "--seeds", "0") == [
        "cost.json", "pgd/seed0/eval_last.json", "pgd/seed0/progress.json",
        "pgd5_ema_equal/seed0/eval_last.json", "pgd5_ema_equal/seed0/progress.json"]
    assert len(published(tmp_path / "all")) == 1 + 4 * 2


def test_publish_without_runs_copies_nothing(tmp_path, capsys):
    out = _run(capsys, "publish", "--dataset", "digits", "--runs", str(tmp_path / "none"),
               "--to", str(tmp_path / "to"))
    assert "copied 0 files" in out
    assert not (tmp_path / "to").exists()


def _train_killed_after_the_first_epoch(capsys, monkeypatch, common):
    """`train` with `common` arguments, killed after the first epoch was saved, before its held-out check."""
    def killed(*args):
        raise KeyboardInterrupt
    with monkeypatch.context() as patch:
        patch.setattr(bench, "held_out_epoch", killed)
        with pytest.raises(KeyboardInterrupt):
            _run(capsys, "train", *common)


def test_a_cosine_recipe_decays_over_the_whole_run_and_resumes_on_its_curve(tmp_path, capsys, monkeypatch):
    import keras
    common = ["--dataset", "digits", "--recipes", "pgd_cosine", "--seeds", "0", "--runs", str(tmp_path),
              "--train-size", "256", "--epochs", "2", "--verbose", "0"]  # 2 epochs of 2 steps
    directory = tmp_path / "digits" / "pgd_cosine" / "seed0"

    _train_killed_after_the_first_epoch(capsys, monkeypatch, common)
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


def test_an_sgd_recipe_trains_with_momentum_on_its_piecewise_rate_and_resumes_on_it(
        tmp_path, capsys, monkeypatch):
    import keras
    common = ["--dataset", "digits", "--recipes", "pgd_sgd", "--seeds", "0", "--runs", str(tmp_path),
              "--train-size", "256", "--epochs", "2", "--verbose", "0"]  # 2 epochs of 2 steps
    directory = tmp_path / "digits" / "pgd_sgd" / "seed0"
    rate = bench.SGD_LEARNING_RATE
    _train_killed_after_the_first_epoch(capsys, monkeypatch, common)
    progress = json.loads((directory / "progress.json").read_text())
    # the schedule spans the 2 epochs asked for, not the 1 run so far: 10x down after steps 2 and 3
    assert progress["optimizer"] == f"SGD(momentum 0.9, {rate}, divided by 10 after steps 2 and 3)"
    optimizer = keras.models.load_model(directory / "model.keras").optimizer
    assert isinstance(optimizer, keras.optimizers.SGD) and optimizer.momentum == pytest.approx(0.9)
    assert int(optimizer.iterations) == 2 and float(optimizer.learning_rate) == pytest.approx(rate)
    schedule = optimizer._learning_rate
    assert [float(schedule(step)) for step in (2, 3, 4)] == pytest.approx([rate, rate / 10, rate / 100])

    _run(capsys, "train", *common)  # resumed: the second epoch continues down the same schedule
    optimizer = keras.models.load_model(directory / "model.keras").optimizer
    assert int(optimizer.iterations) == 4
    assert float(optimizer.learning_rate) == pytest.approx(rate / 100)
    assert bench.optimizer_description(0.1, optimizer="sgd") == "SGD(momentum 0.9, 0.1)"


def test_the_sgd_recipe_warms_awp_up_for_one_epoch_and_a_resumed_run_keeps_it_on(tmp_path, capsys):
    common = ["--dataset", "digits", "--recipes", "pgd5_awp_ema_sgd", "--seeds", "0", "--runs", str(tmp_path),
              "--train-size", "256", "--verbose", "0", "--epochs"]
    for epochs in ("1", "2"):  # two invocations: the second resumes at epoch index 1
        _run(capsys, "train", *common, epochs)
    progress = json.loads((tmp_path / "digits" / "pgd5_awp_ema_sgd" / "seed0" / "progress.json").read_text())
    history = progress["history"]
    assert history[0]["awp_norm"] == 0.0 and history[0]["awp_loss_gain"] == 0.0
    assert history[1]["awp_norm"] > 0.0
    assert bench.training_callbacks("pgd_sgd", bench.make_model("pgd_sgd", "digits", (8, 8, 1), 10, 0, 0.1)[0]) == []


def test_the_radius_warm_up_variant_trains_nearer_the_clean_points_first(tmp_path, capsys):
    common = ["--dataset", "digits", "--seeds", "0", "--runs", str(tmp_path), "--train-size", "256",
              "--verbose", "0", "--epochs", "1", "--recipes"]
    for recipe in ("pgd", "pgd_epswarm"):
        _run(capsys, "train", *common, recipe)
    first = {recipe: json.loads((tmp_path / "digits" / recipe / "seed0" / "progress.json").read_text())["history"][0]
             for recipe in ("pgd", "pgd_epswarm")}
    # the same seed, initial weights and data: the ramp's smaller balls give a lower attacked loss
    assert first["pgd_epswarm"]["task_loss"] < first["pgd"]["task_loss"] - 0.01
    model = bench.make_model("pgd_epswarm", "digits", (8, 8, 1), 10, 0, 1e-3)[0]
    warmup, = bench.training_callbacks("pgd_epswarm", model)
    assert isinstance(warmup, bench.EpsilonWarmup) and warmup.epochs == 3


def test_the_larger_radius_variant_trains_beyond_the_evaluated_eps(tmp_path, capsys):
    recipes = ("pgd5_awp_ema_epswarm", "pgd5_awp_ema_epswarm_eps12")
    for recipe in recipes:
        _run(capsys, "train", "--dataset", "digits", "--seeds", "0", "--runs", str(tmp_path), "--train-size", "256",
             "--verbose", "0", "--epochs", "1", "--recipes", recipe)
    base, larger = (json.loads((tmp_path / "digits" / recipe / "seed0" / "progress.json").read_text())
                    for recipe in recipes)
    assert base["harden"]["eps"] == pytest.approx(0.1) and larger["harden"]["eps"] == pytest.approx(0.12)
    model = bench.make_model(recipes[1], "digits", (8, 8, 1), 10, 0, 1e-3)[0]
    (x, y), _, _, _ = bench.load_splits("digits", 64)
    moved = np.max(np.abs(model.perturbation(model, x, y) - x))
    assert 0.1 + 1e-3 < moved <= 0.12 + 1e-6  # the training attack reaches past the evaluated 0.1


def test_the_augmented_variant_trains_on_crops_and_flips_and_records_them(tmp_path, capsys):
    common = ["--dataset", "digits", "--seeds", "0", "--runs", str(tmp_path), "--train-size", "256",
              "--verbose", "0", "--epochs", "1", "--recipes"]
    progress = {}
    for recipe in ("pgd", "pgd_augment"):
        _run(capsys, "train", *common, recipe)
        progress[recipe] = json.loads((tmp_path / "digits" / recipe / "seed0" / "progress.json").read_text())
    assert progress["pgd_augment"]["augmentation"] == "CropFlip(padding=1, flip=True)"
    assert progress["pgd"]["augmentation"] is None
    # the same seed, weights and batches of indices: only the crops and flips differ
    assert progress["pgd_augment"]["history"][0]["task_loss"] != pytest.approx(
        progress["pgd"]["history"][0]["task_loss"], abs=1e-4)


def test_seed_summary_pairs_the_gain_seed_by_seed_and_only_over_shared_seeds():
    # CIFAR-10's last epochs (docs/RESULTS.md), (clean, worst case); seed 3 has no reference run
    results = {"pgd": {0: (0.504, 0.228), 1: (0.443, 0.200), 2: (0.459, 0.244)},
               "pgd5_ema_long": {2: (0.518, 0.228), 0: (0.531, 0.225), 1: (0.505, 0.228), 3: (0.6, 0.5)}}
    reference, recipe = bench.seed_summary(results)
    assert reference["gains"] == {0: 0.0, 1: 0.0, 2: 0.0} and reference["spread"] == pytest.approx(0.044)
    assert recipe["seeds"] == [0, 1, 2, 3] and recipe["worst"] == [0.225, 0.228, 0.228, 0.5]
    assert recipe["mean"] == pytest.approx(1.181 / 4) and recipe["spread"] == pytest.approx(0.275)
    assert list(recipe["gains"]) == [0, 1, 2]
    assert recipe["gains"][1] == pytest.approx(0.028) and recipe["gains"][2] == pytest.approx(-0.016)
    assert recipe["mean_gain"] == pytest.approx(0.003)
    assert recipe["mean_clean_change"] == pytest.approx((0.027 + 0.062 + 0.059) / 3)
    assert recipe["gain_error"] == pytest.approx(np.std([-0.003, 0.028, -0.016], ddof=1) / np.sqrt(3))
    assert recipe["point_errors"] == {0: None, 1: None, 2: None}  # no per-point results given
    lone, = bench.seed_summary({"trades": {0: (0.5, 0.2)}})
    assert lone["gains"] == {} and lone["mean_gain"] is None and lone["mean_clean_change"] is None
    assert lone["gain_error"] is None


def test_paired_point_error_comes_from_the_points_the_two_models_disagree_on():
    recipe, reference = [True, True, False, True], [True, False, True, False]   # differences 0, +1, -1, +1
    assert bench.paired_point_error(recipe, reference) == pytest.approx(np.std([0, 1, -1, 1], ddof=1) / 2)
    assert bench.paired_point_error(reference, reference) == 0.0     # the same points held: no error at all
    assert bench.paired_point_error(recipe, reference[:3]) is None   # not the same points
    assert bench.paired_point_error(None, reference) is None
    # 1,000 points, 25 held by the recipe alone and 12 by the reference alone (Fashion-MNIST seed 0):
    # an error of 0.6 points on the +1.3-point gain, where each accuracy alone has about 1.3
    held = [True] * 747 + [True] * 25 + [False] * 12 + [False] * 216
    other = [True] * 747 + [False] * 25 + [True] * 12 + [False] * 216
    assert bench.paired_point_error(held, other) == pytest.approx(0.0061, abs=1e-4)
    rows = bench.seed_summary({"pgd": {0: (0.9, 0.759, other)}, "recommended": {0: (0.9, 0.772, held)}})
    assert rows[1]["point_errors"][0] == bench.paired_point_error(held, other)


def test_seeds_reads_the_published_reports_and_leaves_out_a_reduced_budget(tmp_path, capsys):
    import shutil
    published = ROOT / "benchmarks" / "results" / "recipes" / "cifar10_jpeg"
    for recipe, seed in [("pgd", 0), ("pgd", 1), ("pgd5_ema_long", 0), ("pgd5_ema_long", 1)]:
        shutil.copytree(published / recipe / f"seed{seed}", tmp_path / "cifar10_jpeg" / recipe / f"seed{seed}")
    reduced = tmp_path / "cifar10_jpeg" / "pgd5_ema_long" / "seed1" / "eval_last.json"
    report = json.loads(reduced.read_text())
    report.update(standard=False, standard_reasons=["square: 1000 queries < 5000"])
    reduced.write_text(json.dumps(report))

    out = _run(capsys, "seeds", "--dataset", "cifar10_jpeg", "--runs", str(tmp_path))
    assert f"left out: {reduced} (not the AutoAttack standard version (square: 1000 queries < 5000))" in out
    last = {(r, s): json.loads((tmp_path / "cifar10_jpeg" / r / f"seed{s}" / "eval_last.json").read_text())
            for r, s in [("pgd", 0), ("pgd", 1), ("pgd5_ema_long", 0)]}
    worst = {key: r["worst_case_accuracy"][0] for key, r in last.items()}
    reference_row = next(line for line in out.splitlines() if line.startswith("| pgd |"))
    assert reference_row.startswith(
        f"| pgd | 0 / 1 | 8 x 15 (1.00x) | {100 * worst['pgd', 0]:.1f} / {100 * worst['pgd', 1]:.1f} |")
    assert reference_row.endswith("| reference | reference | reference |")
    row = next(line for line in out.splitlines() if line.startswith("| pgd5_ema_long |"))
    gain = 100 * (worst["pgd5_ema_long", 0] - worst["pgd", 0])
    clean = 100 * (last["pgd5_ema_long", 0]["clean_accuracy"] - last["pgd", 0]["clean_accuracy"])
    differences = [int(a is None) - int(b is None)
                   for a, b in zip(last["pgd5_ema_long", 0]["broken_by"][0], last["pgd", 0]["broken_by"][0])]
    error = 100 * np.std(differences, ddof=1) / np.sqrt(len(differences))
    assert row == (f"| pgd5_ema_long | 0 | 6 x 21 (1.05x) | {100 * worst['pgd5_ema_long', 0]:.1f} | "
                   f"{100 * worst['pgd5_ema_long', 0]:.1f} | 0.0 | "
                   f"{100 * last['pgd5_ema_long', 0]['clean_accuracy']:.1f} | {gain:+.1f} ± {error:.1f} (seed 0) | "
                   f"{gain:+.1f} | {clean:+.1f} |")


def test_seeds_pairs_the_gains_against_the_recipe_named_by_reference(tmp_path, capsys):
    import shutil
    published = ROOT / "benchmarks" / "results" / "recipes" / "cifar10_jpeg"
    for recipe in ("pgd", "pgd5_ema_equal", "pgd5_awp_ema"):
        shutil.copytree(published / recipe / "seed0", tmp_path / "cifar10_jpeg" / recipe / "seed0")
    out = _run(capsys, "seeds", "--dataset", "cifar10_jpeg", "--runs", str(tmp_path), "--reference", "pgd5_ema_equal")
    last = {r: json.loads((tmp_path / "cifar10_jpeg" / r / "seed0" / "eval_last.json").read_text())
            for r in ("pgd", "pgd5_ema_equal", "pgd5_awp_ema")}
    assert "gain over pgd5_ema_equal on the same seed" in out
    assert next(line for line in out.splitlines() if line.startswith("| pgd5_ema_equal |")).endswith(
        "| reference | reference | reference |")
    for recipe in ("pgd", "pgd5_awp_ema"):   # PGD-7 itself is now paired against the reference
        gain = 100 * (last[recipe]["worst_case_accuracy"][0] - last["pgd5_ema_equal"]["worst_case_accuracy"][0])
        row = next(line for line in out.splitlines() if line.startswith(f"| {recipe} |"))
        assert f"| {gain:+.1f} ± " in row and row.endswith(
            f"| {gain:+.1f} | "
            f"{100 * (last[recipe]['clean_accuracy'] - last['pgd5_ema_equal']['clean_accuracy']):+.1f} |")


def test_seeds_early_stopped_pairs_best_held_out_epochs_and_skips_those_not_attacked(tmp_path, capsys):
    import shutil
    published = ROOT / "benchmarks" / "results" / "recipes" / "fashion_mnist"
    for recipe in ("pgd", "pgd5_awp_ema"):
        for seed in (0, 1, 2):
            shutil.copytree(published / recipe / f"seed{seed}", tmp_path / "fashion_mnist" / recipe / f"seed{seed}")

    def report(recipe, seed):
        """What early stopping returned: the best epoch's report, the last's if that was the best."""
        run = tmp_path / "fashion_mnist" / recipe / f"seed{seed}"
        progress = json.loads((run / "progress.json").read_text())
        which = "last" if progress["best_epoch"] == progress["epochs_done"] else "best"
        path = run / f"eval_{which}.json"
        return json.loads(path.read_text()) if path.exists() else None

    # PGD-7 seed 0's best epoch (9 of 15) was never attacked; the recipe's best epochs are its last
    assert report("pgd", 0) is None and all(report("pgd", s) for s in (1, 2))
    out = _run(capsys, "seeds", "--dataset", "fashion_mnist", "--runs", str(tmp_path), "--reference", "pgd+es")
    rows = {line.split(" | ")[0][2:]: line for line in out.splitlines() if line.startswith("| pgd")}
    assert set(rows) == {"pgd", "pgd+es", "pgd5_awp_ema", "pgd5_awp_ema+es"}
    assert "gain over pgd+es on the same seed" in out
    assert rows["pgd+es"].endswith("| reference | reference | reference |")
    best = {s: report("pgd", s)["worst_case_accuracy"][0] for s in (1, 2)}
    assert rows["pgd+es"].startswith(f"| pgd+es | 1 / 2 | 8 x 15 (1.00x) | {100 * best[1]:.1f} / {100 * best[2]:.1f} |")
    recipe = {s: report("pgd5_awp_ema", s)["worst_case_accuracy"][0] for s in (0, 1, 2)}
    gains = [100 * (recipe[s] - best[s]) for s in (1, 2)]
    row = rows["pgd5_awp_ema+es"]
    assert row.startswith("| pgd5_awp_ema+es | 0 / 1 / 2 | 7 x 15 (0.88x) | ")
    assert f"| {gains[0]:+.1f} ± " in row and f" (seed 1) / {gains[1]:+.1f} ± " in row
    assert f"| {np.mean(gains):+.1f} ± {np.std(gains, ddof=1) / np.sqrt(2):.1f} | " in row
    without = _run(capsys, "seeds", "--dataset", "fashion_mnist", "--runs", str(tmp_path))
    assert "+es |" not in without   # last epochs only unless asked


def test_pass_ratio_counts_passes_a_step_times_epochs_against_the_reference():
    assert bench.pass_ratio("7", 17, "8", 15) == pytest.approx(119 / 120)  # pgd5_awp_ema_equal
    assert bench.pass_ratio("12", 15, "8", 15) == pytest.approx(1.5)       # TRADES-10
    assert bench.pass_ratio("2 + 2 double-backprop", 15, "8", 15) is None  # not a plain count
    assert bench.pass_ratio("7", 15, "8", 0) is None
    assert bench._budget_cell("7", 15, "8", 15) == "7 x 15 (0.88x)"
    assert bench._budget_cell("2 + 1 double-backprop", 15, "8", 15) == "2 + 1 double-backprop x 15"


def test_step_ratio_is_measured_or_borrowed_from_a_recipe_with_the_same_training_step():
    cost = {"ratio_to_pgd": {"pgd": 1.0, "pgd5_ema_long": 0.59, "trades": 1.54}}
    assert bench.step_ratio(cost, "pgd5_ema_long") == 0.59
    assert bench.step_ratio(cost, "pgd_double") == 1.0  # PGD-7's step, for twice the epochs
    assert bench.step_ratio(cost, "pgd_cosine") == 1.0  # a learning rate changes no step's cost
    assert bench.step_ratio(cost, "pgd5_ema_long_cosine") == 0.59
    assert bench.step_ratio(cost, "pgd_wd") == 1.0  # nor does the optimizer's weight decay
    assert bench.step_ratio(cost, "pgd_lr2") == 1.0  # nor a constant rate
    assert bench.step_ratio(cost, "pgd_ema") is None  # EMA is another step: measured or nothing
    assert bench.step_ratio({}, "pgd_double") is None
    assert bench.step_ratio(cost, "a_recipe_since_removed") is None
    assert bench._training_time(bench.step_ratio(cost, "pgd_double"), 30, 15) == 2.0


def _progress(start, seconds):
    """A progress.json's timing of epochs run back to back from `start` ("HH:MM:SS" on one day)."""
    t = bench.time.mktime(bench.time.strptime("2026-12-01 " + start, "%Y-%m-%d %H:%M:%S"))
    finished = []
    for s in seconds:
        t += s
        finished.append(bench.time.strftime("%Y-%m-%d %H:%M:%S", bench.time.localtime(t)))
    return {"epochs_done": len(seconds), "epoch_seconds": list(seconds), "epoch_finished_at": finished}


def test_side_by_side_ratio_counts_only_the_epochs_run_while_the_other_trained():
    # The reference's first epoch (200 s, 10:00:00-10:03:20) began before the run did; the run's
    # last two (30 s, after 10:10:00) ran after the reference had finished: neither counts.
    reference = _progress("10:00:00", [200, 100, 100, 100, 100])       # 10:00:00-10:10:00
    run = _progress("10:01:00", [120] * 4 + [30] * 4)                  # 10:01:00-10:11:00
    assert bench.side_by_side_ratio(run, reference) == pytest.approx(1.2)  # all epochs: 75 / 100
    assert bench.side_by_side_ratio(reference, run) == pytest.approx(1 / 1.2)
    later = _progress("11:00:00", [80] * 5)                            # never beside the reference
    assert bench.side_by_side_ratio(later, reference) is None
    barely = _progress("10:08:00", [50, 50, 50])                       # two epochs inside, fewer than 3
    assert bench.side_by_side_ratio(barely, reference) is None
    assert bench.side_by_side_ratio(barely, reference, min_epochs=1) == pytest.approx(0.5)


def test_side_by_side_training_time_takes_totals_for_runs_that_started_and_ended_together():
    # Load drifting during the runs: the run's short epochs fall where the machine was quiet, so
    # its median (70 s) understates its total; the two started and ended together.
    reference = _progress("10:00:00", [100] * 6)                        # 10:00:00-10:10:00, 600 s
    run = _progress("10:00:30", [70] * 6 + [150])                       # 10:00:30-10:10:00, 570 s
    assert bench.side_by_side_ratio(run, reference) == pytest.approx(0.7)
    assert bench.side_by_side_training_time(run, reference) == pytest.approx(570 / 600)
    # Ended far apart (the run's tail ran without the reference's load): medians x epochs.
    longer = _progress("10:00:30", [70] * 6 + [150] * 4)                # ends 10:13:00
    assert bench.side_by_side_training_time(longer, reference) == pytest.approx(0.7 * 10 / 6)
    assert bench.side_by_side_training_time(_progress("11:00:00", [80] * 5), reference) is None


def test_cost_times_every_recipe_alone_in_its_own_process_taking_turns(tmp_path, capsys):
    runs = tmp_path / "runs"
    out = _run(capsys, "cost", "--dataset", "digits", "--recipes", "pgd", "fgsm_rs", "--seconds", "2",
               "--rounds", "2", "--batches", "3", "--runs", str(runs), "--verbose", "0")
    cost = json.loads((runs / "digits" / "cost.json").read_text())
    assert cost["rounds"] == 2 and cost["seconds"] == 2
    assert set(cost["ratio_to_pgd"]) == set(cost["cpu_ratio_to_pgd"]) == {"pgd", "fgsm_rs"}
    assert cost["ratio_to_pgd"]["pgd"] == cost["cpu_ratio_to_pgd"]["pgd"] == 1.0
    per_step, steps = cost["seconds_per_step"], cost["steps"]
    assert cost["ratio_to_pgd"]["fgsm_rs"] == pytest.approx(per_step["fgsm_rs"] / per_step["pgd"])
    # Each trained for two turns of 2 s; the steps counted lie inside them (with 3 batches a
    # fit, most of a turn goes to what each `fit` does around its steps, which is not counted).
    for recipe in ("pgd", "fgsm_rs"):
        assert steps[recipe] >= 4 and 0.0 < steps[recipe] * per_step[recipe] <= 4.0
    assert f"{cost['ratio_to_pgd']['fgsm_rs']:6.2f}x PGD-7" in out
    assert bench.step_ratio(cost, "fgsm_rs") == cost["ratio_to_pgd"]["fgsm_rs"]
