"""
Title: Comparing the defenses on one model
Description: Train the same MLP with every method `harden` offers (standard, GFA, PGD
    training, TRADES, DataGrad, the hybrid, GFA + PGD) and compare them on one chart
    of worst-case robust accuracy against eps.

What it shows: one `harden(model, method=...)` call per defense with the same
`compile`/`fit`, the training cost of each (seconds per epoch), and the strict
evaluation of all of them into one report directory: the robust accuracy curves of
every model on one chart, per-model tables, gradient-masking flags. The 8x8 digits
ship with scikit-learn; `--dataset fashion_mnist` uses Debian's files. About 5
minutes on 2 CPU cores; `--fast`: 1 epoch each on 300 examples. The
"s/epoch" column is the fastest epoch (the first one also traces the tf.functions).

    python examples/compare_defenses.py [--epochs 10] [--eps 0.1] [--out reports/compare_defenses] [--fast]
"""
# ## Setup
import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

import gfa_keras  # noqa: E402
from gfa_keras.reports import report_directory  # noqa: E402
from gfa_keras.architectures import build_architecture  # noqa: E402
from gfa_keras.data import load_dataset  # noqa: E402


class EpochTimer(keras.callbacks.Callback):
    """Wall-clock seconds of each epoch."""

    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)


def parse_args():
    parser = argparse.ArgumentParser(description="Every defense of harden() on the same MLP, one chart.")
    parser.add_argument("--dataset", choices=("digits", "fashion_mnist"), default="digits")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--eps", type=float, default=0.1, help="Linf bound for training and evaluation")
    parser.add_argument("--out", default="reports/compare_defenses", help="the report directory")
    parser.add_argument("--fast", action="store_true", help="1 epoch on 300 examples, 3-step attacks, 50 points")
    return parser.parse_args()


def main():
    args = parse_args()
    epochs, train_limit, test_limit, steps, attacks = args.epochs, None, 500, 7, "autoattack"
    if args.fast:
        epochs, train_limit, test_limit, steps, attacks = 1, 300, 50, 3, "fast"

    data = load_dataset(args.dataset)
    x_train, y_train = data.x_train[:train_limit], data.y_train[:train_limit]
    x_test, y_test = data.x_test[:test_limit], data.y_test[:test_limit]
    print(f"{data.name}: {len(x_train)} train, {len(x_test)} test")

    # ## The defenses: the adversarial ones train against the same eps the evaluation uses
    adversarial = dict(eps=args.eps, steps=steps)
    defenses = {
        "standard": dict(method="standard"),
        "gfa": dict(method="gfa", layers=3),
        "pgd": dict(method="pgd", **adversarial),
        "trades": dict(method="trades", **adversarial),
        "datagrad": dict(method="datagrad", p=2),
        "hybrid": dict(method="hybrid", **adversarial),
        "gfa_pgd": dict(method="gfa_pgd", layers=3, **adversarial),
    }

    # ## Train each one the same way, and time it
    results = {}
    for label, options in defenses.items():
        base = build_architecture("mlp", data.input_shape, data.num_classes, seed=0)
        model = gfa_keras.harden(base, **options)
        model.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        timer = EpochTimer()
        history = model.fit(x_train, y_train, epochs=epochs, batch_size=128, verbose=0, callbacks=[timer])
        seconds_per_epoch = min(timer.seconds)  # the first epoch also traces the tf.functions

        # ## Evaluate all on the same points, at two bounds
        report = gfa_keras.evaluate_robustness(base, (x_test, y_test), attacks, eps=[args.eps / 2, args.eps],
                                               verbose=0)
        report_directory.add_to_report(args.out, label, robustness=report, history=history.history,
                                       training={**options, "epochs": epochs, "seconds_per_epoch": seconds_per_epoch})
        results[label] = (report, seconds_per_epoch)

    # ## Wrap-up: one table, one chart
    paths = report_directory.render_report(args.out)
    print(f"\nworst-case accuracy on {len(x_test)} test points (Linf, {', '.join(report.attacks)})")
    print(f"{'defense':<10}{'clean':>8}{'eps/2':>8}{'eps':>8}{'s/epoch':>9}{'flags':>7}")
    for label, (report, seconds) in results.items():
        flags = sum(f["status"] != "ok" for f in report.flags)
        print(f"{label:<10}{report.clean_accuracy:>8.3f}" + "".join(f"{a:>8.3f}" for a in report.worst_case_accuracy)
              + f"{seconds:>9.2f}{flags:>7d}")
    print(f"report: {paths['html']}")
    print("A defense with flags raised may be masking gradients: read the report before trusting its column.")


if __name__ == "__main__":
    main()
