"""
Title: The paper's CIFAR-10 CNN: standard training, GFA (DEEP) and PGD adversarial training
Description: Train the small conv-pool-conv-pool-dense-dense CNN three ways on CIFAR-10
    JPEGs and compare them under AutoAttack's cascade at several eps, with the loss
    along radial and tangential directions (the paper's Figure 2).

What it shows: GFA against the defense it claims to beat (Madry PGD training, 7
steps of 2/255 inside 8/255), evaluated the strict way: every test point, the worst
case over APGD-CE, APGD-T, FAB-T and Square per example. The data are CIFAR-10 as
JPEG files in class folders, read from a zip (`--data`, default
`../shared/data/cifar10-jpeg.zip` or `$GFA_KERAS_CIFAR10_JPEG`), never downloaded.
Hours on 2 CPU cores at full size: use `--limit-per-class` to subsample, `--fast`
for a smoke run (2 epochs on 300 images), `--dataset digits` to run
without the CIFAR-10 files.

    python examples/cifar10_cnn.py --data cifar10-jpeg.zip [--epochs 20] [--limit-per-class 1000] \\
        [--penalty-weight 0.01] [--out reports/cifar10_cnn] [--fast] [--dataset digits]
"""
# ## Setup
import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

import gfa_keras  # noqa: E402
from gfa_keras.reports import plots, report_directory  # noqa: E402
from gfa_keras.architectures import build_architecture  # noqa: E402
from gfa_keras.data import load_dataset  # noqa: E402

EPS = 8 / 255  # CIFAR-10's usual Linf bound, in [0, 1] pixel scale


def parse_args():
    parser = argparse.ArgumentParser(description="Small CNN: standard vs GFA (DEEP) vs PGD training.")
    parser.add_argument("--dataset", choices=("cifar10_jpeg", "digits"), default="cifar10_jpeg")
    parser.add_argument("--data", help="the CIFAR-10 JPEG zip or folder")
    parser.add_argument("--limit-per-class", type=int, help="images per class and split (default: all)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--penalty-weight", type=float, default=0.01, help="GFA's beta")
    parser.add_argument("--test-limit", type=int, default=1000, help="test points evaluated")
    parser.add_argument("--out", default="reports/cifar10_cnn", help="the report directory")
    parser.add_argument("--fast", action="store_true", help="2 epochs on 300 images (30 per class), fast attacks on 100")
    return parser.parse_args()


def main():
    args = parse_args()
    limit, epochs, test_limit, attacks, pgd_steps = (args.limit_per_class, args.epochs, args.test_limit,
                                                     "autoattack", 7)
    train_limit = None
    if args.fast:
        limit, train_limit, epochs, test_limit, attacks, pgd_steps = 30, 300, 2, 100, "fast", 3

    # ## The data: class-balanced, in [0, 1] pixel scale (normalisation would go inside the model)
    if args.dataset == "cifar10_jpeg":
        data = load_dataset("cifar10_jpeg", path=args.data, limit_per_class=limit)
    else:
        data = load_dataset("digits")
    x_train, y_train = data.x_train[:train_limit], data.y_train[:train_limit]
    x_test, y_test = data.x_test[:test_limit], data.y_test[:test_limit]
    print(f"{data.name}: {len(x_train)} train, {len(x_test)} test, input {data.input_shape}")

    # ## Three ways to train the same CNN
    defenses = {
        "standard": dict(method="standard"),
        "gfa_deep": dict(method="gfa", layers=3, penalty_weight=args.penalty_weight),
        "pgd": dict(method="pgd", eps=EPS, step_size=2 / 255, steps=pgd_steps),
    }
    results = {}
    for label, options in defenses.items():
        base = build_architecture("small_cnn", data.input_shape, data.num_classes, seed=0)
        model = gfa_keras.harden(base, **options)
        model.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        history = model.fit(x_train, y_train, epochs=epochs, batch_size=128, validation_split=0.1, verbose=0)
        print(f"{label}: validation accuracy {history.history['val_accuracy'][-1]:.3f} after {epochs} epochs")

        # ## The strict evaluation at three bounds, and the landscape around 100 test points
        report = gfa_keras.evaluate_robustness(base, (x_test, y_test), attacks, eps=[2 / 255, 4 / 255, EPS],
                                               verbose=0)
        landscape = plots.loss_along_directions(base, x_test[:100], y_test[:100])
        report_directory.add_to_report(args.out, label, robustness=report, history=history.history, landscape=landscape,
                                       training={**options, "epochs": epochs})
        results[label] = report

    # ## Wrap-up
    paths = report_directory.render_report(args.out)
    print(f"\nworst-case accuracy on {len(x_test)} test points (Linf, {', '.join(report.attacks)})")
    print(f"{'model':<10}{'clean':>8}{'2/255':>8}{'4/255':>8}{'8/255':>8}")
    for label, report in results.items():
        print(f"{label:<10}{report.clean_accuracy:>8.3f}" + "".join(f"{a:>8.3f}" for a in report.worst_case_accuracy))
    print(f"report: {paths['html']}")
    print("Compare the 8/255 column: that is the claim the paper makes against PGD training.")


if __name__ == "__main__":
    main()
