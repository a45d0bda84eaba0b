"""Evaluation that scales out, measured: one process, two shard processes and their merge, and what the
fixed blocks cost.

    python benchmarks/sharded_evaluation.py --out runs/sharded_eval [--points 1000] [--old-tree DIR]

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
   `mkdir /tmp/old && git archive 9572c77 gfa_keras | tar -x -C /tmp/old`), times the same evaluation
   in-process (`evaluate_robustness`, after loading, tracing included) with that code and with this one,
   alternately `--repeats` times each: the price of the blocks in wall and CPU time. `--ab-only` skips
   steps 2 and 3.

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


AB_SNIPPET = '''
import os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import json, keras
from gfa_keras.data import load_dataset
from gfa_keras.evaluation.cascade import evaluate_robustness
data = load_dataset("fashion_mnist", data_dir=sys.argv[2])
x, y = data.x_test[:int(sys.argv[3])], data.y_test[:int(sys.argv[3])]
model = keras.saving.load_model(sys.argv[1])
wall, cpu = time.perf_counter(), time.process_time()
report = evaluate_robustness(model, (x, y), ["apgd_ce", "apgd_t"], eps=[0.02, 0.05], steps=20,
                             batch_size=int(sys.argv[4]), verbose=0)
print(json.dumps({"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu,
                  "worst_case_accuracy": report.worst_case_accuracy}))
'''


def in_process_timing(tree, model, args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(tree))
    out = subprocess.run([sys.executable, "-c", AB_SNIPPET, str(model), args.data, str(args.points), str(args.batch)],
                         env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


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
    parser.add_argument("--repeats", type=int, default=2, help="in-process timings of each tree (default: 2)")
    parser.add_argument("--ab-only", action="store_true", help="only the in-process timings of step 4")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model = train_model(args.out, args.data)
    flags = ["--dataset", "fashion_mnist", "--data", args.data, "--test-limit", args.points, "--attacks",
             "apgd_ce,apgd_t", "--attack-steps", 20, "--eps", 0.02, 0.05, "--eval-batch-size", args.batch,
             "--landscape-points", 0, "--verbose", 0]
    summary = {"points": args.points, "batch": args.batch, "flags": list(map(str, flags))}
    if args.old_tree:
        runs = []
        for _ in range(args.repeats):
            runs += [{"tree": "old", **in_process_timing(args.old_tree, model, args)},
                     {"tree": "blocks", **in_process_timing(REPO, model, args)}]
        summary["in_process"] = runs
    if args.ab_only:
        print(json.dumps(summary, indent=1))
        return
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
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
