"""Strict robustness evaluation: a per-example worst case over a cascade of attacks.

Every test point counts (a misclassified clean point is non-robust). For each eps,
each attack runs only on the points that are still robust, and a point counts as
broken only when this module verifies it itself: the model misclassifies the
adversarial point, which lies within eps of the original and inside the clip box.
No attack is trusted. The attacks' budgets come from `presets`, the partial results
that make a run resumable live in `state`, the checks in `masking_checks`.

The data is cut into fixed blocks of `batch_size` points and evaluated block after
block (`blocks`: streamed from a `tf.data.Dataset`, spread over a strategy's devices):
the clean prediction, then every eps and every attack of the cascade on the block's
still-robust points, as one batch seeded `seed + k`. A point's result therefore depends
only on its block, which makes a run resumable after any stage and splittable into
shards (`shard=(index, count)`) whose reports `shards.merge_shard_reports` joins into
exactly the report of the whole run.
"""
from __future__ import annotations

import functools
import hashlib
import itertools
import math
import os
import warnings

import keras
import numpy as np
import tensorflow as tf

from gfa_keras.attacks import ATTACKS, NORMS, perturbation_norms
from gfa_keras.evaluation import masking_checks
from gfa_keras.evaluation.blocks import Blocks, evaluate_blocks, strategy_devices
from gfa_keras.evaluation.presets import PRESETS, attack_budgets, resolve_attacks
from gfa_keras.evaluation.report import RobustnessReport
from gfa_keras.evaluation.shards import complete_report, record_probes, shard_report, validate_shard
from gfa_keras.evaluation.state import EvaluationState, model_digest
from gfa_keras.validation import check_choice, check_eps, check_int, check_positive_int

__all__ = ["PRESETS", "CHECK_SAMPLE_SIZE", "UNSEEDED_ATTACKS", "evaluate_robustness", "norm_slack"]

# Points used by the checks that need extra forward passes or attack runs: the first ones of the set.
CHECK_SAMPLE_SIZE = 100
# Slack on the norm bound for float32 rounding in the attacks' projections: relative to
# eps, plus a few float32 units of the largest pixel value per coordinate (summed over
# the coordinates in quadrature for L2), so a large L2 ball on a large image, or a box
# other than [0, 1], gets a slack of the size of its rounding error.
NORM_RELATIVE_SLACK = 1e-5
_FLOAT32_UNITS = 4 * float(np.finfo(np.float32).eps)
# Attacks whose randomness `seed` cannot reach: cleverhans' PGD draws its random start from
# TensorFlow's global random state, so its results depend on what ran before it in the process.
UNSEEDED_ATTACKS = ("pgd",)


def norm_slack(eps: float, norm: str, input_size: int, clip_min: float, clip_max: float) -> float:
    """How far past `eps` a perturbation may measure and still count as inside the ball."""
    per_coordinate = _FLOAT32_UNITS * max(abs(clip_min), abs(clip_max), 1.0)
    return NORM_RELATIVE_SLACK * eps + per_coordinate * (math.sqrt(input_size) if norm == "l2" else 1.0)


def evaluate_robustness(
    model,
    data,
    attacks="autoattack",
    eps=(8 / 255,),
    norm: str = "linf",
    *,
    batch_size: int = 256,
    steps: int | dict | None = None,
    restarts: int = 1,
    seed: int = 0,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    num_classes: int | None = None,
    minimum_norm_attacks=(),
    checks: bool | list = True,
    thorough: bool = False,
    state_path: str | os.PathLike | None = None,
    strategy=None,
    shard: tuple | None = None,
    verbose: int = 1,
) -> RobustnessReport:
    """Evaluates a classifier under a worst-case cascade of attacks over all points.

    For each eps the attacks run in order, each on the points still robust; a
    point is broken only if this function verifies `argmax(model(x_adv)) != y`,
    `||x_adv - x|| <= eps` (up to float32 rounding, `norm_slack`) and
    `clip_min <= x_adv <= clip_max`. Each attack gets its full budget (every option
    it declares, with the value it runs with) by name; the report records them
    (`settings["budgets"]`) and whether they are AutoAttack's standard version
    (`standard`, `standard_reasons`).

    The points are processed in fixed blocks of `batch_size` (block k: points
    `[k * batch_size, (k + 1) * batch_size)`): for each block the clean prediction,
    then every eps and attack in cascade order, each attack on the block's points still
    robust as one batch seeded `seed + k`. So a point's result depends only on its
    block: a `strategy` or a `shard` gives per-example results bit-identical to a plain
    run. The price: later attacks get smaller batches (only a block's remaining points),
    so a cascade makes more, smaller calls than one that regroups the survivors of the
    whole set; with AutoAttack, where APGD-CE runs on full blocks and breaks most points,
    this costs little.

    Args:
        model: Callable (usually a `keras.Model`) mapping a batch to logits.
        data: `(x, y)` arrays, or a `tf.data.Dataset` of `(x, y)` batches of any size,
            read block by block (never whole: data larger than memory streams). `x` in
            `[clip_min, clip_max]`, `y` integer labels.
        attacks: A preset name (`"fast"`: pgd then fgsm; `"autoattack"` or
            `"standard"`: apgd_ce, apgd_t, fab_t, square) or a list of attack names
            registered in `gfa_keras.attacks.ATTACKS` (or `AttackSpec` objects),
            run in that order.
        eps: A bound or a strictly increasing list of bounds, one cascade each.
        norm: `"linf"` or `"l2"`; every chosen attack must support it.
        batch_size: Points per block, the largest batch an attack gets.
        steps: Iterations of the white-box attacks in the bounded cascade; `None`
            keeps each attack's default (or, with the `"autoattack"` preset, AutoAttack's
            standard budget). Black-box attacks (Square counts queries) and the unbounded
            minimum-norm runs keep theirs unless a dict `{attack name: steps}` names them,
            e.g. `{"apgd_ce": 100, "square": 5000}`.
        restarts: Random restarts of every attack that has a `restarts` option.
        seed: Base seed; every attack on block `k` gets `seed + k`.
        clip_min: Lower end of the valid input box.
        clip_max: Upper end of the valid input box.
        num_classes: Number of classes, checked against the labels and the model's
            output; read from the model's output when `None`. Caps the target classes
            of APGD-T and FAB-T at `num_classes - 1`.
        minimum_norm_attacks: Names of `"minimum_norm"` attacks (e.g. `("deepfool",
            "ead")`) run without a bound on the clean-correct points; the report
            gets their per-example norms and median / mean / success rate.
        checks: True runs every gradient-masking check of
            `gfa_keras.evaluation.masking_checks` (but the `thorough` one), False none,
            a list of names from `masking_checks.CHECKS` those; their flags go in the
            report. The checks that attack or probe the model use the first
            `CHECK_SAMPLE_SIZE` points. With one eps, the accuracy-vs-eps check probes
            2x and 4x eps with a fast attack on that sample.
        thorough: Also rerun the strongest attack with twice the steps (or
            restarts) on the sample and flag a change of more than a point.
        state_path: JSON file for partial results, written after every attack on
            every block; a rerun with the same settings resumes from it (a block whose
            data changed since is an error).
        strategy: A `tf.distribute.Strategy` over local devices (e.g.
            `tf.distribute.MirroredStrategy()`): each round hands one block to each of
            its `extended.worker_devices`, run in a thread per device under
            `tf.device`. Results equal those of a run without it (for the attacks
            `seed` reaches: not `UNSEEDED_ATTACKS`, i.e. cleverhans' `pgd`).
        shard: `(index, count)`: evaluate only the blocks `k` with
            `k % count == index` and return a shard report, to be joined with the
            other shards' by `merge_shard_reports`. Every shard reads the whole data (to hash
            it and count the points) but attacks only its blocks. The merge is exact for
            every attack `seed` reaches (a warning names those it does not, `pgd`). Shard 0 also runs the
            checks on the sample and carries their results to the merge.
        verbose: 0 silent, 1 progress bars and a summary.

    Returns:
        A `RobustnessReport`; with `shard`, one over the shard's points only, with no
        flags and a `shard` field holding what `merge_shard_reports` needs.

    Raises:
        ValueError: On an invalid argument (checked before any attack runs: an
            unknown check name, `steps` for an attack without that option, a shard
            index outside `[0, count)`, ...), on invalid data (for a Dataset, when the
            block holding it is read), or when `state_path` holds a state written with
            different settings or data.

    Example:

    ```python
    report = evaluate_robustness(model, (x_test, y_test), "autoattack", eps=[0.05, 0.1])
    print(report.to_markdown())
    # The same report from two machines:
    part = evaluate_robustness(model, (x_test, y_test), "autoattack", eps=[0.05, 0.1], shard=(0, 2))
    # ... and shard=(1, 2) elsewhere, then merge_shard_reports([part, other]).
    ```
    """
    eps_list, specs, min_specs, selected, index, count, devices = _validated_arguments(
        attacks, eps, norm, minimum_norm_attacks, batch_size, restarts, steps, num_classes, seed, checks, thorough,
        verbose, shard, strategy)
    source = Blocks(data, batch_size, eps=eps_list[-1], norm=norm, clip_min=clip_min, clip_max=clip_max,
                    num_classes=num_classes)
    blocks = iter(source)
    first, num_classes = _first_block(blocks, source.y, model, num_classes)
    # The labels of a Dataset's later blocks are checked as they are read, against the model's
    # outputs: known only now, after the first block.
    source.num_classes = num_classes
    total_blocks = source.total_blocks()
    if total_blocks is not None and index >= total_blocks:
        raise ValueError(f"Shard {index} of {count} would hold no block: the data has only {total_blocks} blocks of "
                         f"{batch_size} points. Expected a shard count <= {total_blocks}. Received: shard={shard!r}")
    settings, budgets, min_budgets = _settings_and_budgets(
        attacks, specs, min_specs, eps_list, norm, steps, restarts, seed, batch_size, clip_min, clip_max, num_classes)
    count_zero_gradients = "zero_gradients" in selected
    # Hashing the weights costs time: only a saved state or a shard report needs it, and both the same.
    digest = functools.cache(lambda: model_digest(model))
    input_shape = [int(d) for d in first[1].shape[1:]]
    # The data is checked block by block against the hashes the state holds (it is never
    # read whole, so it cannot be hashed before the first attack).
    state = EvaluationState(state_path, lambda: {**settings, "model": digest(), "input_shape": input_shape,
                                                 "zero_gradient_counts": count_zero_gradients,
                                                 "shard": [index, count]})
    run = _Runner(model, norm=norm, seed=seed, clip_min=clip_min, clip_max=clip_max, batch_size=batch_size,
                  num_classes=num_classes, eps=eps_list, specs=specs, budgets=budgets, min_specs=min_specs,
                  min_budgets=min_budgets, count_zero_gradients=count_zero_gradients)
    part = evaluate_blocks(run, itertools.chain([first], blocks), total_blocks, state, index, count, devices,
                           verbose, CHECK_SAMPLE_SIZE)
    settings.update(num_points=part.total_points, checks=sorted(selected), thorough=bool(thorough))
    payload = _payload(model, part, index, count, digest() if shard is not None else None, input_shape, specs,
                       budgets, selected)
    probe = run.probe_on(part.sample_x, part.sample_y)
    name = getattr(model, "name", type(model).__name__)
    versions = _versions()
    if shard is None:
        report = complete_report(settings, name, versions, part.correct, part.broken_by, part.norms, payload, probe,
                                 selected)
    else:
        if payload["sample"] is not None:
            payload["sample"]["probes"] = record_probes(settings, name, versions, part, payload, probe, selected)
        report = shard_report(settings, name, versions, part, payload)
    if verbose:
        print(report.summary() + (f" (shard {index}/{count})" if shard is not None else ""))
    return report


def _validated_arguments(attacks, eps, norm, minimum_norm_attacks, batch_size, restarts, steps, num_classes, seed,
                         checks, thorough, verbose, shard, strategy):
    """Checks `evaluate_robustness`'s arguments but the model and the data, before anything runs.

    Warns when a sharded or multi-device run has an attack in its cascade that `seed`
    cannot reach (`UNSEEDED_ATTACKS`).

    Returns:
        `(eps_list, specs, min_specs, selected, index, count, devices)`: the bounds as
        floats, the cascade's and the minimum-norm runs' `AttackSpec`s, the names of
        the checks to run, the shard as `(index, count)` and the devices of one round.
    """
    eps_list = _validate_eps(eps)
    check_choice("norm", norm, NORMS)
    specs = resolve_attacks(attacks, norm, "attacks")
    min_specs = resolve_attacks(list(minimum_norm_attacks), norm, "minimum_norm_attacks")
    wrong_kind = [s.name for s in min_specs if s.kind != "minimum_norm"]
    if wrong_kind:
        raise ValueError(
            "minimum_norm_attacks must be attacks of kind 'minimum_norm'. Expected some of "
            f"{sorted(n for n, s in ATTACKS.items() if s.kind == 'minimum_norm')}. Received: {wrong_kind}"
        )
    check_positive_int("batch_size", batch_size)
    check_positive_int("restarts", restarts)
    if isinstance(steps, dict):
        unknown = sorted(set(steps) - {s.name for s in specs + min_specs})
        if unknown:
            raise ValueError(
                f"steps names attacks that are not run. Expected some of {[s.name for s in specs + min_specs]}. "
                f"Received: {unknown}"
            )
        for name, value in steps.items():
            check_positive_int(f"steps[{name!r}]", value)
    elif steps is not None:
        check_positive_int("steps", steps)
    if num_classes is not None:
        check_positive_int("num_classes", num_classes)
    check_int("seed", seed)
    selected = masking_checks.select_checks(checks, thorough)
    check_choice("verbose", verbose, (0, 1, 2), what="verbosity")
    index, count = validate_shard(shard)
    devices = strategy_devices(strategy)
    unseeded = [s.name for s in specs if s.name in UNSEEDED_ATTACKS]
    if unseeded and (shard is not None or len(devices) > 1):
        warnings.warn(f"{unseeded} draw their random start from TensorFlow's global random state, which seed "
                      "cannot reach: their results depend on the order of the calls, so this sharded or "
                      "multi-device run can differ from a single run on the points they attack. For an exact "
                      "merge use seeded attacks (apgd_ce, apgd_t, fab_t, square, fgsm, ...).", stacklevel=3)
    return eps_list, specs, min_specs, selected, index, count, devices


def _first_block(blocks, labels, model, num_classes):
    """Reads the first block and checks the model's output on it: `(first block, num_classes)`.

    `labels` are all the labels when the data are arrays (all checked now), else None
    (the first block's are). `num_classes` comes back as the model's number of outputs.
    """
    first = next(blocks, None)
    if first is None:
        raise ValueError("data holds no examples.")
    return first, _check_model_output(model, first[1], first[2] if labels is None else labels, num_classes)


def _settings_and_budgets(attacks, specs, min_specs, eps_list, norm, steps, restarts, seed, batch_size, clip_min,
                          clip_max, num_classes):
    """The report's settings (without the point count and the checks) and the budgets of both kinds of run."""
    preset = attacks if isinstance(attacks, str) else None
    budgets = attack_budgets(specs, preset=preset, steps=steps, restarts=restarts, num_classes=num_classes)
    min_budgets = attack_budgets(min_specs, steps=steps, restarts=restarts, num_classes=num_classes,
                                 cascade=False)
    settings = {
        "eps": eps_list,
        "norm": norm,
        "attacks": [s.name for s in specs],
        "minimum_norm_attacks": [s.name for s in min_specs],
        "budgets": {**budgets, **min_budgets},
        "seed": int(seed),
        "batch_size": int(batch_size),
        "clip_min": float(clip_min),
        "clip_max": float(clip_max),
        "num_classes": num_classes,
    }
    return settings, budgets, min_budgets


def _payload(model, part, index, count, model_sha256, input_shape, specs, budgets, selected):
    """What `complete_report` needs beyond the per-example results, and a shard report carries to the merge.

    Shard 0 (or the single run) also runs the checks that need the model on the sample
    (`part.sample_x`); the probes of a shard are added to its `"sample"` afterwards.
    """
    sample = None
    if index == 0:
        sample = {"labels": part.sample_y.tolist(),
                  "model_flags": masking_checks.model_checks(model, part.sample_x, part.sample_y, selected),
                  "probes": []}
    return {
        "index": index, "count": count, "blocks": part.blocks, "block_sizes": part.block_sizes,
        "num_blocks": part.num_blocks, "total_points": part.total_points, "data_sha256": part.data_sha256,
        "model_sha256": model_sha256, "input_shape": input_shape,
        "white_box": {s.name: bool(s.white_box) for s in specs}, "budgets": budgets,
        "label_counts": part.label_counts.tolist(), "zero_gradients": part.zero_gradients, "sample": sample,
    }


def _versions():
    try:
        from importlib.metadata import version
        gfa_version = version("gfa_keras")
    except Exception:  # an uninstalled checkout has no package metadata
        gfa_version = "unknown"
    return {"gfa_keras": gfa_version, "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__}


def _validate_eps(eps):
    values = list(eps) if isinstance(eps, (list, tuple, np.ndarray)) else [eps]
    if not values:
        raise ValueError("eps must be a number or a non-empty list of numbers. Received: eps=[]")
    values = [check_eps(e, name="eps" if len(values) == 1 else f"eps[{i}]") for i, e in enumerate(values)]
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"eps must be strictly increasing. Received: eps={eps!r}")
    return [float(e) for e in values]


def _check_model_output(model, x, y, num_classes):
    logits = tf.convert_to_tensor(model(x[:2]))
    if logits.shape.rank != 2:
        raise ValueError(
            "The model must output a [batch, num_classes] tensor of logits. "
            f"Received output shape {tuple(logits.shape)}"
        )
    outputs = int(logits.shape[-1])
    if num_classes is not None and num_classes != outputs:
        raise ValueError(f"num_classes={num_classes} does not match the model's {outputs} outputs.")
    if np.any(np.asarray(y) >= outputs):
        raise ValueError(f"Labels must be < num_classes={outputs}. Received: max(y)={int(np.max(y))}")
    return outputs


def _predict(model, x, batch_size):
    preds = [tf.argmax(model(x[s:s + batch_size]), axis=-1, output_type=tf.int32)
             for s in range(0, x.shape[0], batch_size)]
    return tf.concat(preds, axis=0).numpy()


def _verified_breaks(model, x, x_adv, y, eps, norm, clip_min, clip_max):
    """Per example: misclassified, within eps (if any), inside the box and finite."""
    flat = tf.reshape(x_adv, [tf.shape(x_adv)[0], -1])
    ok = tf.reduce_all(tf.math.is_finite(flat), axis=1)
    ok &= tf.reduce_all((flat >= clip_min) & (flat <= clip_max), axis=1)
    if eps is not None:
        ok &= perturbation_norms(x, x_adv, norm) <= eps + norm_slack(
            eps, norm, int(np.prod(x.shape[1:])), clip_min, clip_max)
    ok &= tf.argmax(model(x_adv), axis=-1, output_type=tf.int32) != y
    return ok.numpy()


class _Runner:
    """Runs the cascade on one block at a time with the attacks' budgets and verifies their output."""

    def __init__(self, model, *, norm, seed, clip_min, clip_max, batch_size, num_classes, eps, specs, budgets,
                 min_specs, min_budgets, count_zero_gradients):
        self.model, self.norm, self.seed = model, norm, seed
        self.clip_min, self.clip_max, self.batch_size = clip_min, clip_max, batch_size
        self.num_classes = num_classes
        self.specs, self.budgets, self.eps = specs, budgets, eps
        self.min_specs, self.min_budgets = min_specs, min_budgets
        # Whether to count the attacked points with a zero input gradient in the APGD stages
        # (one more gradient per block), only when the check runs.
        self.count_zero_gradients = count_zero_gradients

    def attack(self, spec, budget, x, y, eps, seed):
        """Runs one attack on one batch with its budget and returns its (unverified) output."""
        x_adv = spec.fn(self.model, x, y, eps=eps, norm=self.norm, clip_min=self.clip_min,
                        clip_max=self.clip_max, seed=seed, **budget)
        x_adv = tf.convert_to_tensor(x_adv)
        if tuple(x_adv.shape) != tuple(x.shape):
            raise ValueError(
                f"Attack {spec.name!r} returned a batch of the wrong shape. "
                f"Expected {tuple(x.shape)}. Received: {tuple(x_adv.shape)}"
            )
        return tf.cast(x_adv, tf.float32)

    def broken(self, spec, budget, x, y, eps, seed):
        """Per point of the batch `(x, y)`, whether `spec` breaks it (verified)."""
        x, y = tf.convert_to_tensor(x), tf.convert_to_tensor(y)
        x_adv = self.attack(spec, budget, x, y, eps, seed)
        return _verified_breaks(self.model, x, x_adv, y, eps, self.norm, self.clip_min, self.clip_max)

    def block(self, k, x, y, state):
        """The cascade on block `k`, resuming from (and saving every stage to) `state`.

        Returns:
            `{"correct": bool per point, "broken_by": per eps the block's row of `broken_by`,
            "norms": {minimum-norm attack: norm per point}, "zero_gradients":
            [(eps index, attack, zero, attacked) per APGD stage that attacked points]}`.
        """
        key = f"block{k}"
        record = self._block_record(k, x, y, state)

        def resumed(stage_key, run_stage, *args):
            """The stage `state` holds, or the one `run_stage(*args)` returns, saved now."""
            nonlocal record
            stage = record["stages"].get(stage_key)
            if stage is None:
                stage = run_stage(*args)
                record = {**record, "stages": {**record["stages"], stage_key: stage}}
                state.put(key, record)
            return stage

        correct = np.asarray(record["correct"], dtype=bool)
        seed = self.seed + k
        rows, zero_gradients = [], []
        for i, e in enumerate(self.eps):
            row = np.where(correct, None, "clean").astype(object)
            for spec in self.specs:
                stage = resumed(f"eps{i}/{spec.name}", self._cascade_stage, spec, e, x, y,
                                np.flatnonzero(row == None), seed)  # noqa: E711
                row[stage["broken"]] = spec.name
                if "zero" in stage and stage["attacked"]:
                    zero_gradients.append((i, spec.name, stage["zero"], stage["attacked"]))
            rows.append(row.tolist())
        norms = {}
        for spec in self.min_specs:
            stage = resumed(f"min/{spec.name}", self._minimum_norm_stage, spec, x, y, np.flatnonzero(correct), seed)
            values = np.zeros(len(y))
            # JSON has no inf: a failure is stored as None.
            values[correct] = [math.inf if v is None else v for v in stage["norms"]]
            norms[spec.name] = values
        return {"correct": correct, "broken_by": rows, "norms": norms, "zero_gradients": zero_gradients}

    def _block_record(self, k, x, y, state):
        """Block `k`'s record in `state` (checked to be of the same data), or a new one with its clean prediction."""
        key = f"block{k}"
        # Only a saved state needs the hash: it tells a resumed run that the block is the same.
        block_sha = None if state.path is None else hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()
        record = state.get(key)
        if record is not None and record["sha256"] != block_sha:
            first = k * self.batch_size
            raise ValueError(f"Block {k} of the data (points {first} to {first + len(y) - 1}) differs from the one "
                             f"the state file {state.path} was written with. Expected the same data to resume. Use "
                             "another state_path, or delete the file to start over.")
        if record is None:
            correct = _predict(self.model, x, self.batch_size) == y
            record = {"sha256": block_sha, "correct": correct.tolist(), "stages": {}}
            state.put(key, record)
        return record

    def _cascade_stage(self, spec, eps, x, y, targets, seed):
        """`spec` at `eps` on the block's points `targets`: `{"broken": indices in the block[, "zero", "attacked"]}`."""
        loss = masking_checks.ZERO_GRADIENT_LOSSES.get(spec.name) if self.count_zero_gradients else None
        stage = {"broken": []}
        if loss is not None:
            stage.update(zero=0, attacked=len(targets))
        if not len(targets):
            return stage
        xt, yt = x[targets], y[targets]
        stage["broken"] = targets[self.broken(spec, self.budgets[spec.name], xt, yt, eps, seed)].tolist()
        if loss is not None:
            stage["zero"] = int(masking_checks.zero_input_gradients(self.model, xt, yt, loss).sum())
        return stage

    def _minimum_norm_stage(self, spec, x, y, targets, seed):
        """`spec` unbounded on the block's points `targets`: `{"norms": norm per target, None where it failed}`."""
        if not len(targets):
            return {"norms": []}
        xt, yt = tf.convert_to_tensor(x[targets]), tf.convert_to_tensor(y[targets])
        x_adv = self.attack(spec, self.min_budgets[spec.name], xt, yt, None, seed)
        ok = _verified_breaks(self.model, xt, x_adv, yt, None, self.norm, self.clip_min, self.clip_max)
        norms = perturbation_norms(xt, x_adv, self.norm).numpy()
        return {"norms": [float(v) if good else None for v, good in zip(norms, ok)]}

    def standalone_accuracy(self, spec, budget, x, y, eps):
        """Accuracy of `spec` alone at `eps` on the sample `(x, y)` (misclassified clean points count)."""
        correct = np.flatnonzero(_predict(self.model, x, self.batch_size) == y)
        batches = [correct[s:s + self.batch_size] for s in range(0, len(correct), self.batch_size)]
        broken = sum(int(self.broken(spec, budget, x[batch], y[batch], eps, self.seed + b).sum())
                     for b, batch in enumerate(batches))
        return (len(correct) - broken) / len(y)

    def probe_on(self, x, y):
        """The checks' `probe(spec, eps, **overrides)` on the sample `(x, y)`.

        It returns the accuracy of the cascade attack named `spec.name` alone at `eps`,
        with its budget updated by `overrides` (`spec` may be a stand-in with a name).
        """
        by_name = {s.name: s for s in self.specs}

        def probe(spec, eps, **overrides):
            return self.standalone_accuracy(by_name[spec.name], {**self.budgets[spec.name], **overrides}, x, y, eps)

        return probe
