"""Files written whole or not at all.

Checkpoints, evaluation states and reports are rewritten while long runs go on; an
interrupt must never leave half a file where a whole one was. Each writer here writes
a temporary file beside the target (same file system) and renames it onto the target,
which replaces it in one step.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

__all__ = ["replacing", "write_text", "write_json", "save_model"]


@contextlib.contextmanager
def replacing(path, suffix: str = ""):
    """Yields a temporary path beside `path`, renamed onto `path` when the block succeeds.

    Args:
        path: The file to (re)write.
        suffix: Ending of the temporary name, for writers that check it (Keras wants
            `.keras`).

    If the block raises, the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{suffix}")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path, text: str) -> None:
    """Writes `text` (UTF-8) to `path` whole or not at all."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path, value, indent: int | None = 1) -> None:
    """Writes `value` as JSON to `path` whole or not at all."""
    write_text(path, json.dumps(value, indent=indent))


def save_model(model, path) -> None:
    """Saves a Keras model to a `.keras` file whole or not at all."""
    with replacing(path, suffix=".keras") as tmp:
        model.save(tmp)
