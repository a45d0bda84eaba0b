"""How long `model.fit(..., epochs=1)` takes to return after its epoch ends, by input pipeline.

Training one epoch per `fit` call (to save, evaluate or resume between epochs, as
benchmarks/recipes.py does) paid a hidden cost on TF 2.21 / Keras 3: with NumPy arrays,
the tf.data iterator Keras builds is destroyed when `fit` returns, and its destructor
waits for tf.data's autotuner thread, which sleeps on a schedule doubling from 10 ms to
60 s; so a call could return up to a minute after its last step (py-spy: the main thread
in `~IteratorResource` -> `~LogicalThreadWrapper`). `gfa_keras.data.as_tf_dataset`
builds its pipeline with the autotuner off.

Each round makes one `fit` call with the arrays and one with `as_tf_dataset`, interleaved
in one process, and times: the epoch (`on_train_begin` to `on_epoch_end`), the return
(`on_train_end` to the call's return) and the whole call. Compare the ratios, not the
absolute times; whether a call stalls depends on where its epoch ends in the
autotuner's schedule, so look at the medians and the worst calls.

    python benchmarks/fit_return_stall.py                 # PGD-7 training of the small CNN, 30 batches
    python benchmarks/fit_return_stall.py --batches 60 --rounds 8 --method standard
"""
from __future__ import annotations

import argparse
import time

import keras
import numpy as np

import gfa_keras
from gfa_keras.architectures import build_architecture
from gfa_keras.data import as_tf_dataset

BATCH_SIZE = 128


class _CallClock(keras.callbacks.Callback):
    """Times one `fit` call's epoch and the seconds from `on_train_end` to the call's return."""

    def on_train_begin(self, logs=None):
        self.begin = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_end = time.perf_counter()

    def on_train_end(self, logs=None):
        self.train_end = time.perf_counter()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="pgd", help="a harden() method, or 'standard' for no defense")
    parser.add_argument("--batches", type=int, default=30, help="batches of 128 per epoch")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    x = rng.random((args.batches * BATCH_SIZE, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, len(x)).astype(np.int32)
    base = build_architecture("small_cnn", x.shape[1:], 10, seed=0)
    model = base if args.method == "standard" else gfa_keras.harden(base, method=args.method, eps=0.1)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:BATCH_SIZE], y[:BATCH_SIZE], epochs=1, verbose=0)  # tracing, outside the timings

    pipelines = {
        "arrays": lambda epoch: dict(x=x, y=y, batch_size=BATCH_SIZE),
        # shuffle=False: the dataset shuffles itself (Keras would warn that it ignores shuffle=True).
        "as_tf_dataset": lambda epoch: dict(x=as_tf_dataset(x, y, BATCH_SIZE, shuffle=True, seed=epoch),
                                            shuffle=False),
    }
    times = {name: dict(epoch=[], stall=[], call=[]) for name in pipelines}
    for round_ in range(args.rounds):
        for name, fit_inputs in pipelines.items():
            clock = _CallClock()
            start = time.perf_counter()
            model.fit(**fit_inputs(round_), epochs=1, verbose=0, callbacks=[clock])
            end = time.perf_counter()
            times[name]["epoch"].append(clock.epoch_end - clock.begin)
            times[name]["stall"].append(end - clock.train_end)
            times[name]["call"].append(end - start)
        print(f"round {round_ + 1}/{args.rounds}: " + "; ".join(
            f"{name} call {t['call'][-1]:.1f}s (stall {t['stall'][-1]:.1f}s)" for name, t in times.items()),
            flush=True)

    print(f"\n{args.method}, {args.batches} batches of {BATCH_SIZE}, {args.rounds} interleaved rounds")
    print("| pipeline | epoch, median s | return after on_train_end: median / max s | calls that stalled > 0.5 s | "
          "whole call, median s |")
    print("|---|---|---|---|---|")
    for name, t in times.items():
        stalled = sum(s > 0.5 for s in t["stall"])
        print(f"| {name} | {np.median(t['epoch']):.3f} | {np.median(t['stall']):.2f} / {max(t['stall']):.2f} | "
              f"{stalled} of {len(t['stall'])} | {np.median(t['call']):.2f} |")
    arrays, ours = times["arrays"], times["as_tf_dataset"]
    print(f"\nas_tf_dataset / arrays: epoch {np.median(ours['epoch']) / np.median(arrays['epoch']):.2f}x, "
          f"whole call {np.median(ours['call']) / np.median(arrays['call']):.2f}x (medians); "
          f"total seconds {sum(ours['call']) / sum(arrays['call']):.2f}x")


if __name__ == "__main__":
    main()
