"""The resumable state of an evaluation: partial results in a JSON file, and the hashes
that tie it to one model, one data set and one set of settings."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile

import keras
import numpy as np

__all__ = ["EvaluationState", "data_digest", "model_digest"]

# Version 3: the fingerprint holds each attack's full budget; APGD stages count zero gradients.
STATE_VERSION = 3


def data_digest(x, y) -> str:
    """SHA-256 of the inputs and labels."""
    h = hashlib.sha256(np.asarray(x).tobytes())
    h.update(np.asarray(y).tobytes())
    return h.hexdigest()


def model_digest(model) -> str:
    """SHA-256 of the model's name and weights."""
    h = hashlib.sha256(str(getattr(model, "name", type(model).__name__)).encode())
    for w in getattr(model, "weights", []):
        h.update(np.asarray(keras.ops.convert_to_numpy(w)).tobytes())
    return h.hexdigest()


class EvaluationState:
    """Stages' partial results in a JSON file, rewritten atomically after every batch.

    Args:
        path: The JSON file, or None to keep the state in memory only.
        make_fingerprint: Called only when `path` is given (hashing data and weights
            costs time): returns the JSON-ready dict a saved state must match.

    Raises:
        ValueError: If `path` holds a state written with a different fingerprint.
    """

    def __init__(self, path, make_fingerprint):
        self.path = None if path is None else os.fspath(path)
        self.data = {"version": STATE_VERSION, "fingerprint": None, "stages": {}}
        if self.path is None:
            return
        fingerprint = json.loads(json.dumps(make_fingerprint()))
        self.data["fingerprint"] = fingerprint
        if not os.path.exists(self.path):
            return
        with open(self.path, encoding="utf-8") as f:
            saved = json.load(f)
        old = saved.get("fingerprint") or {}
        differ = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
        if saved.get("version") != STATE_VERSION:
            differ = ["version"] + differ
            old, fingerprint = {**old, "version": saved.get("version")}, {**fingerprint, "version": STATE_VERSION}
        if differ:
            raise ValueError(
                f"The state file {self.path} was written by an evaluation with different settings "
                f"({', '.join(f'{k}: {old.get(k)!r} there, {fingerprint.get(k)!r} now' for k in differ)}). "
                "Expected the same model, data and settings to resume. Use another state_path, "
                "or delete the file to start over."
            )
        self.data = saved

    def get(self, key, default):
        """The saved value of stage `key`, or `default`."""
        return self.data["stages"].get(key, default)

    def put(self, key, value):
        """Stores stage `key` and rewrites the file."""
        self.data["stages"][key] = value
        if self.path is None:
            return
        folder = os.path.dirname(os.path.abspath(self.path))
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".robustness_state_", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self.data, f)
        os.replace(tmp, self.path)
