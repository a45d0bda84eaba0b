"""benchmarks/catastrophic_overfitting.py: the FGSM + penalty variants it builds and how it names
their results."""
import importlib.util
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from gfa_keras.training.regularizers import GradAlign, GradientFeatureAlignment

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "catastrophic_overfitting.py"
spec = importlib.util.spec_from_file_location("catastrophic_overfitting_benchmark", SCRIPT)
bench = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = bench
spec.loader.exec_module(bench)


def _base():
    return keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(2, 3), keras.layers.Flatten(),
                             keras.layers.Dense(3)])


@pytest.mark.parametrize("method, penalty, weight", [("fgsm_gradalign", GradAlign, 0.2),
                                                     ("fgsm_gfa", GradientFeatureAlignment, 0.01)])
def test_the_fgsm_variants_add_one_penalty_with_the_library_default_weight(method, penalty, weight):
    assert bench.penalty_weight(method, None) == weight
    model = bench.build_model(_base(), method, 0.2, bench.penalty_weight(method, 0.5))
    (regularizer,) = model.regularizers
    assert isinstance(regularizer, penalty) and regularizer.weight == 0.5
    # the same zero-init FGSM as plain "fgsm": step 1.25 eps, no random start
    assert model.perturbation.step_size == pytest.approx(0.25) and not model.perturbation.random_start
    if method == "fgsm_gfa":
        assert len(regularizer.tapped_layers) == 1  # FIRST: the alignment at the input image only


def test_plain_fgsm_has_no_penalty_and_the_result_names_tell_runs_apart():
    assert bench.penalty_weight("fgsm", 3.0) is None and bench.penalty_weight("n_fgsm", None) is None
    assert bench.build_model(_base(), "fgsm", 0.2, None).regularizers == []
    names = {bench.result_name("fgsm_gfa", 0.2, w, s) for w in (0.01, 0.1) for s in (0, 1)}
    assert len(names) == 4 and bench.result_name("fgsm", 0.2, None, 0) == "fgsm_eps0.2.json"


def test_a_fgsm_gfa_step_trains_and_logs_the_alignment():
    model = bench.build_model(_base(), "fgsm_gfa", 0.2, 0.1)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).random((8, 4, 4, 1), dtype=np.float32)
    logs = model.fit(x, np.arange(8) % 3, epochs=1, verbose=0).history
    assert np.isfinite(logs["gfa_penalty"][0]) and 0.0 <= logs["gfa_penalty"][0] <= 2.0
