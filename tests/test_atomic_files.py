"""Files written whole or not at all: an interrupted write leaves the old file and no debris."""
import json

import keras
import numpy as np
import pytest

from gfa_keras import atomic_files


def test_write_json_replaces_the_file_and_leaves_nothing_else(tmp_path):
    path = tmp_path / "state.json"
    atomic_files.write_json(path, {"epoch": 1})
    atomic_files.write_json(path, {"epoch": 2})
    assert json.loads(path.read_text()) == {"epoch": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_an_interrupted_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "report.md"
    atomic_files.write_text(path, "old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_files.replacing(path) as tmp:
            tmp.write_text("half of the ne")
            raise KeyboardInterrupt
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_a_value_json_cannot_hold_keeps_the_old_file(tmp_path):
    path = tmp_path / "state.json"
    atomic_files.write_json(path, [1])
    with pytest.raises(TypeError):
        atomic_files.write_json(path, {"x": object()})
    assert json.loads(path.read_text()) == [1]
    assert len(list(tmp_path.iterdir())) == 1


def test_save_model_writes_a_loadable_keras_file(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    path = tmp_path / "model.keras"
    atomic_files.save_model(model, path)
    x = np.ones((1, 3), "float32")
    np.testing.assert_allclose(keras.models.load_model(path)(x), model(x))
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]
