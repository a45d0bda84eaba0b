"""Progress bars for the evaluation's batches: tqdm when installed, else Keras' Progbar."""
from __future__ import annotations

import keras

__all__ = ["progress_bar"]


class _SilentBar:
    def update(self, n):
        pass

    def close(self):
        pass


class _KerasBar(_SilentBar):
    """`keras.utils.Progbar` behind tqdm's `update(n)` / `close()`."""

    def __init__(self, total, initial, description, verbose):
        print(description)
        self.bar = keras.utils.Progbar(total, verbose=verbose, unit_name="batch")
        self.done = initial
        self.bar.update(initial)

    def update(self, n):
        self.done += n
        self.bar.update(self.done)


def progress_bar(total: int, initial: int, description: str, verbose: int):
    """A bar with `update(n)` and `close()`; a no-op when `verbose` is 0 or there is nothing to do."""
    if not verbose or total == 0:
        return _SilentBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _KerasBar(total, initial, description, verbose)
    return tqdm(total=total, initial=initial, desc=description, unit="batch", leave=True)
