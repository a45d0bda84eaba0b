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
"""
from __future__ import annotations

import argparse
import os
import statistics
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


def build(options, jit):
    model = harden(build_architecture("small_cnn", (32, 32, 3), 10, seed=0), **options)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit)
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--jit", action="store_true", help="also time each method with jit_compile=True")
    args = parser.parse_args()
    if "standard" not in args.methods:
        args.methods.insert(0, "standard")

    rng = np.random.default_rng(0)
    x = rng.uniform(size=(args.batch_size, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=args.batch_size).astype("int32")

    variants = [(m, False) for m in args.methods] + ([(m, True) for m in args.methods] if args.jit else [])
    models = {v: build(METHODS[v[0]], v[1]) for v in variants}
    for model in models.values():  # trace and warm up outside the timing
        model.train_on_batch(x, y)
        model.train_on_batch(x, y)

    times = {v: [] for v in variants}
    for _ in range(args.rounds):
        for v, model in models.items():
            start = time.perf_counter()
            model.train_on_batch(x, y)
            times[v].append(time.perf_counter() - start)

    plain = statistics.median(times[("standard", False)])
    print(f"keras {keras.__version__}, batch {args.batch_size}, {args.rounds} interleaved rounds, "
          f"{os.cpu_count()} CPUs")
    med = {v: statistics.median(t) for v, t in times.items()}
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
