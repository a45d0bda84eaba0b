"""
Title: The GFA penalty in your own training loop
Description: Train a classifier with a hand-written `tf.GradientTape` loop that adds
    `alignment_penalty` to the loss, and check that the penalty is the one
    `harden(...)` computes.

What it shows: the penalty as a pure function of (gradients, features) for people who
do not use `model.fit`: a feature model exposes the inputs h_l of the tapped layers,
an inner tape gives dL/dh_l, `alignment_penalty` turns them into the penalty and the
per-layer alignments, and the outer tape differentiates the total (the penalty's
gradient is second order). The 8x8 digits ship with scikit-learn. About 30 s on
2 CPU cores; `--fast`: a few seconds.

    python examples/custom_training_loop.py [--epochs 10] [--penalty-weight 0.01] [--fast]
"""
# ## Setup
import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import gfa_keras  # noqa: E402
from gfa_keras import alignment_penalty  # noqa: E402
from gfa_keras.data import as_tf_dataset, load_digits  # noqa: E402


def make_model(num_classes):
    """A Functional MLP with logits; its hidden layers' inputs are the features we align."""
    inputs = keras.Input((8, 8, 1))
    h0 = keras.layers.Flatten()(inputs)
    h1 = keras.layers.Dense(64, activation="relu", name="dense_1")(h0)
    h2 = keras.layers.Dense(64, activation="relu", name="dense_2")(h1)
    logits = keras.layers.Dense(num_classes, name="logits")(h2)
    # The inputs of the three Dense layers: the paper's DEEP taps for this MLP.
    features = keras.Model(inputs, [[h0, h1, h2], logits], name="features")
    return keras.Model(inputs, logits, name="mlp"), features


def parse_args():
    parser = argparse.ArgumentParser(description="GFA in a hand-written training loop.")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--penalty-weight", type=float, default=0.01, help="GFA's beta")
    parser.add_argument("--fast", action="store_true", help="2 epochs")
    return parser.parse_args()


def main():
    args = parse_args()
    epochs = 2 if args.fast else args.epochs
    beta = args.penalty_weight
    data = load_digits()
    keras.utils.set_random_seed(0)
    model, features = make_model(data.num_classes)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    optimizer = keras.optimizers.Adam(3e-3)

    # ## Total loss = task loss + beta * GFA penalty
    # The inner tape watches the features: its gradient dL/dh is what is aligned with h.
    def total_loss(x, y, training):
        with tf.GradientTape() as inner:
            hs, logits = features(x, training=training)
            inner.watch(hs)
            task = loss_fn(y, logits)
        grads = inner.gradient(task, hs)
        penalty, alignments = alignment_penalty(grads, hs)
        return task + beta * penalty, task, penalty, alignments

    # ## One training step: the outer tape differentiates through the inner gradient
    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as outer:
            total, task, penalty, alignments = total_loss(x, y, training=True)
        optimizer.apply(outer.gradient(total, model.trainable_variables), model.trainable_variables)
        return task, penalty, alignments

    # ## The loop
    for epoch in range(1, epochs + 1):
        logs = []
        for x, y in as_tf_dataset(*data.train, batch_size=64, shuffle=True, seed=epoch):
            task, penalty, alignments = train_step(x, y)
            logs.append([float(task), float(penalty)] + [float(a) for a in alignments])
        task, penalty, *alignments = np.mean(logs, axis=0)
        print(f"epoch {epoch}: task loss {task:.4f}, penalty {penalty:.4f}, "
              f"alignment per layer {np.round(alignments, 3).tolist()}")

    # ## Check: the same penalty as harden(...) on the same weights and batch
    x, y = data.x_test[:128], data.y_test[:128]
    _, _, ours, _ = total_loss(tf.constant(x), tf.constant(y), training=False)
    hardened = gfa_keras.harden(model, layers=3, penalty_weight=beta)
    hardened.compile(loss=loss_fn)
    theirs = hardened.evaluate(x, y, batch_size=128, verbose=0, return_dict=True)["gfa_penalty"]

    # ## Wrap-up
    accuracy = np.mean(np.argmax(model.predict(data.x_test, verbose=0), axis=1) == data.y_test)
    print(f"test accuracy {accuracy:.3f}")
    print(f"penalty on 128 test digits: custom loop {float(ours):.6f}, harden() {theirs:.6f}")
    print(f"tapped by harden(layers=3): {list(hardened.tapped_layers)}")


if __name__ == "__main__":
    main()
