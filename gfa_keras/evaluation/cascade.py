"""Strict robustness evaluation: a per-example worst case over a cascade of attacks.

Every test point counts (a misclassified clean point is non-robust). For each eps,
each attack runs only on the points that are still robust, and a point counts as
broken only when this module verifies it itself: the model misclassifies the
adversarial point, which lies within eps of the original and inside the clip box.
No attack is trusted. The attacks' budgets come from `presets`, the partial results
that make a run resumable live in `state`, the checks in `masking_checks`.
"""
from __future__ import annotations

import math
import os

import keras
import numpy as np
import tensorflow as tf

from gfa_keras.attacks import ATTACKS, NORMS, perturbation_norms, validate_attack_inputs
from gfa_keras.evaluation import masking_checks
from gfa_keras.evaluation.presets import PRESETS, attack_budgets, resolve_attacks, standard_reasons
from gfa_keras.evaluation.progress import progress_bar
from gfa_keras.evaluation.report import RobustnessReport, build_report, norm_statistics
from gfa_keras.evaluation.state import EvaluationState, data_digest, model_digest
from gfa_keras.validation import check_choice, check_eps, check_int, check_positive_int

__all__ = ["PRESETS", "evaluate_robustness"]

# Points used by the checks that need extra forward passes or attack runs.
CHECK_SAMPLE_SIZE = 100
# Slack on the norm bound for float32 rounding in the attacks' projections: relative to
# eps, plus a few float32 units of the largest pixel value per coordinate (summed over
# the coordinates in quadrature for L2), so a large L2 ball on a large image, or a box
# other than [0, 1], gets a slack of the size of its rounding error.
NORM_RELATIVE_SLACK = 1e-5
_FLOAT32_UNITS = 4 * float(np.finfo(np.float32).eps)


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

    Args:
        model: Callable (usually a `keras.Model`) mapping a batch to logits.
        data: `(x, y)` arrays, or a `tf.data.Dataset` of `(x, y)` batches (read
            into memory once). `x` in `[clip_min, clip_max]`, `y` integer labels.
        attacks: A preset name (`"fast"`: pgd then fgsm; `"autoattack"` or
            `"standard"`: apgd_ce, apgd_t, fab_t, square) or a list of attack names
            registered in `gfa_keras.attacks.ATTACKS` (or `AttackSpec` objects),
            run in that order.
        eps: A bound or a strictly increasing list of bounds, one cascade each.
        norm: `"linf"` or `"l2"`; every chosen attack must support it.
        batch_size: Points per attack call.
        steps: Iterations of the white-box attacks in the bounded cascade; `None`
            keeps each attack's default (or, with the `"autoattack"` preset, AutoAttack's
            standard budget). Black-box attacks (Square counts queries) and the unbounded
            minimum-norm runs keep theirs unless a dict `{attack name: steps}` names them,
            e.g. `{"apgd_ce": 100, "square": 5000}`.
        restarts: Random restarts of every attack that has a `restarts` option.
        seed: Base seed; batch `b` of an attack gets `seed + b`.
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
            report. With one eps, the accuracy-vs-eps check probes 2x and 4x eps
            with a fast attack on a sample.
        thorough: Also rerun the strongest attack with twice the steps (or
            restarts) on a sample and flag a change of more than a point.
        state_path: JSON file for partial results, written after every batch; a
            rerun with the same settings resumes from it.
        verbose: 0 silent, 1 progress bars and a summary.

    Returns:
        A `RobustnessReport`.

    Raises:
        ValueError: On an invalid argument (checked before any attack runs: an
            unknown check name, `steps` for an attack without that option, ...), or
            when `state_path` holds a state written with different settings.

    Example:

    ```python
    report = evaluate_robustness(model, (x_test, y_test), "autoattack", eps=[0.05, 0.1])
    print(report.to_markdown())
    ```
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
    x, y = _read_data(data)
    x, y = validate_attack_inputs(x, y, eps=eps_list[-1], norm=norm, clip_min=clip_min, clip_max=clip_max,
                                  num_classes=num_classes)
    if x.shape[0] == 0:
        raise ValueError("data holds no examples.")
    num_classes = _check_model_output(model, x, y, num_classes)
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
        "num_points": int(x.shape[0]),
    }
    count_zero_gradients = "zero_gradients" in selected
    state = EvaluationState(state_path, lambda: {**settings, "data_sha256": data_digest(x, y),
                                                 "model": model_digest(model),
                                                 "zero_gradient_counts": count_zero_gradients})
    settings.update(checks=sorted(selected), thorough=bool(thorough))
    run = _Runner(model, x, y, norm, seed, clip_min, clip_max, batch_size, verbose, count_zero_gradients)

    flags = masking_checks.model_checks(model, x[:CHECK_SAMPLE_SIZE], y[:CHECK_SAMPLE_SIZE], selected)
    correct = _predict(model, x, batch_size) == y.numpy()
    broken_by = []
    for i, e in enumerate(eps_list):
        row = np.where(correct, None, "clean").astype(object)
        for spec in specs:
            targets = np.flatnonzero(row == None)  # noqa: E711 (elementwise on an object array)
            broken = run.cascade_stage(spec, budgets[spec.name], e, targets, state, f"eps{i}/{spec.name}")
            row[broken] = spec.name
        broken_by.append(row.tolist())
    minimum_norm = {}
    for spec in min_specs:
        norms = np.zeros(x.shape[0])
        norms[correct] = run.minimum_norm_stage(spec, min_budgets[spec.name], np.flatnonzero(correct), state,
                                                f"min/{spec.name}")
        minimum_norm[spec.name] = norm_statistics(norms, correct)

    report = build_report(correct, eps_list, norm, [s.name for s in specs], broken_by, minimum_norm, settings,
                          getattr(model, "name", type(model).__name__), _versions())
    report.standard_reasons = standard_reasons(report.attacks, budgets, norm, num_classes)
    report.standard = not report.standard_reasons
    sample = np.arange(min(CHECK_SAMPLE_SIZE, x.shape[0]))

    def probe(spec, eps, **overrides):
        return run.standalone_accuracy(spec, {**budgets[spec.name], **overrides}, sample, eps)

    report.flags = flags + masking_checks.cascade_checks(
        report, specs, budgets, probe, labels=y.numpy(), sample_labels=y.numpy()[sample], input_shape=x.shape[1:],
        clip_min=clip_min, clip_max=clip_max, num_classes=num_classes, zero_gradients=run.zero_gradients,
        selected=selected)
    if "more_iterations_change_little" in selected:
        report.flags.append(masking_checks.thoroughness_check(report, specs, budgets, probe, len(sample)))
    if verbose:
        print(report.summary())
    return report


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


def _read_data(data):
    if isinstance(data, tf.data.Dataset):
        xs, ys = [], []
        for element in data:
            if not isinstance(element, (tuple, list)) or len(element) != 2:
                raise ValueError(
                    "A tf.data.Dataset passed as data must yield (x, y) batches. "
                    f"Received an element of type {type(element).__name__}"
                )
            xs.append(np.asarray(element[0]))
            ys.append(np.asarray(element[1]))
        if not xs:
            raise ValueError("data holds no examples.")
        return np.concatenate(xs), np.concatenate(ys)
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError(
            "data must be an (x, y) pair of arrays or a tf.data.Dataset of (x, y) batches. "
            f"Received: data of type {type(data).__name__}"
        )
    return data


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
    if bool(tf.reduce_any(y >= outputs)):
        raise ValueError(f"Labels must be < num_classes={outputs}. Received: max(y)={int(tf.reduce_max(y))}")
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
    """Runs attacks batch by batch with their budgets and verifies their output."""

    def __init__(self, model, x, y, norm, seed, clip_min, clip_max, batch_size, verbose, count_zero_gradients):
        self.model, self.x, self.y, self.norm, self.seed = model, x, y, norm, seed
        self.clip_min, self.clip_max = clip_min, clip_max
        self.batch_size, self.verbose = batch_size, verbose
        # {(eps, attack): (points with a zero input gradient, points attacked)} of the APGD runs,
        # counted only when the check runs (one more gradient per batch).
        self.count_zero_gradients = count_zero_gradients
        self.zero_gradients = {}

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

    def broken(self, spec, budget, indices, eps, seed):
        """Indices among `indices` that `spec` breaks, verified."""
        x, y = tf.gather(self.x, indices), tf.gather(self.y, indices)
        x_adv = self.attack(spec, budget, x, y, eps, seed)
        return indices[_verified_breaks(self.model, x, x_adv, y, eps, self.norm, self.clip_min, self.clip_max)]

    def batches(self, indices):
        return [indices[s:s + self.batch_size] for s in range(0, len(indices), self.batch_size)]

    def cascade_stage(self, spec, budget, eps, targets, state, key):
        """Runs `spec` at `eps` on `targets`, resuming from `state`; returns the broken indices."""
        batches = self.batches(targets)
        stage = state.get(key, {"batches_done": 0, "broken": [], "zero_gradients": 0})
        loss = masking_checks.ZERO_GRADIENT_LOSSES.get(spec.name) if self.count_zero_gradients else None
        bar = progress_bar(len(batches), stage["batches_done"], f"eps={eps:g} {spec.name}", self.verbose)
        for b in range(stage["batches_done"], len(batches)):
            broken = self.broken(spec, budget, batches[b], eps, self.seed + b)
            zero = 0
            if loss is not None:
                x, y = tf.gather(self.x, batches[b]), tf.gather(self.y, batches[b])
                zero = int(masking_checks.zero_input_gradients(self.model, x, y, loss).sum())
            stage = {"batches_done": b + 1, "broken": stage["broken"] + broken.tolist(),
                     "zero_gradients": stage["zero_gradients"] + zero}
            state.put(key, stage)
            bar.update(1)
        bar.close()
        if loss is not None and len(targets):
            self.zero_gradients[(eps, spec.name)] = (stage["zero_gradients"], len(targets))
        return np.asarray(stage["broken"], dtype=np.int64)

    def minimum_norm_stage(self, spec, budget, targets, state, key):
        """Runs `spec` unbounded on `targets`; returns their norms (inf where it failed)."""
        batches = self.batches(targets)
        stage = state.get(key, {"batches_done": 0, "norms": []})
        bar = progress_bar(len(batches), stage["batches_done"], f"{spec.name} (minimum norm)", self.verbose)
        for b in range(stage["batches_done"], len(batches)):
            x, y = tf.gather(self.x, batches[b]), tf.gather(self.y, batches[b])
            x_adv = self.attack(spec, budget, x, y, None, self.seed + b)
            ok = _verified_breaks(self.model, x, x_adv, y, None, self.norm, self.clip_min, self.clip_max)
            norms = np.where(ok, perturbation_norms(x, x_adv, self.norm).numpy(), np.inf)
            # JSON has no inf: a failure is stored as None.
            stage = {"batches_done": b + 1,
                     "norms": stage["norms"] + [None if math.isinf(v) else float(v) for v in norms]}
            state.put(key, stage)
            bar.update(1)
        bar.close()
        return np.array([math.inf if v is None else v for v in stage["norms"]], dtype=np.float64)

    def standalone_accuracy(self, spec, budget, sample, eps):
        """Accuracy of `spec` alone at `eps` on the points `sample` (misclassified clean points count)."""
        correct = _predict(self.model, tf.gather(self.x, sample), self.batch_size) == self.y.numpy()[sample]
        broken = sum(len(self.broken(spec, budget, batch, eps, self.seed + b))
                     for b, batch in enumerate(self.batches(sample[correct])))
        return (int(correct.sum()) - broken) / len(sample)
