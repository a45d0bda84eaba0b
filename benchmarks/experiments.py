"""The paper's experiments, reproduced with this library's strict evaluation.

Every step is resumable and writes under a runs directory outside the repository
(default `runs/` under the current directory), one directory per (data set, architecture, method):

    <runs>/<dataset>_<arch>/<method>/
        model.keras       the hardened model after the last finished epoch
        progress.json     epochs done, wall time per epoch, the settings and loss used
        eval_*.state.json evaluate_robustness's partial state (resumes after a kill)
        eval_*.json       the finished RobustnessReports

Commands (run them in the background with `nice -n 10`; rerunning resumes):

    python benchmarks/experiments.py time   --dataset fashion_mnist --arch mlp --train-size 3000
    python benchmarks/experiments.py sweep  --dataset fashion_mnist --arch mlp --betas 0.01 0.1 0.3
    python benchmarks/experiments.py train  --dataset fashion_mnist --arch mlp --method gfa_deep --epochs 10
    python benchmarks/experiments.py evaluate --dataset fashion_mnist --arch mlp --method gfa_deep \
        --aa-test-size 1000 --fab-steps 50 --square-queries 1000
    python benchmarks/experiments.py table  --dataset fashion_mnist --arch mlp --figures docs/figures

`--tag NAME --beta B` trains a variant beside the main run (e.g. `gfa_deep_beta0.3`).
docs/RESULTS.md gives the commands and the results of the runs made for it.

Losses: the GFA family (and the plain model they are compared with) uses the
paper's MSE between the logits and one-hot labels; PGD training, TRADES, DataGrad
and the hybrid use cross-entropy on logits, as in their own papers. The inner
maximisation of PGD/TRADES always uses cross-entropy (see `gfa_keras.training.perturbations`).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from gfa_keras import evaluate_robustness, harden  # noqa: E402
from gfa_keras.architectures import build_architecture  # noqa: E402
from gfa_keras.atomic_files import write_json  # noqa: E402
from gfa_keras.training.methods import DEFAULT_PENALTY_WEIGHTS, METHODS as REGISTERED  # noqa: E402
from gfa_keras.data import as_tf_dataset, load_dataset  # noqa: E402
from gfa_keras.evaluation.report import RobustnessReport  # noqa: E402

__all__ = ["METHODS", "SETTINGS", "main"]

# Per data set: the threat model, the training perturbation, the eps sweep.
SETTINGS = {
    "fashion_mnist": dict(eps=0.1, train_steps=7, l2_eps=1.5, sweep=(0.02, 0.05, 0.1, 0.15, 0.2, 0.3)),
    "cifar10_jpeg": dict(eps=8 / 255, train_steps=7, l2_eps=0.5, sweep=(2 / 255, 4 / 255, 8 / 255, 12 / 255, 16 / 255)),
}
# method label -> (harden kwargs, loss). "beta" is filled in from the sweep for gfa_deep.
METHODS = {
    "standard": (dict(method="standard"), "mse"),
    "pgd": (dict(method="pgd"), "crossentropy"),
    "trades": (dict(method="trades"), "crossentropy"),
    "gfa_first": (dict(method="gfa", layers=1), "mse"),
    "gfa_deep": (dict(method="gfa", layers=3), "mse"),
    "hybrid": (dict(method="hybrid"), "crossentropy"),
    "datagrad_l2": (dict(method="datagrad", p=2), "crossentropy"),
    "gfa_pgd": (dict(method="gfa_pgd", layers=3), "mse"),
}
VALIDATION_SIZE = 5000
BATCH_SIZE = 128


ARCHITECTURE_NAMES = {"mlp": "mlp", "cnn": "small_cnn"}  # --arch -> gfa_keras.architectures name


def build_base(arch: str, input_shape, num_classes: int, seed: int = 0) -> keras.Model:
    """The paper-style classifiers from `gfa_keras.architectures`, outputting logits."""
    return build_architecture(ARCHITECTURE_NAMES.get(arch, arch), input_shape, num_classes, seed=seed)


def load_splits(dataset: str, train_size: int | None):
    """Train (the first `train_size` of a seeded shuffle), validation (the last 5,000), test (all)."""
    data = load_dataset(dataset)
    x, y = data.train
    order = np.random.default_rng(0).permutation(len(x))
    val, train = order[-VALIDATION_SIZE:], order[:-VALIDATION_SIZE]
    if train_size:
        train = train[:train_size]
    return (x[train], y[train]), (x[val], y[val]), data.test, data.num_classes


def balanced_subset(x, y, size, num_classes):
    """The first `size // num_classes` points of each class, in file order (the CIFAR-10
    JPEG test set is sorted by class, so a plain prefix would hold one class)."""
    keep = np.sort(np.concatenate([np.flatnonzero(y == c)[:size // num_classes] for c in range(num_classes)]))
    return x[keep], y[keep]


def make_model(dataset, arch, method, beta, input_shape, num_classes):
    """Builds and compiles the hardened model for one method."""
    options, loss = METHODS[method]
    options = dict(options)
    if REGISTERED[options["method"]].needs_eps:
        options.update(eps=SETTINGS[dataset]["eps"])
        if options["method"] != "trades":
            options.update(steps=SETTINGS[dataset]["train_steps"])
    if beta is not None and REGISTERED[options["method"]].aligned:
        options["penalty_weight"] = beta
    model = harden(build_base(arch, input_shape, num_classes), **options)
    if loss == "mse":
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", metrics=["categorical_accuracy"])
    else:
        model.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model, options, loss


def targets_for(loss, y, num_classes):
    """One-hot targets for the paper's MSE, integer labels for cross-entropy."""
    return np.eye(num_classes, dtype="float32")[y] if loss == "mse" else y


def run_dir(runs, dataset, arch, method, tag=None) -> Path:
    """`<runs>/<dataset>_<arch>/<method>[_<tag>]`, created if missing."""
    path = Path(runs) / f"{dataset}_{arch}" / (f"{method}_{tag}" if tag else method)
    path.mkdir(parents=True, exist_ok=True)
    return path


def read_json(path: Path, default=None):
    """The parsed file, or `default` when it does not exist."""
    return json.loads(path.read_text()) if path.exists() else default


def gfa_beta(runs, dataset, arch, given):
    """The beta for the GFA models: `given`, else the sweep's choice, else the library default."""
    if given is not None:
        return given
    sweep = read_json(Path(runs) / f"{dataset}_{arch}" / "beta_sweep.json")
    return sweep["chosen_beta"] if sweep and "chosen_beta" in sweep else None


def train(args):
    """Trains one method epoch by epoch, saving after each; resumes from progress.json."""
    directory = run_dir(args.runs, args.dataset, args.arch, args.method, args.tag)
    (x, y), _, _, num_classes = load_splits(args.dataset, args.train_size)
    progress = read_json(directory / "progress.json")
    if progress and progress["epochs_done"] > 0:
        model = keras.models.load_model(directory / "model.keras")
        loss = progress["loss"]
    else:
        beta = gfa_beta(args.runs, args.dataset, args.arch, args.beta)
        model, options, loss = make_model(args.dataset, args.arch, args.method, beta, x.shape[1:], num_classes)
        progress = dict(epochs_done=0, epoch_seconds=[], history=[], loss=loss, harden=options,
                        train_size=len(x), batch_size=BATCH_SIZE, optimizer="Adam(1e-3)",
                        command=" ".join(sys.argv))
    targets = targets_for(loss, y, num_classes)
    for epoch in range(progress["epochs_done"], args.epochs):
        epoch_seed = 1000 + epoch  # the same random starts and shuffles whether resumed or not
        keras.utils.set_random_seed(epoch_seed)
        # as_tf_dataset: no wait for tf.data's autotuner when fit returns (up to a minute an
        # epoch with arrays; its docstring).
        batches = as_tf_dataset(x, targets, BATCH_SIZE, shuffle=True, seed=epoch_seed)
        start = time.perf_counter()
        history = model.fit(batches, epochs=1, shuffle=False, verbose=2)
        progress["epoch_seconds"].append(time.perf_counter() - start)
        progress["history"].append({k: float(v[-1]) for k, v in history.history.items()})
        progress["epochs_done"] = epoch + 1
        model.save(directory / "model.keras")
        write_json(directory / "progress.json", progress)
        print(f"[{args.method}] epoch {epoch + 1}/{args.epochs}: {progress['epoch_seconds'][-1]:.1f}s "
              f"{progress['history'][-1]}", flush=True)


def time_epochs(args):
    """Wall time of one epoch of every method on `train_size` points (for planning the budget)."""
    (x, y), _, _, num_classes = load_splits(args.dataset, args.train_size)
    for method in args.methods:
        model, _, loss = make_model(args.dataset, args.arch, method, None, x.shape[1:], num_classes)
        targets = targets_for(loss, y, num_classes)
        model.fit(x[:BATCH_SIZE * 2], targets[:BATCH_SIZE * 2], batch_size=BATCH_SIZE, verbose=0)  # trace
        start = time.perf_counter()
        model.fit(x, targets, batch_size=BATCH_SIZE, epochs=1, verbose=0)
        print(f"{method:<12} {time.perf_counter() - start:7.1f} s / epoch of {len(x)}", flush=True)


def sweep(args):
    """Short beta sweep for GFA DEEP on the validation split: PGD-10 accuracy at the data set's eps."""
    (x, y), (xv, yv), _, num_classes = load_splits(args.dataset, args.train_size)
    xv, yv = xv[:args.val_size], yv[:args.val_size]
    path = Path(args.runs) / f"{args.dataset}_{args.arch}" / "beta_sweep.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    results = read_json(path, {"results": {}})
    results["command"] = " ".join(sys.argv)  # the latest run, whose betas include the earlier ones
    eps = SETTINGS[args.dataset]["eps"]
    for beta in args.betas:
        if str(beta) in results["results"]:
            continue
        model, _, loss = make_model(args.dataset, args.arch, "gfa_deep", beta, x.shape[1:], num_classes)
        keras.utils.set_random_seed(1000)
        history = model.fit(x, targets_for(loss, y, num_classes), batch_size=BATCH_SIZE, epochs=args.epochs,
                            verbose=2)
        report = evaluate_robustness(model, (xv, yv), ["pgd"],
                                     eps=[eps], steps=10, checks=False, verbose=0)
        results["results"][str(beta)] = dict(
            clean=report.clean_accuracy, pgd10=report.worst_case_accuracy[0],
            alignments=[float(v[-1]) for k, v in history.history.items() if k.startswith("alignment_")])
        write_json(path, results)
        print(f"beta {beta}: {results['results'][str(beta)]}", flush=True)
    # The choice: the best validation PGD-10 accuracy among the betas whose clean
    # accuracy is within max_clean_drop of the sweep's best (ties: higher clean).
    best_clean = max(r["clean"] for r in results["results"].values())
    eligible = {b: r for b, r in results["results"].items() if r["clean"] >= best_clean - args.max_clean_drop}
    best = max(eligible.items(), key=lambda kv: (kv[1]["pgd10"], kv[1]["clean"]))
    results.update(chosen_beta=float(best[0]), val_points=len(xv), epochs=args.epochs, train_size=len(x),
                   rule=f"max validation PGD-10 accuracy among betas with clean accuracy >= best - "
                        f"{args.max_clean_drop}")
    write_json(path, results)
    print(f"chosen beta: {best[0]}")


def evaluate(args):
    """Clean, FGSM, PGD-20, AutoAttack worst case with DeepFool/EAD, and an APGD-CE eps sweep."""
    directory = run_dir(args.runs, args.dataset, args.arch, args.method, args.tag)
    _, _, (x, y), num_classes = load_splits(args.dataset, None)

    def subset(size):
        if not size:
            return (x, y), f"all {len(x)} test points"
        return balanced_subset(x, y, size, num_classes), \
            f"{size} test points: the first {size // num_classes} of each class, in file order"

    full, full_text = subset(args.test_size)
    # AutoAttack, the minimum-norm attacks and the eps sweep may use a smaller subset (compute).
    small, small_text = subset(args.aa_test_size or args.test_size)
    model = keras.models.load_model(directory / "model.keras")
    eps = SETTINGS[args.dataset]["eps"]
    common = dict(batch_size=args.batch_size, verbose=1)
    stages = {
        "fgsm": dict(attacks=["fgsm"], eps=[eps], checks=False),
        "pgd20": dict(attacks=["pgd"], eps=[eps], steps=20, checks=False),
        "autoattack": dict(attacks="autoattack", eps=[eps], checks=True,
                           steps={"apgd_ce": args.apgd_steps, "apgd_t": args.apgd_steps,
                                  "fab_t": args.fab_steps, "square": args.square_queries}),
        # EAD is registered for L2, so the minimum-norm attacks run in an L2 call (with APGD-CE at l2_eps).
        "minnorm": dict(attacks=["apgd_ce"], eps=[SETTINGS[args.dataset]["l2_eps"]], norm="l2", checks=False,
                        steps={"apgd_ce": args.apgd_steps, "deepfool": 50, "ead": args.ead_steps},
                        minimum_norm_attacks=("deepfool", "ead")),
        # Several eps: the accuracy-falls-with-eps check has something to compare here.
        "sweep": dict(attacks=["apgd_ce"], eps=list(SETTINGS[args.dataset]["sweep"]), steps=args.apgd_steps,
                      checks=["accuracy_decreases_with_eps", "accuracy_at_large_eps", "zero_gradients"]),
    }
    for name in args.stages:
        out = directory / f"eval_{name}.json"
        if out.exists():
            continue
        start = time.perf_counter()
        data, points = (full, full_text) if name in ("fgsm", "pgd20") else (small, small_text)
        report = evaluate_robustness(model, data, **stages[name], **common,
                                     state_path=directory / f"eval_{name}.state.json")
        report.settings["wall_seconds"] = time.perf_counter() - start
        report.settings["command"] = " ".join(sys.argv)
        report.settings["points"] = points
        report.to_json(out)
        print(f"[{args.method}] {name}: {report.summary()} ({report.settings['wall_seconds']:.0f}s)", flush=True)


def _fmt(value, digits=3):
    """A table cell: the value with `digits` decimals, "-" for a missing one."""
    return "-" if value is None else f"{value:.{digits}f}"


def table(args):
    """Prints the markdown table of every finished run and writes the plots."""
    root = Path(args.runs) / f"{args.dataset}_{args.arch}"
    rows, reports = [], {}
    head = ("| method | loss | weight | train alignment | epochs | s/epoch | clean | FGSM | PGD-20 | "
            "clean (AA points) | APGD-CE | AA worst case | APGD-CE L2 | DeepFool median L2 (all / correct) | "
            "EAD median L2 (all / correct) | masking flags fired | AA budget |")
    rows.append(head)
    rows.append("|" + "---|" * (head.count("|") - 1))
    names = sorted((d.name for d in root.iterdir() if (d / "progress.json").exists()),
                   key=lambda n: (next((i for i, m in enumerate(METHODS) if n.startswith(m)), 99), n))
    for method in names:
        directory = root / method
        progress = read_json(directory / "progress.json")
        if not progress:
            continue
        ev = {n: RobustnessReport.from_json(directory / f"eval_{n}.json")
              for n in ("fgsm", "pgd20", "autoattack", "minnorm", "sweep") if (directory / f"eval_{n}.json").exists()}
        reports[method] = ev
        aa = ev.get("autoattack")
        fired = [f"{f['check']} ({f['status']})" for f in aa.flags if f["status"] != "ok"] if aa else []
        mn = ev["minnorm"].minimum_norm if "minnorm" in ev else {}
        last = progress["history"][-1]
        alignment = " / ".join(f"{v:.2f}" for k, v in last.items() if k.startswith("alignment_")) or "-"
        weight = progress["harden"].get("penalty_weight")
        if weight is None and progress["harden"]["method"] in DEFAULT_PENALTY_WEIGHTS \
                and not REGISTERED[progress["harden"]["method"]].aligned:
            weight = DEFAULT_PENALTY_WEIGHTS[progress["harden"]["method"]]
        rows.append("| " + " | ".join([
            method, progress["loss"], "-" if weight is None else f"{weight:g}", alignment,
            str(progress["epochs_done"]), f"{np.median(progress['epoch_seconds']):.0f}",
            _fmt(ev["fgsm"].clean_accuracy if "fgsm" in ev else None),
            _fmt(ev["fgsm"].worst_case_accuracy[0] if "fgsm" in ev else None),
            _fmt(ev["pgd20"].worst_case_accuracy[0] if "pgd20" in ev else None),
            _fmt(aa.clean_accuracy if aa else None),
            _fmt(aa.robust_accuracy["apgd_ce"][0] if aa else None),
            _fmt(aa.worst_case_accuracy[0] if aa else None),
            _fmt(ev["minnorm"].worst_case_accuracy[0] if "minnorm" in ev else None),
            *(f"{_fmt(mn[a]['median'])} / {_fmt(median_over_correct(mn[a]))}" if a in mn else "-"
              for a in ("deepfool", "ead")),
            (", ".join(fired) or "none") if aa else "-",
            aa.budget_summary() if aa else "-",
        ]) + " |")
    print("\n".join(rows))
    print()
    sweep_rows = [(m, ev["sweep"]) for m, ev in reports.items() if "sweep" in ev]
    if sweep_rows:
        eps_list = sweep_rows[0][1].eps
        print("| method | " + " | ".join(f"{e * 255:.0f}/255" if args.dataset.startswith("cifar") else f"{e:.3g}"
                                         for e in eps_list) + " |")
        print("|---|" + "---|" * len(eps_list))
        for method, report in sweep_rows:
            print(f"| {method} | " + " | ".join(_fmt(a) for a in report.worst_case_accuracy) + " |")
    cascades = [(m, ev["autoattack"]) for m, ev in reports.items() if "autoattack" in ev]
    if cascades:
        budgets = sorted({report.budget_summary() for _, report in cascades})
        print(f"\nAutoAttack's attacks, {' / '.join(budgets)}: accuracy after each attack (cumulative, "
              "per-example worst case):\n")
        print("| method | clean | " + " | ".join(f"+ {a}" for a in cascades[0][1].attacks) + " |")
        print("|---|---|" + "---|" * len(cascades[0][1].attacks))
        for method, report in cascades:
            print(f"| {method} | {report.clean_accuracy:.3f} | "
                  + " | ".join(_fmt(report.robust_accuracy[a][0]) for a in report.attacks) + " |")
    beta_sweep = read_json(root / "beta_sweep.json")
    if beta_sweep:
        print(f"\nGFA DEEP beta sweep ({beta_sweep['train_size']} training points, {beta_sweep['epochs']} epochs, "
              f"{beta_sweep['val_points']} validation points; chosen {beta_sweep.get('chosen_beta')}: "
              f"{beta_sweep.get('rule')}):\n")
        print("| beta | val clean | val PGD-10 | train alignment per layer |\n|---|---|---|---|")
        for beta, r in beta_sweep["results"].items():
            print(f"| {beta} | {r['clean']:.3f} | {r['pgd10']:.3f} | "
                  + " / ".join(f"{a:.2f}" for a in r["alignments"]) + " |")
    if args.figures:  # the eight methods only: the variants would make the charts unreadable
        plot({m: ev for m, ev in reports.items() if m in METHODS}, args.figures, f"{args.dataset}_{args.arch}")


def plot(reports, directory, prefix):
    """Robust accuracy vs eps (the APGD-CE sweep) and minimum-norm ECDFs, with `gfa_keras.reports.plots`."""
    from gfa_keras.reports.plots import plot_minimum_norms, plot_robust_accuracy

    Path(directory).mkdir(parents=True, exist_ok=True)
    sweeps = {m: ev["sweep"] for m, ev in reports.items() if "sweep" in ev}
    if sweeps:
        plot_robust_accuracy(sweeps, Path(directory) / f"{prefix}_accuracy_vs_eps.png")
    norms = {m: ev["minnorm"] for m, ev in reports.items() if "minnorm" in ev}
    if norms:
        plot_minimum_norms(norms, Path(directory) / f"{prefix}_minimum_norms.png")


def median_over_correct(stats):
    """Median norm over the clean-correct points (a failed attack counts as infinite)."""
    norms = np.array([np.inf if v is None else v for v in stats["norms"]], dtype=float)
    return float(np.median(norms[norms > 0])) if np.any(norms > 0) else None


def main(argv=None):
    """Parses the command line and runs one sub-command (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("time", "sweep", "train", "evaluate", "table"):
        p = sub.add_parser(name)
        p.add_argument("--dataset", choices=list(SETTINGS), default="fashion_mnist")
        p.add_argument("--arch", choices=("mlp", "cnn"), default="mlp")
        p.add_argument("--runs", default="runs")
    p = sub.choices["time"]
    p.add_argument("--train-size", type=int, default=6000)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p = sub.choices["sweep"]
    p.add_argument("--train-size", type=int, default=10000)
    p.add_argument("--val-size", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--betas", type=float, nargs="+", default=[0.003, 0.01, 0.03, 0.1, 0.3, 1.0])
    p.add_argument("--max-clean-drop", type=float, default=0.1,
                   help="betas whose validation clean accuracy falls more than this below the best are excluded")
    p = sub.choices["train"]
    p.add_argument("--method", choices=list(METHODS), required=True)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--train-size", type=int, default=None, help="default: all but the 5,000 validation points")
    p.add_argument("--beta", type=float, default=None, help="GFA beta; default: the sweep's choice")
    p.add_argument("--tag", default=None, help="a variant's suffix for the run directory, e.g. beta0.3")
    p = sub.choices["evaluate"]
    p.add_argument("--method", choices=list(METHODS), required=True)
    p.add_argument("--tag", default=None)
    p.add_argument("--test-size", type=int, default=None,
                   help="N points, class-balanced: the first N // classes of each class; default all")
    p.add_argument("--aa-test-size", type=int, default=None,
                   help="a smaller class-balanced subset for autoattack, minnorm and sweep; default --test-size")
    p.add_argument("--stages", nargs="+", default=["fgsm", "pgd20", "autoattack", "minnorm", "sweep"])
    p.add_argument("--apgd-steps", type=int, default=100)
    p.add_argument("--fab-steps", type=int, default=100)
    p.add_argument("--square-queries", type=int, default=5000)
    p.add_argument("--ead-steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=500)
    sub.choices["table"].add_argument("--figures", default=None, help="directory for the PNG plots")
    args = parser.parse_args(argv)
    {"time": time_epochs, "sweep": sweep, "train": train, "evaluate": evaluate, "table": table}[args.command](args)


if __name__ == "__main__":
    main()
