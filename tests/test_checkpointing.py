"""fit_resumable: a run interrupted and resumed ends where a straight run ends."""
import json

import keras
import numpy as np
import pytest

from gfa_keras import harden
from gfa_keras.training.checkpointing import CHECKPOINT_MODEL, CHECKPOINT_STATE, fit_resumable, read_checkpoint

from conftest import random_linear_model

RNG = np.random.default_rng(5)
X = RNG.uniform(0.0, 1.0, size=(24, 2, 3)).astype("float32")
Y = RNG.integers(0, 4, size=24).astype("int32")
SETTINGS = {"method": "gfa", "penalty_weight": 0.5, "layers": [1]}
# No shuffling and no random perturbation: the run is deterministic, so resuming must be exact.
FIT = dict(batch_size=8, shuffle=False, verbose=0)


def build():
    model = harden(random_linear_model(), layers=1, penalty_weight=0.5)
    model.compile(optimizer=keras.optimizers.Adam(0.05),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


class _Interrupt(keras.callbacks.Callback):
    """Stops the process the way Ctrl-C does, as epoch `at` begins (the checkpoint of `at - 1` is written)."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at:
            raise KeyboardInterrupt


def _weights(model):
    return [w.numpy() for w in model.base_model.weights]


def test_killed_after_two_epochs_and_resumed_for_two_equals_four_straight(tmp_path):
    straight, straight_history = fit_resumable(build(), X, Y, directory=tmp_path / "straight", epochs=4,
                                               settings=SETTINGS, **FIT)

    with pytest.raises(KeyboardInterrupt):
        fit_resumable(build(), X, Y, directory=tmp_path / "resumed", epochs=4, settings=SETTINGS,
                      callbacks=[_Interrupt(at=2)], **FIT)
    assert read_checkpoint(tmp_path / "resumed").epoch == 2
    resumed, history = fit_resumable(build, X, Y, directory=tmp_path / "resumed", epochs=4, settings=SETTINGS, **FIT)

    assert int(resumed.optimizer.iterations.numpy()) == 4 * 3 == int(straight.optimizer.iterations.numpy())
    for a, b in zip(_weights(resumed), _weights(straight)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert history.epoch == [0, 1, 2, 3] == straight_history.epoch
    assert set(history.history) >= {"loss", "task_loss", "gfa_penalty", "accuracy"}
    for key, values in straight_history.history.items():
        np.testing.assert_allclose(history.history[key], values, rtol=1e-5, atol=1e-6)
    assert json.loads((tmp_path / "resumed" / CHECKPOINT_STATE).read_text())["epoch"] == 4


def test_resuming_without_the_optimizer_state_would_not_match(tmp_path):
    # What the equivalence above rules out: Adam restarted from the weights of epoch 2.
    straight = build()
    straight.fit(X, Y, epochs=4, **FIT)
    half = build()
    half.fit(X, Y, epochs=2, **FIT)
    restarted = build()
    restarted.set_weights([w.numpy() for w in half.weights])
    restarted.fit(X, Y, epochs=2, **FIT)
    gap = max(np.abs(a - b).max() for a, b in zip(_weights(restarted), _weights(straight)))
    assert gap > 1e-3


def build_noisy(seed=3):
    """Random starts (PGD) and random nearby points (GradAlign) in every step."""
    model = harden(random_linear_model(), method="n_fgsm_gradalign", eps=0.3, penalty_weight=1.0, seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(0.05),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def test_a_run_with_random_noise_resumes_exactly(tmp_path):
    # The noise of a step is a function of the model's saved seed and the optimizer's saved
    # step count: the resumed run (a loaded model, traced anew) draws what the straight one drew.
    straight, _ = fit_resumable(build_noisy(), X, Y, directory=tmp_path / "straight", epochs=4, **FIT)
    with pytest.raises(KeyboardInterrupt):
        fit_resumable(build_noisy(), X, Y, directory=tmp_path / "resumed", epochs=4, callbacks=[_Interrupt(at=2)],
                      **FIT)
    resumed, _ = fit_resumable(build_noisy, X, Y, directory=tmp_path / "resumed", epochs=4, **FIT)
    assert resumed.seed == straight.seed == 3
    for a, b in zip(_weights(resumed), _weights(straight)):
        np.testing.assert_array_equal(a, b)

    # The noise matters: another seed ends elsewhere.
    other, _ = fit_resumable(build_noisy(seed=4), X, Y, directory=tmp_path / "other", epochs=4, **FIT)
    assert max(np.abs(a - b).max() for a, b in zip(_weights(other), _weights(straight))) > 1e-4


def test_a_finished_run_rerun_returns_without_training(tmp_path):
    model, _ = fit_resumable(build(), X, Y, directory=tmp_path, epochs=2, **FIT)
    again, history = fit_resumable(build, X, Y, directory=tmp_path, epochs=2, **FIT)
    assert int(again.optimizer.iterations.numpy()) == 2 * 3
    for a, b in zip(_weights(again), _weights(model)):
        np.testing.assert_array_equal(a, b)
    assert len(history.history["loss"]) == 2


def test_overwrite_starts_again(tmp_path):
    fit_resumable(build(), X, Y, directory=tmp_path, epochs=2, settings=SETTINGS, **FIT)
    model, history = fit_resumable(build(), X, Y, directory=tmp_path, epochs=1, overwrite=True,
                                   settings={"method": "other"}, **FIT)
    assert int(model.optimizer.iterations.numpy()) == 3  # one epoch of 3 batches, not 3 epochs
    assert history.epoch == [0]
    assert read_checkpoint(tmp_path).settings == {"method": "other"}


def test_other_settings_or_fewer_epochs_are_refused(tmp_path):
    fit_resumable(build(), X, Y, directory=tmp_path, epochs=2, settings=SETTINGS, **FIT)
    with pytest.raises(ValueError, match=r"the settings differ from the checkpoint's \(penalty_weight: 0\.5 in "
                                         r"the checkpoint, 0\.1 now\)\. Expected the same settings"):
        fit_resumable(build, X, Y, directory=tmp_path, epochs=4, settings={**SETTINGS, "penalty_weight": 0.1}, **FIT)
    with pytest.raises(ValueError, match=r"trained to epoch 2, beyond epochs=1\. Expected epochs >= 2"):
        fit_resumable(build, X, Y, directory=tmp_path, epochs=1, settings=SETTINGS, **FIT)


@pytest.mark.parametrize("kwargs, message", [
    ({"epochs": 0}, r"^epochs must be a positive integer\. Received: epochs=0$"),
    ({"initial_epoch": 1}, r"chooses the initial epoch from the checkpoint.*Received: initial_epoch=1$"),
    ({"settings": ["gfa"]}, r"settings must be a dict \(a JSON object\)\. Received: settings of type list"),
    ({"settings": {"optimizer": object()}}, r"settings must be a JSON object"),
    ({"model": "mlp"}, r"model must be a compiled keras.Model or a function returning one\. Received: model of "
                       r"type str"),
])
def test_bad_arguments(tmp_path, kwargs, message):
    arguments = {"model": build, "directory": tmp_path, "epochs": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        fit_resumable(arguments.pop("model"), X, Y, **arguments, **FIT)
    assert not (tmp_path / CHECKPOINT_MODEL).exists()


def test_a_corrupt_state_or_model_is_reported(tmp_path):
    (tmp_path / CHECKPOINT_STATE).write_text("{not json")
    with pytest.raises(ValueError, match=r"Cannot read .*checkpoint\.json: JSONDecodeError.*overwrite=True"):
        fit_resumable(build, X, Y, directory=tmp_path, epochs=2, **FIT)
    (tmp_path / CHECKPOINT_STATE).write_text(json.dumps({"epoch": 1, "settings": {}, "history": {}}))
    (tmp_path / CHECKPOINT_MODEL).write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"Cannot load the checkpoint .*checkpoint\.keras"):
        fit_resumable(build, X, Y, directory=tmp_path, epochs=2, **FIT)
