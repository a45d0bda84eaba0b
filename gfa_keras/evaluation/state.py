"""The resumable state of an evaluation: partial results in a JSON file, and the hashes
that tie it to one model, one data set and one set of settings."""
from __future__ import annotations

import hashlib
import json
import os
import threading

import keras
import numpy as np

from gfa_keras.atomic_files import write_json

__all__ = ["EvaluationState", "DataDigest", "data_digest", "model_digest", "STATE_VERSION"]

# Version 4: results are kept per block of `batch_size` points (each with its data's hash), so a
# run, a shard of it or a resumed run attacks every point in the same batch with the same seed.
STATE_VERSION = 4


class DataDigest:
    """SHA-256 of a data set's inputs and labels, fed block by block.

    The inputs and the labels are hashed separately and the two digests hashed together,
    so the result does not depend on how the data was cut into blocks, and a data set
    streamed from a `tf.data.Dataset` hashes like the same arrays.

    Example:

    ```python
    digest = DataDigest()
    for x, y in blocks:
        digest.update(x, y)
    digest.hexdigest()
    ```
    """

    def __init__(self):
        self._x, self._y = hashlib.sha256(), hashlib.sha256()

    def update(self, x, y):
        """Adds the next block: `x` (hashed as float32) and its labels (as int32)."""
        self._x.update(np.ascontiguousarray(x, dtype=np.float32).tobytes())
        self._y.update(np.ascontiguousarray(y, dtype=np.int32).tobytes())

    def hexdigest(self) -> str:
        """The digest of everything added so far."""
        return hashlib.sha256(self._x.digest() + self._y.digest()).hexdigest()


def data_digest(x, y) -> str:
    """SHA-256 of the inputs and labels: `DataDigest` fed with the whole set at once."""
    digest = DataDigest()
    digest.update(x, y)
    return digest.hexdigest()


def model_digest(model) -> str:
    """SHA-256 of the model's name and weights."""
    h = hashlib.sha256(str(getattr(model, "name", type(model).__name__)).encode())
    for w in getattr(model, "weights", []):
        h.update(np.asarray(keras.ops.convert_to_numpy(w)).tobytes())
    return h.hexdigest()


class EvaluationState:
    """Per-block partial results in a JSON file, rewritten atomically after every stage.

    Safe to `put` from several threads (the blocks of one round run in parallel on the
    devices of a `tf.distribute` strategy). A value handed to `put` must not be mutated
    afterwards: store a new dict instead.

    Args:
        path: The JSON file, or None to keep the state in memory only.
        make_fingerprint: Called only when `path` is given (hashing the weights
            costs time): returns the JSON-ready dict a saved state must match.

    Raises:
        ValueError: If `path` holds a state written with a different fingerprint.
    """

    def __init__(self, path, make_fingerprint):
        self.path = None if path is None else os.fspath(path)
        self._lock = threading.Lock()
        self.data = {"version": STATE_VERSION, "fingerprint": None, "blocks": {}}
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

    def get(self, key, default=None):
        """The saved value of `key`, or `default`."""
        with self._lock:
            return self.data["blocks"].get(key, default)

    def put(self, key, value):
        """Stores `key` and rewrites the file."""
        with self._lock:
            self.data["blocks"][key] = value
            if self.path is not None:
                write_json(self.path, self.data, indent=None)
