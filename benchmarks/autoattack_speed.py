"""AutoAttack (standard version) against a PyTorch reference: wall time and robust accuracy.

Runs gfa_keras' `autoattack` preset (`evaluate_robustness(model, (x, y), "autoattack",
eps=...)`, TensorFlow backend, this process) and the PyTorch AutoAttack of torchattacks
(a second process with `KERAS_BACKEND=torch`, which loads the SAME `.keras` file and
wraps it as a `torch.nn.Module`) on the same points, and prints each side's time per
attack, the whole suite's time and both robust accuracies with their standard errors.

The reference. torchattacks' `AutoAttack(version="standard")` chains its APGD, APGDT,
FAB and Square classes through `MultiAttack`, but leaves their own defaults in place:
APGD-CE, APGD-T and FAB-T run 10 iterations (fra31/auto-attack's standard version runs
100) and Square rescales its window schedule (the standard version passes
`resc_schedule=False`). So by default (`--reference standard`) the reference is
torchattacks' four attack classes with fra31's standard budget (APGD-CE and APGD-T 100
steps, APGD-T and FAB-T 9 target classes, FAB-T 100 steps, Square 5,000 queries with
`p_init=0.8` and no rescaled schedule, one restart each, seed 0), run as fra31's
`run_standard_evaluation` runs them: on the clean-correct points, each attack on the
points still robust, in batches. `--reference shipped` runs the attacks that
`torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=10,
seed=0)` builds, in the same cascade; the report lists how their budget differs from
the standard version's.

Every adversarial point of both sides is checked by the side that found it (the model
misclassifies it, it lies within eps, inside [0, 1]); the reference's points are
checked again here with the TensorFlow model, and disagreements are counted.

The model: by default a small CNN (`small_cnn`: conv 32 - pool - conv 64 - pool - dense
128 - 10) PGD-trained (Linf eps 0.1, 7 steps) on Fashion-MNIST, trained once and cached
in `--cache-dir`; or any `.keras` classifier of 28x28x1 images with `--model`. Points:
the first `--points / 10` test images of each class, in file order.

TensorFlow runs with `TF_ENABLE_ONEDNN_OPTS=1` unless the environment sets it: PyTorch uses
oneDNN kernels on CPU by default, TensorFlow only on CPUs with AVX-512 and the like.

Needs `pip install -e ".[bench]"` (torch, torchattacks). Each side's result is cached in
`--cache-dir` keyed by its settings (ours also by gfa_keras' source), so an interrupted run
resumes with the side not yet done (`--fresh` reruns both). Run (200 points took 28 minutes,
one side after the other, on a loaded 2-core machine):

    python benchmarks/autoattack_speed.py --points 200 --eps 0.1 --threads 2
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import os
import subprocess
import sys
import time

import numpy as np

ATTACKS = ("apgd_ce", "apgd_t", "fab_t", "square")
# fra31/auto-attack's standard version (autoattack.py, set_version("standard")) for Linf and L2.
STANDARD_BUDGET = {
    "apgd_ce": {"steps": 100, "restarts": 1},
    "apgd_t": {"steps": 100, "restarts": 1, "target_classes": 9},
    "fab_t": {"steps": 100, "restarts": 1, "target_classes": 9},
    "square": {"queries": 5000, "restarts": 1, "p_init": 0.8, "rescaled_schedule": False},
}
DEFAULT_CACHE_DIR = "runs/autoattack_speed"
# Relative slack on the norm bound for float32 rounding in both sides' projections.
NORM_SLACK = 1e-6

__all__ = [
    "ATTACKS",
    "STANDARD_BUDGET",
    "SideResult",
    "budget_deviations",
    "cascade",
    "compare",
    "format_report",
    "our_budget",
    "per_attack_counts",
    "standard_error",
]


# ---------------------------------------------------------------------------------------
# Framework-free bookkeeping (tested in tests/test_autoattack_speed_benchmark.py).


def standard_error(p: float, n: int) -> float:
    """Standard error of a proportion `p` measured on `n` independent points."""
    if n < 1:
        raise ValueError(f"n must be a positive number of points. Received: n={n!r}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be a proportion in [0, 1]. Received: p={p!r}")
    return math.sqrt(p * (1.0 - p) / n)


@dataclasses.dataclass
class SideResult:
    """What one implementation did on the benchmark points.

    Attributes:
        name: Display name, e.g. `"gfa_keras"`.
        broken_by: Per point: `"clean"` (misclassified unattacked), the name of the
            first attack that broke it, or `None` (robust).
        seconds: Wall seconds spent inside each attack's calls, by attack name.
        total_seconds: Wall seconds of the whole suite, clean pass and checking included.
        budget: Per attack, the budget that ran (see `STANDARD_BUDGET`).
        info: Anything else worth printing (threads, load average, versions).
    """

    name: str
    broken_by: list
    seconds: dict
    total_seconds: float
    budget: dict = dataclasses.field(default_factory=dict)
    info: dict = dataclasses.field(default_factory=dict)

    @property
    def robust_accuracy(self) -> float:
        return sum(by is None for by in self.broken_by) / len(self.broken_by)

    @property
    def clean_accuracy(self) -> float:
        return sum(by != "clean" for by in self.broken_by) / len(self.broken_by)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data) -> "SideResult":
        return cls(**data)


def cascade(attacks, x, y, *, predict, verify, batch_size, clock=time.perf_counter, log=None):
    """AutoAttack's worst-case cascade with a stopwatch on each attack.

    As fra31/auto-attack's `run_standard_evaluation`: the clean-correct points are
    attacked by the first attack in batches of `batch_size`, each later attack only
    gets the points still robust, and an adversarial point is kept only where `verify`
    accepts it.

    Args:
        attacks: `(name, fn)` pairs in cascade order; `fn(x_batch, y_batch)` returns the
            adversarial batch.
        x: Points, indexable by an integer index array.
        y: Integer labels as a NumPy array.
        predict: `predict(x_batch)` returns the predicted labels as a NumPy array.
        verify: `verify(x_batch, x_adv_batch, y_batch)` returns a boolean NumPy array:
            the attack broke the point (misclassified, within eps, in the box).
        batch_size: Points per attack call.
        clock: Returns seconds; only differences are used.
        log: If given, called with one line of progress after each attack call.

    Returns:
        `(broken_by, seconds, x_adv)`: per point `"clean"` / attack name / `None`, the
        seconds spent in each attack's calls, and the adversarial points (the clean
        point where no attack broke it).
    """
    n = len(y)
    broken_by = [None] * n
    x_adv = x.copy() if hasattr(x, "copy") else x.clone()
    for start in range(0, n, batch_size):
        index = np.arange(start, min(start + batch_size, n))
        for i in index[np.asarray(predict(x[index])) != y[index]]:
            broken_by[i] = "clean"
    seconds = {name: 0.0 for name, _ in attacks}
    for name, fn in attacks:
        robust = np.array([i for i in range(n) if broken_by[i] is None], dtype=np.int64)
        for start in range(0, len(robust), batch_size):
            index = robust[start:start + batch_size]
            began = clock()
            adv = fn(x[index], y[index])
            seconds[name] += clock() - began
            broken = np.asarray(verify(x[index], adv, y[index]), dtype=bool)
            if log is not None:
                log(f"{name}: {len(index)} points, {int(broken.sum())} broken, {seconds[name]:.1f} s so far")
            for position in np.flatnonzero(broken):
                broken_by[index[position]] = name
                x_adv[index[position]] = adv[position]
    return broken_by, seconds, x_adv


def per_attack_counts(broken_by, attacks=ATTACKS):
    """Per attack, in cascade order: `(name, points attacked, points broken, robust after)`."""
    remaining = sum(by != "clean" for by in broken_by)
    rows = []
    for name in attacks:
        broken = sum(by == name for by in broken_by)
        rows.append((name, remaining, broken, remaining - broken))
        remaining -= broken
    return rows


def budget_deviations(budget, standard=STANDARD_BUDGET):
    """Where `budget` differs from the standard version's, as readable strings."""
    lines = []
    for attack, expected in standard.items():
        ran = budget.get(attack)
        if ran is None:
            lines.append(f"{attack}: not run")
            continue
        for key, value in expected.items():
            if key in ran and ran[key] != value:
                lines.append(f"{attack}: {key} {ran[key]!r} (standard: {value!r})")
    return lines


def compare(ours: SideResult, reference: SideResult, *, speed_target=2.0, accuracy_points=0.01):
    """The issue's targets: ours `speed_target`x faster over the whole suite, robust
    accuracy within `accuracy_points` of the reference and never above it by more than
    the reference's standard error."""
    n = len(ours.broken_by)
    if len(reference.broken_by) != n:
        raise ValueError(
            "Both sides must have run on the same points. "
            f"Received: {n} points (ours) and {len(reference.broken_by)} (reference)"
        )
    ours_acc, ref_acc = ours.robust_accuracy, reference.robust_accuracy
    se_ref = standard_error(ref_acc, n)
    difference = ours_acc - ref_acc
    speedup = reference.total_seconds / ours.total_seconds
    return {
        "points": n,
        "speedup": speedup,
        "speed_met": speedup >= speed_target,
        "speed_target": speed_target,
        "robust_accuracy": {"ours": ours_acc, "reference": ref_acc},
        "standard_error": {"ours": standard_error(ours_acc, n), "reference": se_ref},
        "difference": difference,
        "within_points_met": abs(difference) <= accuracy_points + 1e-12,
        "not_above_met": difference <= se_ref + 1e-12,
        "accuracy_points": accuracy_points,
        "disagreements": sum((a is None) != (b is None) for a, b in zip(ours.broken_by, reference.broken_by)),
    }


def _met(flag):
    return "met" if flag else "**not met**"


def format_report(ours: SideResult, reference: SideResult, *, speed_target=2.0, accuracy_points=0.01) -> str:
    """A Markdown report: per-attack times and counts, totals, accuracies and the verdicts."""
    c = compare(ours, reference, speed_target=speed_target, accuracy_points=accuracy_points)
    n = c["points"]
    lines = [
        f"{n} points; clean accuracy {ours.name} {ours.clean_accuracy:.2%}, "
        f"{reference.name} {reference.clean_accuracy:.2%}",
        "",
        f"| attack | {ours.name} s | {reference.name} s | ratio | {ours.name} attacked / broken "
        f"| {reference.name} attacked / broken |",
        "|---|---|---|---|---|---|",
    ]
    ours_rows = {r[0]: r for r in per_attack_counts(ours.broken_by)}
    ref_rows = {r[0]: r for r in per_attack_counts(reference.broken_by)}
    for name in ATTACKS:
        mine, theirs = ours.seconds.get(name, 0.0), reference.seconds.get(name, 0.0)
        ratio = f"{theirs / mine:.2f}x" if mine > 0 else "n/a"
        lines.append(
            f"| {name} | {mine:.1f} | {theirs:.1f} | {ratio} | {ours_rows[name][1]} / {ours_rows[name][2]} "
            f"| {ref_rows[name][1]} / {ref_rows[name][2]} |"
        )
    lines.append(
        f"| whole suite | {ours.total_seconds:.1f} | {reference.total_seconds:.1f} | {c['speedup']:.2f}x | | |"
    )
    se = c["standard_error"]
    lines += [
        "",
        f"Robust accuracy: {ours.name} {c['robust_accuracy']['ours']:.2%} (SE {se['ours']:.2%}), "
        f"{reference.name} {c['robust_accuracy']['reference']:.2%} (SE {se['reference']:.2%}); "
        f"difference {100 * c['difference']:+.2f} points; the two disagree on {c['disagreements']} points.",
        "",
        f"- Speed, {ours.name} >= {speed_target:g}x faster over the whole suite: {c['speedup']:.2f}x, "
        f"{_met(c['speed_met'])}.",
        f"- Robust accuracy within {100 * accuracy_points:g} point of the reference: "
        f"{100 * abs(c['difference']):.2f} points, {_met(c['within_points_met'])}.",
        f"- Never above the reference by more than its standard error ({se['reference']:.2%}): "
        f"{100 * c['difference']:+.2f} points, {_met(c['not_above_met'])}.",
    ]
    for side in (ours, reference):
        deviations = budget_deviations(side.budget)
        lines.append(
            f"- {side.name} budget: "
            + ("the standard version's." if not deviations else "differs from the standard version: "
               + "; ".join(deviations) + ".")
        )
        if side.info:
            lines.append(f"- {side.name}: " + ", ".join(f"{k} {v}" for k, v in side.info.items()))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------
# The model and the points (TensorFlow backend).


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else json.dumps(part, sort_keys=True).encode())
    return h.hexdigest()[:16]


def train_model(path, *, train_size, epochs, eps, seed=0):
    """PGD-trains the small CNN on the first `train_size` Fashion-MNIST training images."""
    import keras

    import gfa_keras
    from gfa_keras.architectures import build_architecture
    from gfa_keras.data import load_dataset

    data = load_dataset("fashion_mnist")
    x, y = data.x_train[:train_size], data.y_train[:train_size]
    base = build_architecture("small_cnn", data.input_shape, data.num_classes, seed=seed)
    model = gfa_keras.harden(base, method="pgd", eps=eps)
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    began = time.perf_counter()
    model.fit(x, y, batch_size=128, epochs=epochs, verbose=2)
    seconds = time.perf_counter() - began
    # The plain classifier, so that the torch side loads it without gfa_keras.
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    base.save(path)
    with open(path + ".json", "w", encoding="utf-8") as f:
        json.dump({"train_size": train_size, "epochs": epochs, "eps": eps, "seed": seed,
                   "method": "pgd (7 steps)", "train_seconds": seconds}, f, indent=1)
    return path


def class_balanced_points(points, num_classes=10):
    """The first `points / num_classes` Fashion-MNIST test images of each class, in file order."""
    from gfa_keras.data import load_dataset

    if points % num_classes:
        raise ValueError(f"points must be a multiple of {num_classes}. Received: points={points}")
    data = load_dataset("fashion_mnist")
    index = np.sort(np.concatenate(
        [np.flatnonzero(data.y_test == c)[:points // num_classes] for c in range(num_classes)]))
    return data.x_test[index].astype("float32"), data.y_test[index].astype("int64")


def _set_tf_threads(threads):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


@contextlib.contextmanager
def _timed_attacks(seconds):
    """Swaps each registered AutoAttack attack for a copy with a stopwatch around its calls."""
    from gfa_keras.attacks import base

    saved = {name: base.ATTACKS[name] for name in ATTACKS}

    def timed(name, fn):
        @functools.wraps(fn)  # keeps the signature the cascade inspects
        def run(*args, **kwargs):
            began = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - began
                points = len(args[1]) if len(args) > 1 else "?"
                print(f"[gfa_keras] {name}: {points} points, {seconds[name]:.1f} s so far", flush=True)
        return run

    try:
        for name, spec in saved.items():
            base.ATTACKS[name] = dataclasses.replace(spec, fn=timed(name, spec.fn))
        yield
    finally:
        base.ATTACKS.update(saved)


def run_ours(model_path, x, y, *, eps, batch_size, checks, alongside=False):
    """gfa_keras' `autoattack` preset on the points, with each attack's time."""
    import keras

    import gfa_keras

    model = keras.saving.load_model(model_path, compile=False)
    seconds = {}
    load_before = os.getloadavg()[0]
    with _timed_attacks(seconds):
        began = time.perf_counter()
        report = gfa_keras.evaluate_robustness(model, (x, y), "autoattack", eps=eps, batch_size=batch_size,
                                               checks=checks, seed=0, verbose=0)
        total = time.perf_counter() - began
    settings = report.settings
    budget = our_budget(settings["budgets"])
    info = {"load average before/after": f"{load_before:.1f}/{os.getloadavg()[0]:.1f}",
            "checks": "on" if checks else "off", "keras": keras.__version__, "backend": keras.backend.backend(),
            "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset"),
            "ran alongside the reference": alongside}
    try:
        info["gfa_keras commit"] = subprocess.run(
            ["git", "-C", os.path.dirname(gfa_keras.__file__), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pass  # not a git checkout
    for key in ("standard", "standard_reasons"):
        if key in settings:
            info[f"report's {key}"] = settings[key]
    return SideResult("gfa_keras", list(report.broken_by[0]), seconds, total, budget, info)


def our_budget(budgets):
    """Our report's `settings["budgets"]` in `STANDARD_BUDGET`'s terms (Square counts queries in `steps`)."""
    rename = {"num_target_classes": "target_classes", "rescale_schedule": "rescaled_schedule"}
    result = {}
    for name in ATTACKS:
        entry = {}
        for option, value in budgets.get(name, {}).items():
            key = "queries" if (name, option) == ("square", "steps") else rename.get(option, option)
            if key in STANDARD_BUDGET[name]:
                entry[key] = value
        result[name] = entry
    return result


# ---------------------------------------------------------------------------------------
# The reference (a subprocess with KERAS_BACKEND=torch).


def _torch_module(keras_model):
    import torch

    class KerasOnTorch(torch.nn.Module):
        """A channels-last Keras model (torch backend) behind torchattacks' NCHW inputs."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, images):
            return self.model(images.permute(0, 2, 3, 1))

    return KerasOnTorch(keras_model).eval()


def _reference_attacks(module, eps, mode):
    import torchattacks

    if mode == "shipped":
        shipped = torchattacks.AutoAttack(module, norm="Linf", eps=eps, version="standard", n_classes=10, seed=0)
        return list(zip(ATTACKS, shipped._autoattack.attacks))
    return list(zip(ATTACKS, [
        torchattacks.APGD(module, norm="Linf", eps=eps, steps=100, n_restarts=1, seed=0, loss="ce"),
        torchattacks.APGDT(module, norm="Linf", eps=eps, steps=100, n_restarts=1, seed=0, n_classes=10),
        torchattacks.FAB(module, norm="Linf", eps=eps, steps=100, n_restarts=1, seed=0, multi_targeted=True,
                         n_classes=10),
        torchattacks.Square(module, norm="Linf", eps=eps, n_queries=5000, n_restarts=1, p_init=0.8,
                            loss="margin", resc_schedule=False, seed=0),
    ]))


def _reference_budget(attacks):
    """The budget the torchattacks objects will run, read from their attributes."""
    by_name = dict(attacks)
    return {
        "apgd_ce": {"steps": by_name["apgd_ce"].steps, "restarts": by_name["apgd_ce"].n_restarts},
        "apgd_t": {"steps": by_name["apgd_t"].steps, "restarts": by_name["apgd_t"].n_restarts,
                   "target_classes": by_name["apgd_t"].n_target_classes},
        "fab_t": {"steps": by_name["fab_t"].steps, "restarts": by_name["fab_t"].n_restarts,
                  "target_classes": by_name["fab_t"].n_target_classes if by_name["fab_t"].multi_targeted else 0},
        "square": {"queries": by_name["square"].n_queries, "restarts": by_name["square"].n_restarts,
                   "p_init": by_name["square"].p_init, "rescaled_schedule": by_name["square"].rescale_schedule},
    }


def run_reference(model_path, x, y, *, eps, batch_size, threads, mode):
    """torchattacks' attacks in AutoAttack's cascade; call under `KERAS_BACKEND=torch`."""
    import torch

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(threads)
    import keras
    import torchattacks

    if keras.backend.backend() != "torch":
        raise RuntimeError(f"The reference needs KERAS_BACKEND=torch. Received: backend {keras.backend.backend()!r}")
    module = _torch_module(keras.saving.load_model(model_path, compile=False))
    attacks = _reference_attacks(module, eps, mode)
    images = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    labels = torch.from_numpy(y.astype("int64"))

    def predict(batch):
        with torch.no_grad():
            return module(batch).argmax(1).numpy()

    def verify(batch, adv, batch_labels):
        with torch.no_grad():
            wrong = module(adv).argmax(1) != torch.as_tensor(batch_labels)
        flat, flat_adv = batch.reshape(len(batch), -1), adv.reshape(len(adv), -1)
        within = (flat_adv - flat).abs().amax(1) <= eps * (1 + NORM_SLACK) + NORM_SLACK
        in_box = ((flat_adv >= 0) & (flat_adv <= 1) & torch.isfinite(flat_adv)).all(1)
        return (wrong & within & in_box).numpy()

    def call(attack):
        return lambda batch, batch_labels: attack(batch, torch.as_tensor(batch_labels)).detach()

    load_before = os.getloadavg()[0]
    began = time.perf_counter()
    broken_by, seconds, x_adv = cascade([(name, call(a)) for name, a in attacks], images, labels.numpy(),
                                        predict=predict, verify=verify, batch_size=batch_size,
                                        log=lambda line: print(f"[torchattacks] {line}", flush=True))
    total = time.perf_counter() - began
    info = {"mode": mode, "torch threads": torch.get_num_threads(), "torch": torch.__version__,
            "torchattacks": torchattacks.__version__,
            "load average before/after": f"{load_before:.1f}/{os.getloadavg()[0]:.1f}"}
    result = SideResult(f"torchattacks ({mode})", broken_by, seconds, total, _reference_budget(attacks), info)
    return result, x_adv.detach().numpy().transpose(0, 2, 3, 1)


def _start_reference(model_path, points_path, out_path, *, eps, batch_size, threads, reference):
    # Passive OpenMP waiting: torch's spinning worker threads lost 2-5x per call on our shared
    # 2-core machine; the setting only helps the reference (the environment's own value wins).
    env = dict(os.environ, KERAS_BACKEND="torch", OMP_NUM_THREADS=str(threads))
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    command = [sys.executable, os.path.abspath(__file__), "--worker", "--model", model_path,
               "--points-file", points_path, "--worker-out", out_path, "--eps", repr(eps),
               "--batch-size", str(batch_size), "--threads", str(threads), "--reference", reference]
    return subprocess.Popen(command, env=env)


def _worker(args):
    points = np.load(args.points_file)
    result, x_adv = run_reference(args.model, points["x"], points["y"], eps=args.eps, batch_size=args.batch_size,
                                  threads=args.threads, mode=args.reference)
    np.save(args.worker_out + ".x_adv.npy", x_adv)
    with open(args.worker_out, "w", encoding="utf-8") as f:
        json.dump(result.to_dict(), f, indent=1)


def _recheck_reference(model_path, x, y, x_adv, broken_by, eps):
    """Counts the reference's broken points that the TensorFlow model does not confirm."""
    import keras

    model = keras.saving.load_model(model_path, compile=False)
    claimed = np.array([by not in (None, "clean") for by in broken_by])
    if not claimed.any():
        return 0
    x_c, a_c, y_c = x[claimed], x_adv[claimed], y[claimed]
    wrong = np.argmax(np.asarray(model.predict(a_c, verbose=0, batch_size=256)), axis=1) != y_c
    within = np.abs(a_c - x_c).reshape(len(a_c), -1).max(1) <= eps * (1 + NORM_SLACK) + NORM_SLACK
    in_box = ((a_c >= 0) & (a_c <= 1)).reshape(len(a_c), -1).all(1)
    return int((~(wrong & within & in_box)).sum())


def _source_digest():
    """A digest of gfa_keras' source files."""
    import gfa_keras

    root = os.path.dirname(gfa_keras.__file__)
    h = hashlib.sha256()
    for folder, _, files in sorted(os.walk(root)):
        for name in sorted(f for f in files if f.endswith(".py")):
            with open(os.path.join(folder, name), "rb") as f:
                h.update(name.encode() + f.read())
    return h.hexdigest()[:16]


def _cached(path, fresh, run):
    if not fresh and os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            print(f"(reusing {path}; --fresh reruns it)")
            return SideResult.from_dict(json.load(f))
    result = run()
    with open(path, "w", encoding="utf-8") as f:
        json.dump(result.to_dict(), f, indent=1)
    return result


def run_both(model_path, x, y, *, eps, batch_size, threads, reference, cache_dir, fresh=False, checks=False,
             parallel=False):
    """Runs (or reuses from `cache_dir`) both sides on `(x, y)`; returns `(ours, reference)`.

    The reference runs in a subprocess under `KERAS_BACKEND=torch` (at the same time as
    ours with `parallel=True`, so that both see the same machine load); the broken points
    it claims are checked again here with the TensorFlow model.
    """
    os.makedirs(cache_dir, exist_ok=True)
    with open(model_path, "rb") as f:
        key = _digest(f.read(), x.tobytes(), y.tobytes(), [eps, batch_size, threads])
    points_path = os.path.join(cache_dir, f"points_{key}.npz")
    np.savez(points_path, x=x, y=y)
    # Ours reruns whenever gfa_keras' source or TensorFlow's oneDNN setting changes.
    ours_key = _digest(key, _source_digest(), checks, os.environ.get("TF_ENABLE_ONEDNN_OPTS", ""))
    ours_path = os.path.join(cache_dir, f"ours_{ours_key}.json")
    ref_path = os.path.join(cache_dir, f"reference_{reference}_{key}.json")
    start_reference = functools.partial(_start_reference, model_path, points_path, ref_path, eps=eps,
                                        batch_size=batch_size, threads=threads, reference=reference)
    worker = None
    if fresh or not os.path.exists(ref_path):
        together = parallel and (fresh or not os.path.exists(ours_path))
        worker = start_reference() if together else None
    else:
        print(f"(reusing {ref_path}; --fresh reruns it)")
    ours = _cached(ours_path, fresh,
                   lambda: run_ours(model_path, x, y, eps=eps, batch_size=batch_size, checks=checks,
                                    alongside=worker is not None))
    if (fresh or not os.path.exists(ref_path)) and worker is None:
        worker = start_reference()
    if worker is not None and worker.wait() != 0:
        raise RuntimeError(f"The reference process failed with exit code {worker.returncode}.")
    with open(ref_path, encoding="utf-8") as f:
        result = SideResult.from_dict(json.load(f))
    result.info["broken points the TF model does not confirm"] = _recheck_reference(
        model_path, x, y, np.load(ref_path + ".x_adv.npy"), result.broken_by, eps)
    return ours, result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="A .keras classifier of 28x28x1 images (logits). Default: train and "
                                        "cache the PGD-trained small CNN.")
    parser.add_argument("--points", type=int, default=500, help="Class-balanced Fashion-MNIST test points.")
    parser.add_argument("--eps", type=float, default=0.1, help="Linf bound.")
    parser.add_argument("--batch-size", type=int, default=250, help="Points per attack call, both sides "
                                                                    "(fra31's default is 250).")
    parser.add_argument("--threads", type=int, default=2, help="Intra- and inter-op threads, both sides.")
    parser.add_argument("--reference", choices=("standard", "shipped"), default="standard",
                        help="standard: torchattacks' attacks at fra31's standard budget; shipped: the attacks "
                             "torchattacks.AutoAttack(version='standard') builds, as they are.")
    parser.add_argument("--checks", action="store_true", help="Run our gradient-masking checks too (timed).")
    parser.add_argument("--parallel", action="store_true", help="Run both sides at the same time, so that a "
                                                                "shared machine's load hits both alike.")
    parser.add_argument("--train-size", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR)
    parser.add_argument("--fresh", action="store_true", help="Rerun both sides even if cached.")
    parser.add_argument("--prepare-only", action="store_true", help="Train (or load) the model and stop.")
    parser.add_argument("--json", help="Also write the comparison and both sides' results here.")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--points-file", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _worker(args)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # oneDNN kernels for TensorFlow, as PyTorch uses them on CPU by default. TensorFlow turns
    # them on by itself only on CPUs with AVX-512 and the like; here (AMD EPYC, AVX2) they made
    # the CNN's forward and backward pass 1.4-1.7x faster. Before TensorFlow is imported; the
    # environment's own value wins.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        raise SystemExit("Run the benchmark with the TensorFlow backend; it starts the torch side itself.")
    _set_tf_threads(args.threads)
    os.makedirs(args.cache_dir, exist_ok=True)
    model_path = args.model
    if model_path is None:
        model_path = os.path.join(args.cache_dir, f"fmnist_small_cnn_pgd_{args.train_size}x{args.epochs}.keras")
        if not os.path.exists(model_path):
            train_model(model_path, train_size=args.train_size, epochs=args.epochs, eps=0.1)
    if args.prepare_only:
        print(model_path)
        return None
    x, y = class_balanced_points(args.points)
    ours, reference = run_both(model_path, x, y, eps=args.eps, batch_size=args.batch_size, threads=args.threads,
                               reference=args.reference, cache_dir=args.cache_dir, fresh=args.fresh,
                               checks=args.checks, parallel=args.parallel)

    print(f"\nmodel {model_path}, Linf eps {args.eps:g}, batch {args.batch_size}, {args.threads} threads each\n")
    text = format_report(ours, reference)
    print(text)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"comparison": compare(ours, reference), "ours": ours.to_dict(),
                       "reference": reference.to_dict(), "model": model_path}, f, indent=1)
    return text


if __name__ == "__main__":
    main()
