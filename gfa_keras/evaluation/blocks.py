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
    """What one `evaluate_blocks` call saw of the whole set, and the results of the blocks it evaluated.

    Every block of the data is `seen` (hashed, counted, its first points kept as the
    checks' sample until there are `sample_size`); each evaluated block is `add`ed with
    its results; `finish` joins those into per-example results in the order of the blocks.
    """

    def __init__(self, num_classes, sample_size):
        # Of every block of the data.
        self.total_points = self.num_blocks = 0
        self._digest = DataDigest()
        self._sample_size = sample_size
        self._sample_x, self._sample_y = [], []
        # Of the evaluated blocks, one entry per block in the order they were evaluated.
        self.blocks, self.block_sizes = [], []
        self.correct_chunks, self.broken_by_chunks, self.norm_chunks = [], [], []
        self.zero_gradient_counts = []
        self.label_counts = np.zeros(num_classes, np.int64)
        # Set by `finish`.
        self.data_sha256 = None
        self.sample_x = self.sample_y = None
        self.correct = self.broken_by = self.norms = None
        self.zero_gradients = None

    def see(self, k, x, y):
        """Takes in block `k` of the whole data, evaluated here or not."""
        self._digest.update(x, y)
        self.total_points += len(y)
        self.num_blocks = k + 1
        wanted = self._sample_size - sum(len(s) for s in self._sample_y)
        if wanted > 0:
            self._sample_x.append(x[:wanted])
            self._sample_y.append(y[:wanted])

    def add(self, k, y, result):
        """Records the results of evaluated block `k` (labels `y`), as `run.block` returns them."""
        self.blocks.append(k)
        self.block_sizes.append(len(y))
        self.correct_chunks.append(result["correct"])
        self.broken_by_chunks.append(result["broken_by"])
        self.norm_chunks.append(result["norms"])
        self.zero_gradient_counts.extend(result["zero_gradients"])
        self.label_counts += np.bincount(y, minlength=len(self.label_counts))

    def finish(self, eps_count, attacks, minimum_norm_attacks):
        """Joins the evaluated blocks' results into per-example ones, in the order of the blocks.

        Sets `correct`, `broken_by` (per eps), `norms` (per minimum-norm attack),
        `zero_gradients` (summed per eps and attack, in the order of `attacks`), the
        data's digest `data_sha256` and the checks' sample.
        """
        self.data_sha256 = self._digest.hexdigest()
        self.sample_x, self.sample_y = np.concatenate(self._sample_x), np.concatenate(self._sample_y)
        # `evaluate_blocks` makes sure there is at least one block.
        self.correct = np.concatenate(self.correct_chunks)
        self.broken_by = [list(itertools.chain.from_iterable(rows[i] for rows in self.broken_by_chunks))
                          for i in range(eps_count)]
        self.norms = {a: np.concatenate([n[a] for n in self.norm_chunks]) for a in minimum_norm_attacks}
        self.zero_gradients = masking_checks.sum_zero_gradients(self.zero_gradient_counts, attacks)


def evaluate_blocks(run, blocks, total_blocks, state, index, count, devices, verbose, sample_size):
    """Evaluates this shard's blocks, a round of one block per device at a time; hashes all of them.

    Args:
        run: What evaluates one block: `run.block(k, x, y, state)` returns its results
            (`correct`, `broken_by`, `norms`, `zero_gradients`); `run.eps`, `run.specs`,
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
    part = BlockResults(run.num_classes, sample_size)
    own = None if total_blocks is None else len(range(index, total_blocks, count))
    bar = progress_bar(own, 0, f"{len(run.eps)} eps x [{', '.join(s.name for s in run.specs)}]: blocks of "
                       f"{run.batch_size}", verbose)
    pool = concurrent.futures.ThreadPoolExecutor(len(devices)) if len(devices) > 1 else None

    def run_round(pending):
        for (k, x, y), result in zip(pending, _evaluate_round(run, pending, state, devices, pool)):
            part.add(k, y, result)
            bar.update(1)

    try:
        pending = []
        for k, x, y in blocks:
            part.see(k, x, y)
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
    part.finish(len(run.eps), [s.name for s in run.specs], [s.name for s in run.min_specs])
    return part


def _evaluate_round(run, pending, state, devices, pool):
    """`run.block` on each pending block, one per device: in this thread, or each in a thread of `pool`."""
    if pool is None:
        with _device_scope(devices[0]):
            return [run.block(k, x, y, state) for k, x, y in pending]
    futures = [pool.submit(_on_device, device, run.block, k, x, y, state)
               for device, (k, x, y) in zip(devices, pending)]
    return [f.result() for f in futures]


def _device_scope(device):
    return tf.device(device) if device is not None else contextlib.nullcontext()


def _on_device(device, fn, *args):
    with tf.device(device):
        return fn(*args)
