"""Median train-step time of every training method, as ratios to a plain step.

All models are the same small CNN (conv-pool-conv-pool-dense-dense) on 32x32x3
inputs, batch 128; the steps are timed interleaved (one step of each method per
round) in one process, so machine noise hits all methods alike. Compare the ratios,
not the absolute times.

    python benchmarks/step_cost.py              # all methods, 30 rounds
    python benchmarks/step_cost.py --rounds 10 --methods standard gfa1 gfa3 pgd7
    python benchmarks/step_cost.py --jit        # also each method with jit_compile=True (XLA)
    python benchmarks/step_cost.py --methods pgd7 fgsm_rs n_fgsm n_fgsm_gradalign n_fgsm_gfa3  # single-step

Targets (issue 2): GFA(3) <= 2.5x plain, GFA(3) <= 1.15x GFA(1).

`--arch` measures real networks instead (issue 14): the built-in CIFAR ResNet-18,
keras.applications ResNet50V2 and MobileNetV3Small (weights=None, 32x32x3 inputs,
nothing downloaded), batch 32 by default. Each method runs in a fresh process (one
after the other, not interleaved: one trace of a ResNet's nested tapes takes minutes),
which reports the first step (tracing included) in seconds and as a ratio to the plain
first step, the median of the next `--rounds` steps as a ratio to the plain median, and
the process's peak resident memory.

    python benchmarks/step_cost.py --arch resnet50v2 mobilenet_v3_small --rounds 5
    python benchmarks/step_cost.py --arch resnet18 --methods standard gfa1 gfa3 pgd7

On a shared machine, processes run minutes apart see different loads. `--interleaved`
then also builds all the methods in one process and times them interleaved (one step
of each per round, as for the small CNN), reporting the median ratios by wall-clock
time and by the process's CPU time, which other jobs' load disturbs less.

    python benchmarks/step_cost.py --arch resnet18 --methods standard gfa1 gfa3 --interleaved --rounds 12

Targets (issue 14): GFA(3) <= 2.5x plain and <= 1.15x GFA(1) on the ResNet too; the
first GFA step no more than 3x the first plain step.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from gfa_keras import harden  # noqa: E402
from gfa_keras.architectures import build_architecture  # noqa: E402

EPS = 8 / 255
METHODS = {
    "standard": dict(method="standard"),
    "gfa1": dict(method="gfa", layers=1),
    "gfa3": dict(method="gfa", layers=3),
    "pgd7": dict(method="pgd", eps=EPS, steps=7),
    "trades10": dict(method="trades", eps=EPS, steps=10),
    "datagrad_l2": dict(method="datagrad", p=2),
    "hybrid": dict(method="hybrid", eps=EPS, steps=7),
    "gfa3_pgd7": dict(method="gfa_pgd", layers=3, eps=EPS, steps=7),
    "pgd7_awp": dict(method="pgd", eps=EPS, steps=7, awp_gamma=5e-3),
    "pgd7_ema": dict(method="pgd", eps=EPS, steps=7, ema_momentum=0.999),
    "recommended": dict(method="recommended", eps=EPS),
    "fgsm_rs": dict(method="fgsm_rs", eps=EPS),
    "n_fgsm": dict(method="n_fgsm", eps=EPS),
    "n_fgsm_gradalign": dict(method="n_fgsm_gradalign", eps=EPS),
    "n_fgsm_gfa3": dict(method="n_fgsm_gfa", layers=3, eps=EPS),
}


ARCH_METHODS = ["standard", "gfa1", "gfa3", "pgd7", "trades10", "gfa3_pgd7", "recommended"]


def _application(name):
    def make():
        return getattr(keras.applications, name)(input_shape=(32, 32, 3), weights=None, classes=10,
                                                 classifier_activation=None)
    return make


ARCHS = {
    "small_cnn": lambda: build_architecture("small_cnn", (32, 32, 3), 10, seed=0),
    "resnet18": lambda: build_architecture("resnet18", (32, 32, 3), 10, seed=0),
    "resnet50v2": _application("ResNet50V2"),
    "mobilenet_v3_small": _application("MobileNetV3Small"),
}


def build(options, jit, arch="small_cnn"):
    keras.utils.set_random_seed(0)
    model = harden(ARCHS[arch](), **options)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit)
    return model


def batch(size):
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(size, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=size).astype("int32")
    return x, y


def _peak_rss_mb():
    # The process's own high-water mark. Not getrusage's ru_maxrss: Linux carries that over
    # fork and exec, so a worker would report its parent's peak when that was larger
    # (after --interleaved had run, every worker reported the same 2102 MB).
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux, bytes on macOS


def first_step_worker(arch, method, batch_size, rounds):
    """Runs in a fresh process: build, the first step (tracing included), then `rounds` steps."""
    x, y = batch(batch_size)
    model = build(METHODS[method], False, arch)
    start = time.perf_counter()
    model.train_on_batch(x, y)
    first = time.perf_counter() - start
    steps = []
    for _ in range(rounds):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        steps.append(time.perf_counter() - start)
    print(json.dumps({"first_s": first, "median_s": statistics.median(steps), "peak_mb": _peak_rss_mb()}))


def run_workers(arch, methods, batch_size, rounds):
    results = {}
    for method in methods:
        output = subprocess.run(
            [sys.executable, __file__, "--first-step-worker", arch, method, "--batch-size", str(batch_size),
             "--rounds", str(rounds)],
            check=True, capture_output=True, text=True).stdout
        results[method] = json.loads(output.strip().splitlines()[-1])
        r = results[method]
        print(f"  {arch} {method}: first step {r['first_s']:.1f} s, median step {r['median_s']:.2f} s, "
              f"peak {r['peak_mb']:.0f} MB", flush=True)
    return results


def interleaved(models, x, y, rounds, cpu_medians=None):
    """Median wall-clock step time per model, one step of each per round; the median CPU
    times of the process go into `cpu_medians` when given."""
    for model in models.values():  # trace and warm up outside the timing
        model.train_on_batch(x, y)
        model.train_on_batch(x, y)
    times = {v: [] for v in models}
    cpu = {v: [] for v in models}
    for _ in range(rounds):
        for v, model in models.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            model.train_on_batch(x, y)
            times[v].append(time.perf_counter() - start)
            cpu[v].append(time.process_time() - start_cpu)
    if cpu_medians is not None:
        cpu_medians.update({v: statistics.median(t) for v, t in cpu.items()})
    return {v: statistics.median(t) for v, t in times.items()}


def arch_interleaved_report(arch, methods, rounds, batch_size):
    x, y = batch(batch_size)
    cpu = {}
    wall = interleaved({m: build(METHODS[m], False, arch) for m in methods}, x, y, rounds, cpu)
    print(f"\n{arch}, batch {batch_size}, {rounds} interleaved rounds in one process, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'method':<13}{'wall s':>8}{'x plain':>9}{'CPU s':>8}{'x plain':>9}")
    for m in methods:
        print(f"{m:<13}{wall[m]:>8.2f}{wall[m] / wall['standard']:>9.2f}{cpu[m]:>8.2f}"
              f"{cpu[m] / cpu['standard']:>9.2f}")
    if "gfa3" in wall and "gfa1" in wall:
        print(f"GFA(3) / GFA(1): {wall['gfa3'] / wall['gfa1']:.2f} wall, {cpu['gfa3'] / cpu['gfa1']:.2f} CPU "
              "(target <= 1.15)", flush=True)


def arch_report(arch, methods, rounds, batch_size):
    print(f"{arch}: one fresh process per method", flush=True)
    runs = run_workers(arch, methods, batch_size, rounds)
    plain, plain_first = runs["standard"]["median_s"], runs["standard"]["first_s"]
    print(f"\n{arch}, batch {batch_size}, median of {rounds} steps after the first, keras {keras.__version__}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"{'method':<13}{'x plain':>9}{'first step s':>14}{'first x plain':>15}{'peak MB':>9}")
    for m in methods:
        r = runs[m]
        print(f"{m:<13}{r['median_s'] / plain:>9.2f}{r['first_s']:>14.1f}{r['first_s'] / plain_first:>15.2f}"
              f"{r['peak_mb']:>9.0f}")
    if "gfa3" in runs and "gfa1" in runs:
        print(f"GFA(3) / GFA(1): {runs['gfa3']['median_s'] / runs['gfa1']['median_s']:.2f} (target <= 1.15)")
        print(f"GFA(3) / plain:  {runs['gfa3']['median_s'] / plain:.2f} (target <= 2.5)")
        print(f"first GFA(3) step / first plain step: {runs['gfa3']['first_s'] / plain_first:.2f} "
              "(target <= 3)", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, help="default 30 (5 with --arch)")
    parser.add_argument("--batch-size", type=int, help="default 128 (32 with --arch)")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS),
                        help=f"default all (with --arch: {' '.join(ARCH_METHODS)})")
    parser.add_argument("--jit", action="store_true", help="also time each method with jit_compile=True")
    parser.add_argument("--arch", nargs="+", choices=list(ARCHS),
                        help="real networks: per method the step ratio, the first step and peak memory")
    parser.add_argument("--interleaved", action="store_true",
                        help="with --arch: also time the methods interleaved in one process (wall and CPU time)")
    parser.add_argument("--first-step-worker", nargs=2, metavar=("ARCH", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.first_step_worker:
        first_step_worker(*args.first_step_worker, args.batch_size or 32, args.rounds or 5)
        return
    if args.arch:
        methods = args.methods or ARCH_METHODS
        methods = ["standard"] + [m for m in methods if m != "standard"]
        for arch in args.arch:
            arch_report(arch, methods, args.rounds or 5, args.batch_size or 32)
            if args.interleaved:
                arch_interleaved_report(arch, methods, args.rounds or 5, args.batch_size or 32)
        return
    if args.interleaved:
        parser.error("--interleaved goes with --arch (the small CNN's methods are always interleaved). "
                     "Received: --interleaved without --arch")
    args.methods = args.methods or list(METHODS)
    args.rounds = args.rounds or 30
    args.batch_size = args.batch_size or 128
    if "standard" not in args.methods:
        args.methods.insert(0, "standard")

    x, y = batch(args.batch_size)
    variants = [(m, False) for m in args.methods] + ([(m, True) for m in args.methods] if args.jit else [])
    med = interleaved({v: build(METHODS[v[0]], v[1]) for v in variants}, x, y, args.rounds)
    plain = med[("standard", False)]
    print(f"keras {keras.__version__}, batch {args.batch_size}, {args.rounds} interleaved rounds, "
          f"{os.cpu_count()} CPUs")
    width = max(len(m) for m in args.methods) + 2
    print(f"{'method':<{width}}{'jit':<6}{'median ms':>10}{'x plain':>10}{'jit/graph':>11}")
    for (method, jit), median in med.items():
        versus_graph = f"{median / med[(method, False)]:>11.2f}" if jit else ""
        print(f"{method:<{width}}{str(jit):<6}{1000 * median:>10.1f}{median / plain:>10.2f}{versus_graph}")
    if ("gfa3", False) in med and ("gfa1", False) in med:
        print(f"GFA(3) / GFA(1): {med[('gfa3', False)] / med[('gfa1', False)]:.2f} (target <= 1.15)")
        print(f"GFA(3) / plain:  {med[('gfa3', False)] / plain:.2f} (target <= 2.5)")


if __name__ == "__main__":
    main()
