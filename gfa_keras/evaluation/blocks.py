"""The data cut into fixed blocks, and the blocks evaluated one per device at a time.

Block k holds points `[k * batch_size, (k + 1) * batch_size)`, whether the data are
arrays or a `tf.data.Dataset` (read element by element, never whole). A round hands one
block to each device of a strategy, in a thread per device; a shard takes the blocks
with `k % count == index`. Which block a point falls in is all that its result depends
on, so every split gives the same per-example results.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import itertools

import numpy as np
import tensorflow as tf

from gfa_keras.attacks import validate_attack_inputs
from gfa_keras.evaluation import masking_checks
from gfa_keras.evaluation.progress import progress_bar
from gfa_keras.evaluation.state import DataDigest

__all__ = ["Blocks", "BlockResults", "evaluate_blocks", "strategy_devices"]


def strategy_devices(strategy):
    """The devices one round of blocks goes to: the strategy's worker devices, or [None] (no device scope)."""
    if strategy is None:
        return [None]
    devices = getattr(getattr(strategy, "extended", None), "worker_devices", None)
    if not isinstance(strategy, tf.distribute.Strategy) or not devices:
        raise ValueError("strategy must be a tf.distribute.Strategy over local devices, e.g. "
                         f"tf.distribute.MirroredStrategy(). Received: strategy of type {type(strategy).__name__}")
    return list(devices)


class Blocks:
    """The data as blocks `(k, x, y)` of `batch_size` points (the last may be smaller), validated.

    Arrays are validated whole up front (they are in memory anyway); a Dataset is read
    element by element and regrouped, so at most one block and one element are held.
    """

    def __init__(self, data, batch_size, *, eps, norm, clip_min, clip_max, num_classes):
        self.batch_size = batch_size
        self.check = dict(eps=eps, norm=norm, clip_min=clip_min, clip_max=clip_max)
        self.num_classes = num_classes
        self.dataset = self.x = self.y = None
        if isinstance(data, tf.data.Dataset):
            self.dataset = data
        elif isinstance(data, (tuple, list)) and len(data) == 2:
            x, y = validate_attack_inputs(*data, num_classes=num_classes, **self.check)
            self.x, self.y = x.numpy(), y.numpy()
        else:
            raise ValueError(
                "data must be an (x, y) pair of arrays or a tf.data.Dataset of (x, y) batches. "
                f"Received: data of type {type(data).__name__}"
            )

    def total_blocks(self):
        """The number of blocks, or None when the data is a Dataset (known only once read)."""
        return None if self.x is None else -(-len(self.y) // self.batch_size)

    def __iter__(self):
        if self.x is not None:
            for k, start in enumerate(range(0, len(self.y), self.batch_size)):
                yield k, self.x[start:start + self.batch_size], self.y[start:start + self.batch_size]
            return
        xs, ys, held, k = [], [], 0, 0
        for element in self.dataset:
            if not isinstance(element, (tuple, list)) or len(element) != 2:
                raise ValueError(
                    "A tf.data.Dataset passed as data must yield (x, y) batches. "
                    f"Received an element of type {type(element).__name__}"
                )
            x, y = np.asarray(element[0]), np.asarray(element[1])
            if x.ndim == 0 or y.ndim == 0:
                raise ValueError("A tf.data.Dataset passed as data must yield batches (a leading batch axis); "
                                 f"batch it with .batch(n). Received an element with x.shape={x.shape}")
            xs.append(x)
            ys.append(y)
            held += len(y)
            while held >= self.batch_size:
                x, y = np.concatenate(xs), np.concatenate(ys)
                yield (k, *self._validate(x[:self.batch_size], y[:self.batch_size]))
                k += 1
                xs, ys, held = [x[self.batch_size:]], [y[self.batch_size:]], held - self.batch_size
        if held:
            yield (k, *self._validate(np.concatenate(xs), np.concatenate(ys)))

    def _validate(self, x, y):
        x, y = validate_attack_inputs(x, y, num_classes=self.num_classes, **self.check)
        return x.numpy(), y.numpy()


class BlockResults:
    """The results of the blocks one call evaluated, and what it saw of the whole set."""

    def __init__(self):
        self.blocks, self.block_sizes = [], []
        self.correct_chunks, self.rows, self.norm_chunks = [], [], []
        self.zero_gradients = []
        self.label_counts = None
        self.total_points = self.num_blocks = 0
        self.data_sha256 = None
        self.sample_x = self.sample_y = None

    def finish(self, eps_count, min_names):
        self.correct = (np.concatenate(self.correct_chunks) if self.correct_chunks else np.zeros(0, bool))
        self.broken_by = [list(itertools.chain.from_iterable(rows[i] for rows in self.rows)) for i in range(eps_count)]
        self.norms = {a: np.concatenate([n[a] for n in self.norm_chunks]) if self.norm_chunks else np.zeros(0)
                      for a in min_names}


def evaluate_blocks(run, blocks, total_blocks, state, index, count, devices, verbose, sample_size):
    """Evaluates this shard's blocks, a round of one block per device at a time; hashes all of them.

    Args:
        run: What evaluates one block: `run.block(k, x, y, state)` returns its results
            (`correct`, `rows`, `norms`, `zero_gradients`); `run.eps`, `run.specs`,
            `run.min_specs`, `run.batch_size` and `run.num_classes` describe the run.
        blocks: The blocks `(k, x, y)` of the whole data, in order.
        total_blocks: Their number, or None when not known before reading them.
        state: The `EvaluationState` `run.block` resumes from and saves to.
        index: This shard's index; only the blocks with `k % count == index` are evaluated.
        count: The number of shards.
        devices: The devices of one round (`strategy_devices`).
        verbose: Whether to show a progress bar.
        sample_size: How many of the first points to keep as the checks' sample.

    Returns:
        The `BlockResults` of this shard's blocks.
    """
    part = BlockResults()
    digest = DataDigest()
    sample_x, sample_y, sampled = [], [], 0
    zero_counts = []
    own = None if total_blocks is None else len(range(index, total_blocks, count))
    bar = progress_bar(own, 0, f"{len(run.eps)} eps x [{', '.join(s.name for s in run.specs)}]: blocks of "
                       f"{run.batch_size}", verbose)
    pool = concurrent.futures.ThreadPoolExecutor(len(devices)) if len(devices) > 1 else None

    def run_round(pending):
        if pool is None:
            with _device_scope(devices[0]):
                results = [run.block(k, x, y, state) for k, x, y in pending]
        else:
            futures = [pool.submit(_on_device, device, run.block, k, x, y, state)
                       for device, (k, x, y) in zip(devices, pending)]
            results = [f.result() for f in futures]
        for (k, x, y), result in zip(pending, results):
            part.blocks.append(k)
            part.block_sizes.append(len(y))
            part.correct_chunks.append(result["correct"])
            part.rows.append(result["rows"])
            part.norm_chunks.append(result["norms"])
            zero_counts.extend(result["zero_gradients"])
            counts = np.bincount(y, minlength=run.num_classes)
            part.label_counts = counts if part.label_counts is None else part.label_counts + counts
            bar.update(1)

    try:
        pending = []
        for k, x, y in blocks:
            digest.update(x, y)
            part.total_points += len(y)
            part.num_blocks = k + 1
            if sampled < sample_size:
                sample_x.append(x[:sample_size - sampled])
                sample_y.append(y[:sample_size - sampled])
                sampled += len(sample_y[-1])
            if k % count != index:
                continue
            pending.append((k, x, y))
            if len(pending) == len(devices):
                run_round(pending)
                pending = []
        if pending:
            run_round(pending)
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
        bar.close()
    if index >= part.num_blocks:
        raise ValueError(f"Shard {index} of {count} holds no block: the data has only {part.num_blocks} blocks of "
                         f"{run.batch_size} points. Expected a shard count <= {part.num_blocks}. "
                         f"Received: shard=({index}, {count})")
    if part.label_counts is None:
        part.label_counts = np.zeros(run.num_classes, np.int64)
    part.data_sha256 = digest.hexdigest()
    part.sample_x, part.sample_y = np.concatenate(sample_x), np.concatenate(sample_y)
    part.zero_gradients = masking_checks.sum_zero_gradients(zero_counts, [s.name for s in run.specs])
    part.finish(len(run.eps), [s.name for s in run.min_specs])
    return part


def _device_scope(device):
    return tf.device(device) if device is not None else contextlib.nullcontext()


def _on_device(device, fn, *args):
    with tf.device(device):
        return fn(*args)
