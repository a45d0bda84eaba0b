"""Images per second of gfa_keras' attacks against IBM ART's and cleverhans' eager ones.

Same small CNN (trained here on the 8x8 digits that scikit-learn ships), same
batch, same iteration counts; the implementations are timed interleaved in one
process (one untimed warm-up each, then `--repeats` rounds) and the medians are
compared. Each line also shows the strength each implementation reaches, since
a faster attack only counts if it is not weaker:

- APGD-CE and PGD: robust accuracy at eps (lower is stronger), verified here.
- DeepFool (L2, unbounded): success rate and median L2 norm (smaller is stronger).

Needs `pip install adversarial-robustness-toolbox multiprocess`. Run:

    python benchmarks/attack_speed.py --points 128 --repeats 3
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from gfa_keras.attacks import get_attack, perturbation_norms  # noqa: E402


def small_cnn_on_digits(epochs):
    """A small CNN (logits output) trained on the 8x8 digits, and its test split."""
    bunch = load_digits()
    x = (bunch.images / 16.0).astype("float32")[..., None]
    y = bunch.target.astype("int32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10),
    ], name="small_cnn")
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x[:1500], y[:1500], epochs=epochs, batch_size=64, verbose=0)
    return model, x[1500:], y[1500:]


def art_classifier(model):
    from art.estimators.classification import TensorFlowV2Classifier

    return TensorFlowV2Classifier(
        model=model, nb_classes=10, input_shape=(8, 8, 1), clip_values=(0.0, 1.0),
        loss_object=keras.losses.CategoricalCrossentropy(from_logits=True),
    )


def robust_accuracy(model, x, y, x_adv, eps, norm):
    """Share of points still correctly classified, crediting only in-ball, in-box perturbations."""
    x_adv = np.asarray(x_adv, dtype="float32")
    correct = np.argmax(np.asarray(model(x_adv)), axis=1) == y
    correct |= np.asarray(perturbation_norms(x, x_adv, norm)) > eps + 1e-6
    correct |= ~((x_adv >= 0) & (x_adv <= 1)).reshape(len(x), -1).all(axis=1)
    correct &= np.argmax(np.asarray(model(x)), axis=1) == y
    return float(correct.mean())


def minimum_norm_strength(model, x, y, x_adv):
    """Success rate over clean-correct points and median L2 norm of the successes."""
    x_adv = np.asarray(x_adv, dtype="float32")
    clean = np.argmax(np.asarray(model(x)), axis=1) == y
    fooled = clean & (np.argmax(np.asarray(model(x_adv)), axis=1) != y)
    norms = np.asarray(perturbation_norms(x, x_adv, "l2"))[fooled]
    return float(fooled.sum() / clean.sum()), float(np.median(norms)) if len(norms) else float("inf")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, default=128, help="Batch size (all attacks get the same batch).")
    parser.add_argument("--eps", type=float, default=0.1, help="Linf bound for APGD-CE and PGD.")
    parser.add_argument("--apgd-steps", type=int, default=20)
    parser.add_argument("--pgd-steps", type=int, default=20)
    parser.add_argument("--deepfool-steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10, help="Training epochs of the CNN.")
    args = parser.parse_args()

    from art.attacks.evasion import AutoProjectedGradientDescent, DeepFool
    from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent

    model, x_test, y_test = small_cnn_on_digits(args.epochs)
    x, y = x_test[:args.points], y_test[:args.points]
    xt, yt = tf.constant(x), tf.constant(y)
    y_onehot = keras.utils.to_categorical(y, 10)
    classifier = art_classifier(model)
    eps, pgd_step = args.eps, 2.5 * args.eps / args.pgd_steps
    print(f"small CNN clean accuracy on the {len(x)} points: "
          f"{np.mean(np.argmax(np.asarray(model(x)), axis=1) == y):.2%}")

    art_apgd = AutoProjectedGradientDescent(
        classifier, norm=np.inf, eps=eps, eps_step=2 * eps, max_iter=args.apgd_steps, nb_random_init=1,
        batch_size=len(x), loss_type="cross_entropy", verbose=False)
    art_deepfool = DeepFool(classifier, max_iter=args.deepfool_steps, epsilon=0.02, nb_grads=10,
                            batch_size=len(x), verbose=False)
    runs = {
        "apgd_ce gfa_keras": lambda: get_attack("apgd_ce").fn(model, xt, yt, eps=eps, steps=args.apgd_steps),
        "apgd_ce ART": lambda: art_apgd.generate(x, y_onehot),
        "deepfool gfa_keras": lambda: get_attack("deepfool").fn(model, xt, yt, norm="l2",
                                                                steps=args.deepfool_steps, overshoot=0.02),
        "deepfool ART": lambda: art_deepfool.generate(x),
        "pgd gfa_keras": lambda: get_attack("pgd").fn(model, xt, yt, eps=eps, steps=args.pgd_steps,
                                                      step_size=pgd_step),
        "pgd cleverhans eager": lambda: projected_gradient_descent(
            model, xt, eps, pgd_step, args.pgd_steps, np.inf, clip_min=0.0, clip_max=1.0, y=yt,
            rand_init=True, sanity_checks=False),
    }
    outputs = {name: run() for name, run in runs.items()}  # warm-up: tracing and ART setup
    seconds = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():  # interleaved, so load changes hit all alike
            start = time.perf_counter()
            outputs[name] = run()
            seconds[name].append(time.perf_counter() - start)

    def speed(name):
        return len(x) / statistics.median(seconds[name])

    def strength(name):
        if name.startswith("deepfool"):
            rate, median = minimum_norm_strength(model, x, y, outputs[name])
            return f"success {rate:.2%}, median L2 {median:.4f}"
        return f"robust accuracy {robust_accuracy(model, x, y, outputs[name], eps, 'linf'):.2%}"

    print(f"\n{len(x)} points, eps={eps:g} (Linf), APGD {args.apgd_steps} steps, PGD {args.pgd_steps} steps, "
          f"DeepFool (L2) {args.deepfool_steps} steps; medians of {args.repeats} interleaved repeats")
    for name in runs:
        print(f"  {name:22s} {speed(name):9.1f} images/s  ({statistics.median(seconds[name]):.3f} s)  "
              f"{strength(name)}")
    print()
    for ours, theirs, target in (("apgd_ce gfa_keras", "apgd_ce ART", 5),
                                 ("deepfool gfa_keras", "deepfool ART", 20),
                                 ("pgd gfa_keras", "pgd cleverhans eager", 2)):
        ratio = speed(ours) / speed(theirs)
        verdict = "meets" if ratio >= target else "MISSES"
        print(f"  {ours} / {theirs}: {ratio:.1f}x (target >= {target}x: {verdict})")


if __name__ == "__main__":
    main()
