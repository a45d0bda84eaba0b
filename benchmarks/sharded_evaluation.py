"""Evaluation that scales out, measured: one process, two shard processes and their merge, and what the
fixed blocks cost.

    python benchmarks/sharded_evaluation.py --out /work/runs/sharded_eval [--points 1000] [--old-tree DIR]

1. Trains (once, cached in `--out`) the paper's Fashion-MNIST MLP (`mlp`) for 2 epochs on the first
   10,000 training images, seed 0.
2. Runs `gfa-keras evaluate` on the first `--points` test images (APGD-CE then APGD-T, 20 steps, Linf
   eps 0.02 and 0.05, blocks of `--batch` points, every check): once in one process, then as
   `--shard 0/2` and `--shard 1/2` in two concurrent processes followed by `gfa-keras merge`. Prints the
   wall times and whether the merged report equals the single one (everything but the date).
3. Counts the attack calls: per eps and attack, the blocks that still hold points to attack (the block
   design) against `ceil(points left / batch)` (regrouping the survivors of the whole set into full
   batches, as the evaluation did before the blocks).
4. With `--old-tree DIR` (the package before the blocks, e.g.
   `mkdir /tmp/old && git archive 9572c77 gfa_keras | tar -x -C /tmp/old`), times the same single-process
   evaluation with that code, the price of the blocks in wall time.

Writes `summary.json` in `--out`. The Fashion-MNIST IDX files must be in `--data`.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def command(*args, pythonpath=REPO):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(pythonpath))
    return subprocess.Popen([sys.executable, "-m", "gfa_keras", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait(*processes):
    for p in processes:
        out, err = p.communicate()
        if p.returncode:
            raise SystemExit(f"command failed ({p.returncode}): {p.args}\n{err[-3000:]}")


def timed(*processes):
    start = time.perf_counter()
    wait(*processes)
    return time.perf_counter() - start


def train_model(out, data_dir):
    path = out / "mlp.keras"
    if path.exists():
        return path
    import keras

    from gfa_keras.architectures import build_architecture
    from gfa_keras.data import load_dataset

    keras.utils.set_random_seed(0)
    data = load_dataset("fashion_mnist", data_dir=data_dir)
    model = build_architecture("mlp", data.input_shape, data.num_classes, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(data.x_train[:10000], data.y_train[:10000], epochs=2, batch_size=128, verbose=0)
    model.save(path)
    return path


def robustness(directory):
    report = json.loads((directory / "report.json").read_text())["models"]["mlp"]["robustness"]
    report["settings"].pop("date")
    return report


def call_counts(report, batch):
    """Attack calls per (eps, attack): blocks with points left, and full batches of the survivors."""
    rows = []
    for i, eps in enumerate(report["eps"]):
        row = report["broken_by"][i]
        for position, attack in enumerate(report["attacks"]):
            earlier = {"clean", *report["attacks"][:position]}
            left = [by not in earlier for by in row]
            blocks = sum(any(left[s:s + batch]) for s in range(0, len(row), batch))
            rows.append({"eps": eps, "attack": attack, "points": sum(left), "block_calls": blocks,
                         "regrouped_calls": math.ceil(sum(left) / batch)})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--points", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--old-tree", type=Path, help="a checkout of gfa_keras before the blocks, timed too")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model = train_model(args.out, args.data)
    flags = ["--dataset", "fashion_mnist", "--data", args.data, "--test-limit", args.points, "--attacks",
             "apgd_ce,apgd_t", "--attack-steps", 20, "--eps", 0.02, 0.05, "--eval-batch-size", args.batch,
             "--landscape-points", 0, "--verbose", 0]
    summary = {"points": args.points, "batch": args.batch, "flags": list(map(str, flags))}
    single, shards, merged = args.out / "single", args.out / "shards", args.out / "merged"
    summary["single_seconds"] = timed(command("evaluate", model, *flags, "--out", single))
    summary["two_shard_processes_seconds"] = timed(*[command("evaluate", model, *flags, "--shard", f"{i}/2",
                                                             "--out", shards) for i in range(2)])
    summary["merge_seconds"] = timed(command("merge", *sorted(shards.glob("mlp.shard-*-of-2.json")),
                                             "--out", merged))
    summary["merged_equals_single"] = robustness(merged) == robustness(single)
    report = robustness(single)
    summary["clean_accuracy"] = report["clean_accuracy"]
    summary["worst_case_accuracy"] = report["worst_case_accuracy"]
    summary["calls"] = call_counts(report, args.batch)
    if args.old_tree:
        summary["old_single_seconds"] = timed(command("evaluate", model, *flags, "--out", args.out / "old",
                                                      pythonpath=args.old_tree))
        old = robustness(args.out / "old")
        summary["old_worst_case_accuracy"] = old["worst_case_accuracy"]
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
