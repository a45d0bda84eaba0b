"""Catastrophic overfitting, seen by `CatastrophicOverfittingMonitor`: single-step training of the small CNN
on the first 6,000 Fashion-MNIST training images, PGD-10 and FGSM accuracy on the first 500 test images
after each epoch. Writes one JSON per method into --out (resumable: finished methods are skipped).

    python benchmarks/catastrophic_overfitting.py                      # eps 0.2, 6 epochs, 4 methods
    python benchmarks/catastrophic_overfitting.py --methods fgsm n_fgsm --eps 0.3
    python benchmarks/catastrophic_overfitting.py --eps 0.1 --replay epoch3.keras epoch15.keras
    python benchmarks/catastrophic_overfitting.py --methods fgsm_gfa --penalty-weight 0.1

`--replay` runs the monitor over saved checkpoints of any Fashion-MNIST run instead (one per measured epoch,
in order; they must share one architecture): would it have fired on that run?

Methods: "fgsm" (zero-init FGSM with step 1.25 eps, the classic catastrophic overfitter); "fgsm_gradalign"
and "fgsm_gfa", the same FGSM with GradAlign's penalty or GFA's (FIRST: the input image) on top, the test of
whether GFA can keep single-step training from overfitting as GradAlign does; and any `harden` method that
takes eps (`layers=1` for the GFA ones). `--penalty-weight` sets lambda / beta (default: each method's own).
"""
import argparse
import json
import os
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from gfa_keras import FGSM, HardenedModel, harden  # noqa: E402
from gfa_keras.training.methods import DEFAULT_PENALTY_WEIGHTS  # noqa: E402
from gfa_keras.training.regularizers import GradAlign, GradientFeatureAlignment  # noqa: E402
from gfa_keras.architectures import build_architecture  # noqa: E402
from gfa_keras.data import load_fashion_mnist  # noqa: E402
from gfa_keras.training.monitors import CatastrophicOverfittingMonitor  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--eps", type=float, default=0.2)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--train", type=int, default=6000)
    p.add_argument("--methods", nargs="+", default=["fgsm", "fgsm_rs", "n_fgsm", "n_fgsm_gfa"])
    p.add_argument("--penalty-weight", type=float, default=None,
                   help="lambda / beta of the penalised methods (default: each method's own)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/catastrophic_overfitting")
    p.add_argument("--replay", nargs="+", metavar="MODEL.keras", help="checkpoints to replay the monitor over")
    args = p.parse_args()
    if args.replay:
        replay(args.replay, args.eps)
        return
    os.makedirs(args.out, exist_ok=True)
    d = load_fashion_mnist()
    x, y = d.x_train[:args.train], d.y_train[:args.train]
    held = (d.x_test[:500], d.y_test[:500])
    for method in args.methods:
        weight = penalty_weight(method, args.penalty_weight)
        path = os.path.join(args.out, result_name(method, args.eps, weight, args.seed))
        if os.path.exists(path):
            continue
        keras.utils.set_random_seed(args.seed)
        base = build_architecture("small_cnn", x.shape[1:], 10, seed=args.seed)
        model = build_model(base, method, args.eps, weight)
        model.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        monitor = CatastrophicOverfittingMonitor(held, eps=args.eps, pgd_steps=10)
        start = time.time()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            h = model.fit(x, y, epochs=args.epochs, batch_size=128, verbose=0, callbacks=[monitor]).history
        clean = float(np.mean(np.argmax(model.predict(held[0], verbose=0), -1) == held[1]))
        result = {"method": method, "eps": args.eps, "penalty_weight": weight, "seed": args.seed,
                  "epochs": args.epochs, "train": args.train,
                  "seconds": time.time() - start, "clean_accuracy_held": clean,
                  "val_fgsm_accuracy": h["val_fgsm_accuracy"], "val_pgd_accuracy": h["val_pgd_accuracy"],
                  "catastrophic_overfitting": h["catastrophic_overfitting"], "detected_epoch": monitor.detected_epoch,
                  "warnings": [str(w.message) for w in caught if "Catastrophic" in str(w.message)]}
        json.dump(result, open(path, "w"), indent=1)
        print(json.dumps({k: v for k, v in result.items() if k != "warnings"}), flush=True)


# The penalised FGSM variants: the GFA one is GradAlign's experiment with GFA's penalty.
FGSM_PENALTIES = {"fgsm_gradalign": ("n_fgsm_gradalign", lambda w, eps: GradAlign(w, eps)),
                  "fgsm_gfa": ("n_fgsm_gfa", lambda w, eps: GradientFeatureAlignment(layers=1, weight=w))}


def penalty_weight(method, requested):
    """lambda / beta for `method`: `requested`, else the library's default for its penalty; None
    for a method without one."""
    default = DEFAULT_PENALTY_WEIGHTS.get(FGSM_PENALTIES[method][0] if method in FGSM_PENALTIES else method)
    return None if default is None else (default if requested is None else requested)


def result_name(method, eps, weight, seed):
    return (f"{method}_eps{eps}" + ("" if weight is None else f"_w{weight:g}")
            + ("" if seed == 0 else f"_seed{seed}") + ".json")


def build_model(base, method, eps, weight):
    """Zero-init FGSM at step 1.25 eps (the classic catastrophic overfitter), alone or with a
    penalty; any other name is a `harden` method."""
    if method in FGSM_PENALTIES:
        regularizers = [FGSM_PENALTIES[method][1](weight, eps)]
    elif method == "fgsm":
        regularizers = []
    else:
        return harden(base, method=method, eps=eps, layers=1, penalty_weight=weight)
    return HardenedModel(base, perturbation=FGSM(eps, step_size=1.25 * eps), regularizers=regularizers, name=method)


def replay(paths, eps):
    """Feeds the monitor each checkpoint as if it were the next epoch's weights, and prints its logs."""
    d = load_fashion_mnist()
    model = keras.models.load_model(paths[0])
    monitor = CatastrophicOverfittingMonitor((d.x_test[:500], d.y_test[:500]), eps=eps, pgd_steps=10)
    monitor.set_model(model)
    monitor.on_train_begin()
    for epoch, path in enumerate(paths):
        model.set_weights(keras.models.load_model(path).get_weights())
        logs = {}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            monitor.on_epoch_end(epoch, logs)
        print(json.dumps({"checkpoint": path, **{k: round(v, 3) for k, v in logs.items()}}), flush=True)
        for warning in caught:
            print(f"  warning: {warning.message}", flush=True)


if __name__ == "__main__":
    main()
