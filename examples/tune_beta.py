"""
Title: Searching GFA's beta with Keras Tuner
Description: Search the penalty weight on a log scale (and FIRST vs DEEP) for the best
    balance of clean and robust validation accuracy, then evaluate the best model on
    the test set, which the search never saw.

What it shows: `gfa_keras.tuning.search.tune(...)`, one call over Keras Tuner that measures
every trial's clean and robust accuracy (APGD-CE) at the end of each epoch, the
trials as a table and a clean-vs-robust scatter with the Pareto front, and why the
winner still needs the strict evaluation. The 8x8 digits ship with scikit-learn;
`--dataset fashion_mnist` uses Debian's Fashion-MNIST files. About 10 minutes on
2 CPU cores; `--fast`: 2 trials of 1 epoch.

    python examples/tune_beta.py [--trials 10] [--epochs 5] [--eps 0.1] [--out reports/tune_beta] [--fast]
"""
# ## Setup
import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

import gfa_keras  # noqa: E402
from gfa_keras.reports import report_directory  # noqa: E402
from gfa_keras.architectures import build_architecture  # noqa: E402
from gfa_keras.data import load_dataset  # noqa: E402
from gfa_keras.tuning.search import tune  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description="Search GFA's beta with Keras Tuner.")
    parser.add_argument("--dataset", choices=("digits", "fashion_mnist"), default="digits")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=5, help="epochs per trial")
    parser.add_argument("--eps", type=float, default=0.1, help="Linf bound of the validation attack")
    parser.add_argument("--out", default="reports/tune_beta", help="the report directory (the search state too)")
    parser.add_argument("--fast", action="store_true", help="2 trials of 1 epoch on 600 examples")
    return parser.parse_args()


def main():
    args = parse_args()
    trials, epochs, train_limit, robust_points = args.trials, args.epochs, None, 300
    if args.fast:
        trials, epochs, train_limit, robust_points = 2, 1, 600, 50

    # ## Data: the search validates on a held-out part of the training set, never on the test set
    data = load_dataset(args.dataset)
    x, y = data.x_train[:train_limit], data.y_train[:train_limit]
    n_val = len(x) // 5
    x_train, y_train, x_val, y_val = x[:-n_val], y[:-n_val], x[-n_val:], y[-n_val:]
    print(f"{data.name}: {len(x_train)} train, {len(x_val)} validation, {len(data.x_test)} test")

    # ## The search: beta in [1e-4, 1] on a log scale, FIRST (1) or DEEP (3)
    # "tradeoff" maximises (clean + robust) / 2 on the validation split.
    def make_model():
        return build_architecture("mlp", data.input_shape, data.num_classes)

    keras.utils.set_random_seed(0)
    result = tune(make_model, x_train, y_train, validation_data=(x_val, y_val), objective="tradeoff",
                  eps=args.eps, attack_steps=10, robust_points=robust_points, layers=(1, 3),
                  penalty_weight=(1e-4, 1.0), max_trials=trials, epochs=epochs, batch_size=128,
                  directory=os.path.join(args.out, "search"), overwrite=True, verbose=0)
    print(result.to_markdown())
    print(f"best: {result.best_hyperparameters}")

    # ## The winner on the test set, under the full cascade
    best = result.best_model.base_model
    report = gfa_keras.evaluate_robustness(best, data.test, "fast" if args.fast else "autoattack",
                                           eps=[args.eps], verbose=0)
    report_directory.add_to_report(args.out, "best", robustness=report, training=result.best_hyperparameters,
                                   tuning={"objective": result.objective, "direction": result.direction,
                                           "best_hyperparameters": result.best_hyperparameters,
                                           "trials": result.trials})
    paths = report_directory.render_report(args.out)

    # ## Wrap-up
    print(f"\nbest model on {len(data.x_test)} test points: clean {report.clean_accuracy:.3f}, "
          f"worst case at eps={args.eps:g} {report.worst_case_accuracy[0]:.3f}")
    print(f"report: {paths['html']}")
    print("The validation attack is one APGD-CE run: the test cascade is the number to trust.")


if __name__ == "__main__":
    main()
