"""Strict robustness evaluation: a per-example worst case over a cascade of attacks.

Every test point counts (a misclassified clean point is non-robust). For each eps,
each attack runs only on the points that are still robust, and a point counts as
broken only when this module verifies it itself: the model misclassifies the
adversarial point, which lies within eps of the original and inside the clip box.
No attack is trusted. Partial results can be saved after each batch and resumed.
"""
from __future__ import annotations

import datetime
import hashlib
import inspect
import json
import math
import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from gfa_keras.evaluation import masking_checks
from gfa_keras.attacks import ATTACKS, NORMS, AttackSpec, get_attack, perturbation_norms, validate_attack_inputs
from gfa_keras.evaluation.report import RobustnessReport
from gfa_keras.validation import check_choice, check_eps, check_int, check_positive_int

__all__ = ["PRESETS", "evaluate_robustness"]

# "fast" runs the iterative attack first so that the single-step one, run on what
# is left, shows whether it finds points the iterative attack missed.
PRESETS = {
    "fast": ("pgd", "fgsm"),
    "autoattack": ("apgd_ce", "apgd_t", "fab_t", "square"),
    "standard": ("apgd_ce", "apgd_t", "fab_t", "square"),
}
# Points used by the checks that need extra forward passes or attack runs.
CHECK_SAMPLE_SIZE = 100
# Slack on the norm bound for float32 rounding in the attacks' projections.
NORM_SLACK = 1e-6
_STATE_VERSION = 1


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
    checks: bool = True,
    thorough: bool = False,
    state_path: str | os.PathLike | None = None,
    verbose: int = 1,
) -> RobustnessReport:
    """Evaluates a classifier under a worst-case cascade of attacks over all points.

    For each eps the attacks run in order, each on the points still robust; a
    point is broken only if this function verifies `argmax(model(x_adv)) != y`,
    `||x_adv - x|| <= eps + 1e-6` and `clip_min <= x_adv <= clip_max`.

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
            keeps each attack's default. Black-box attacks (Square counts queries) and
            the unbounded minimum-norm runs keep their defaults unless a dict
            `{attack name: steps}` names them, e.g. `{"apgd_ce": 100, "square": 5000}`.
        restarts: Passed to attacks that take `restarts`.
        seed: Base seed; batch `b` of an attack gets `seed + b`.
        clip_min: Lower end of the valid input box.
        clip_max: Upper end of the valid input box.
        num_classes: Number of classes; read from the model's output when `None`.
        minimum_norm_attacks: Names of `"minimum_norm"` attacks (e.g. `("deepfool",
            "ead")`) run without a bound on the clean-correct points; the report
            gets their per-example norms and median / mean / success rate.
        checks: Run the gradient-masking checks of `gfa_keras.evaluation.masking_checks` and
            put their flags in the report.
        thorough: Also rerun the strongest attack with twice the steps (or
            restarts) on a sample and flag a change of more than a point.
        state_path: JSON file for partial results, written after every batch; a
            rerun with the same settings resumes from it.
        verbose: 0 silent, 1 progress bars and a summary.

    Returns:
        A `RobustnessReport`.

    Raises:
        ValueError: On an invalid argument (checked before any attack runs), or
            when `state_path` holds a state written with different settings.

    Example:

    ```python
    report = evaluate_robustness(model, (x_test, y_test), "autoattack", eps=[0.05, 0.1])
    print(report.to_markdown())
    ```
    """
    eps_list = _validate_eps(eps)
    check_choice("norm", norm, NORMS)
    specs = _resolve_attacks(attacks, norm, "attacks")
    min_specs = _resolve_attacks(list(minimum_norm_attacks), norm, "minimum_norm_attacks")
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
    check_choice("verbose", verbose, (0, 1, 2), what="verbosity")
    x, y = _read_data(data)
    x, y = validate_attack_inputs(x, y, eps=eps_list[-1], norm=norm, clip_min=clip_min, clip_max=clip_max,
                                  num_classes=num_classes)
    if x.shape[0] == 0:
        raise ValueError("data holds no examples.")
    num_classes = _check_model_output(model, x, y, num_classes)

    settings = {
        "eps": eps_list,
        "norm": norm,
        "attacks": [s.name for s in specs],
        "minimum_norm_attacks": [s.name for s in min_specs],
        "steps": steps,
        "restarts": int(restarts),
        "seed": int(seed),
        "batch_size": int(batch_size),
        "clip_min": float(clip_min),
        "clip_max": float(clip_max),
        "num_classes": num_classes,
        "num_points": int(x.shape[0]),
    }
    state = _State(state_path, lambda: {**settings, "data_sha256": _data_digest(x, y),
                                        "model": _model_digest(model)})
    settings.update(checks=bool(checks), thorough=bool(thorough))
    run = _Runner(model, x, y, norm, steps, restarts, seed, clip_min, clip_max, num_classes, batch_size, verbose)

    flags = _model_flags(model, x[:CHECK_SAMPLE_SIZE], y[:CHECK_SAMPLE_SIZE]) if checks else []
    correct = _predict(model, x, batch_size) == y.numpy()
    broken_by = []
    for i, e in enumerate(eps_list):
        row = np.where(correct, None, "clean").astype(object)
        for spec in specs:
            targets = np.flatnonzero(row == None)  # noqa: E711 (elementwise on an object array)
            broken = run.cascade_stage(spec, e, targets, state, f"eps{i}/{spec.name}")
            row[broken] = spec.name
        broken_by.append(row.tolist())
    minimum_norm = {}
    for spec in min_specs:
        norms = np.zeros(x.shape[0])
        norms[correct] = run.minimum_norm_stage(spec, np.flatnonzero(correct), state, f"min/{spec.name}")
        minimum_norm[spec.name] = _norm_statistics(norms, correct)

    report = _build_report(correct, eps_list, norm, specs, broken_by, minimum_norm, settings, model)
    if checks:
        report.flags = flags + _result_flags(report, specs, run, y)
        if thorough:
            report.flags.append(_thoroughness_flag(report, specs, run))
    if verbose:
        print(report.summary())
    return report


def _validate_eps(eps):
    values = list(eps) if isinstance(eps, (list, tuple, np.ndarray)) else [eps]
    if not values:
        raise ValueError("eps must be a number or a non-empty list of numbers. Received: eps=[]")
    values = [check_eps(e, name="eps" if len(values) == 1 else f"eps[{i}]") for i, e in enumerate(values)]
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"eps must be strictly increasing. Received: eps={eps!r}")
    return [float(e) for e in values]


def _resolve_attacks(attacks, norm, arg_name):
    if isinstance(attacks, str):
        if attacks not in PRESETS:
            known = sorted(PRESETS) + sorted(ATTACKS)
            raise ValueError(
                f"Unknown attack preset. Expected a preset in {sorted(PRESETS)} or a list of attack "
                f"names from {sorted(ATTACKS)}. Received: {arg_name}={attacks!r}. Known names: {known}"
            )
        attacks = PRESETS[attacks]
    unknown = [a for a in attacks if not isinstance(a, AttackSpec) and a not in ATTACKS]
    if unknown:
        raise ValueError(
            f"Unknown attack names {unknown}. Expected names from {sorted(ATTACKS)} "
            f"or a preset in {sorted(PRESETS)}. Received: {arg_name}={list(attacks)!r}"
        )
    specs = [get_attack(a) for a in attacks]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"Each attack may appear once. Received: {arg_name}={names}")
    unsupported = [s.name for s in specs if norm not in s.norms]
    if unsupported:
        raise ValueError(
            f"Attacks {unsupported} do not support norm={norm!r}. Supported norms: "
            + ", ".join(f"{s.name}: {list(s.norms)}" for s in specs if s.name in unsupported)
        )
    return specs


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


def _data_digest(x, y):
    h = hashlib.sha256(x.numpy().tobytes())
    h.update(y.numpy().tobytes())
    return h.hexdigest()


def _model_digest(model):
    h = hashlib.sha256(str(getattr(model, "name", type(model).__name__)).encode())
    for w in getattr(model, "weights", []):
        h.update(np.asarray(keras.ops.convert_to_numpy(w)).tobytes())
    return h.hexdigest()


def _verified_breaks(model, x, x_adv, y, eps, norm, clip_min, clip_max):
    """Per example: misclassified, within eps (if any), inside the box and finite."""
    flat = tf.reshape(x_adv, [tf.shape(x_adv)[0], -1])
    ok = tf.reduce_all(tf.math.is_finite(flat), axis=1)
    ok &= tf.reduce_all((flat >= clip_min) & (flat <= clip_max), axis=1)
    if eps is not None:
        ok &= perturbation_norms(x, x_adv, norm) <= eps + NORM_SLACK
    ok &= tf.argmax(model(x_adv), axis=-1, output_type=tf.int32) != y
    return ok.numpy()


class _Runner:
    """Runs attacks batch by batch with the evaluation's settings and verifies their output."""

    def __init__(self, model, x, y, norm, steps, restarts, seed, clip_min, clip_max, num_classes,
                 batch_size, verbose):
        self.model, self.x, self.y, self.norm = model, x, y, norm
        self.steps, self.restarts, self.seed = steps, restarts, seed
        self.clip_min, self.clip_max, self.num_classes = clip_min, clip_max, num_classes
        self.batch_size, self.verbose = batch_size, verbose

    def steps_for(self, spec, cascade=True):
        """The evaluation's step budget for `spec` (None: the attack's default).

        A dict names attacks explicitly. An int applies to the white-box attacks of the
        bounded cascade only: black-box attacks count queries, and the unbounded
        minimum-norm runs need their own iterations to converge."""
        if isinstance(self.steps, dict):
            return self.steps.get(spec.name)
        return self.steps if cascade and spec.white_box else None

    def attack(self, spec, x, y, eps, seed, steps=None, restarts=None, cascade=True):
        """Runs one attack on one batch and returns its (unverified) output."""
        params = inspect.signature(spec.fn).parameters
        options = {
            "steps": steps or self.steps_for(spec, cascade),
            "restarts": restarts or self.restarts,
            "num_classes": self.num_classes,
            "seed": seed,
        }
        kwargs = {k: v for k, v in options.items() if k in params and v is not None}
        x_adv = spec.fn(self.model, x, y, eps=eps, norm=self.norm, clip_min=self.clip_min,
                        clip_max=self.clip_max, **kwargs)
        x_adv = tf.convert_to_tensor(x_adv)
        if tuple(x_adv.shape) != tuple(x.shape):
            raise ValueError(
                f"Attack {spec.name!r} returned a batch of the wrong shape. "
                f"Expected {tuple(x.shape)}. Received: {tuple(x_adv.shape)}"
            )
        return tf.cast(x_adv, tf.float32)

    def broken(self, spec, indices, eps, seed, **budget):
        """Indices among `indices` that `spec` breaks, verified."""
        x, y = tf.gather(self.x, indices), tf.gather(self.y, indices)
        x_adv = self.attack(spec, x, y, eps, seed, **budget)
        return indices[_verified_breaks(self.model, x, x_adv, y, eps, self.norm, self.clip_min, self.clip_max)]

    def _batches(self, indices):
        return [indices[s:s + self.batch_size] for s in range(0, len(indices), self.batch_size)]

    def cascade_stage(self, spec, eps, targets, state, key):
        """Runs `spec` at `eps` on `targets`, resuming from `state`; returns the broken indices."""
        batches = self._batches(targets)
        stage = state.get(key, {"batches_done": 0, "broken": []})
        bar = _progress(len(batches), stage["batches_done"], f"eps={eps:g} {spec.name}", self.verbose)
        for b in range(stage["batches_done"], len(batches)):
            broken = self.broken(spec, batches[b], eps, self.seed + b)
            stage = {"batches_done": b + 1, "broken": stage["broken"] + broken.tolist()}
            state.put(key, stage)
            bar.update(1)
        bar.close()
        return np.asarray(stage["broken"], dtype=np.int64)

    def minimum_norm_stage(self, spec, targets, state, key):
        """Runs `spec` unbounded on `targets`; returns their norms (inf where it failed)."""
        batches = self._batches(targets)
        stage = state.get(key, {"batches_done": 0, "norms": []})
        bar = _progress(len(batches), stage["batches_done"], f"{spec.name} (minimum norm)", self.verbose)
        for b in range(stage["batches_done"], len(batches)):
            x, y = tf.gather(self.x, batches[b]), tf.gather(self.y, batches[b])
            x_adv = self.attack(spec, x, y, None, self.seed + b, cascade=False)
            ok = _verified_breaks(self.model, x, x_adv, y, None, self.norm, self.clip_min, self.clip_max)
            norms = np.where(ok, perturbation_norms(x, x_adv, self.norm).numpy(), np.inf)
            # JSON has no inf: a failure is stored as None.
            stage = {"batches_done": b + 1,
                     "norms": stage["norms"] + [None if math.isinf(v) else float(v) for v in norms]}
            state.put(key, stage)
            bar.update(1)
        bar.close()
        return np.array([math.inf if v is None else v for v in stage["norms"]], dtype=np.float64)


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


def _progress(total, initial, description, verbose):
    """A tqdm bar when tqdm is installed, else a Keras Progbar; a no-op when silent."""
    if not verbose or total == 0:
        return _SilentBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _KerasBar(total, initial, description, verbose)
    return tqdm(total=total, initial=initial, desc=description, unit="batch", leave=True)


class _State:
    """Partial results in a JSON file, rewritten atomically after every batch."""

    def __init__(self, path, make_fingerprint):
        self.path = None if path is None else os.fspath(path)
        self.data = {"version": _STATE_VERSION, "fingerprint": None, "stages": {}}
        if self.path is None:
            return  # nothing to save or compare: skip hashing the data and weights
        fingerprint = json.loads(json.dumps(make_fingerprint()))
        self.data["fingerprint"] = fingerprint
        if not os.path.exists(self.path):
            return
        with open(self.path, encoding="utf-8") as f:
            saved = json.load(f)
        old = saved.get("fingerprint", {})
        differ = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
        if saved.get("version") != _STATE_VERSION or differ:
            raise ValueError(
                f"The state file {self.path} was written by an evaluation with different settings "
                f"({', '.join(f'{k}: {old.get(k)!r} there, {fingerprint.get(k)!r} now' for k in differ)}). "
                "Expected the same model, data and settings to resume. Use another state_path, "
                "or delete the file to start over."
            )
        self.data = saved

    def get(self, key, default):
        return self.data["stages"].get(key, default)

    def put(self, key, value):
        self.data["stages"][key] = value
        if self.path is None:
            return
        folder = os.path.dirname(os.path.abspath(self.path))
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".robustness_state_", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self.data, f)
        os.replace(tmp, self.path)


def _norm_statistics(norms, correct):
    broken = np.isfinite(norms) & correct
    return {
        "median": float(np.median(norms)),
        "mean": float(np.mean(norms[broken])) if broken.any() else None,
        "success_rate": float(broken.sum() / correct.sum()) if correct.any() else None,
        "norms": norms.tolist(),
    }


def _build_report(correct, eps_list, norm, specs, broken_by, minimum_norm, settings, model):
    names = [s.name for s in specs]
    robust_accuracy = {n: [] for n in names}
    attack_accuracy = {n: [] for n in names}
    for row in broken_by:
        row = np.asarray(row, dtype=object)
        for position, name in enumerate(names):
            earlier = ["clean", *names[:position]]
            attacked = sum(by not in earlier for by in row)
            broken = sum(by == name for by in row)
            robust_accuracy[name].append((attacked - broken) / row.size)
            attack_accuracy[name].append(None if attacked == 0 else 1.0 - broken / attacked)
    try:
        from importlib.metadata import version as _version
        gfa_version = _version("gfa_keras")
    except Exception:  # an uninstalled checkout has no package metadata
        gfa_version = "unknown"
    settings = {
        **settings,
        "model_name": str(getattr(model, "name", type(model).__name__)),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"gfa_keras": gfa_version, "tensorflow": tf.__version__, "keras": keras.__version__,
                     "numpy": np.__version__},
    }
    return RobustnessReport(
        clean_accuracy=float(np.mean(correct)),
        eps=list(eps_list),
        norm=norm,
        attacks=names,
        robust_accuracy={n: [float(a) for a in v] for n, v in robust_accuracy.items()},
        attack_accuracy=attack_accuracy,
        worst_case_accuracy=[float(np.mean([b is None for b in row])) for row in broken_by],
        broken_by=broken_by,
        minimum_norm=minimum_norm,
        settings=settings,
    )


def _model_flags(model, x, y):
    return [
        masking_checks.check_input_gradients(model, x, y),
        masking_checks.check_outputs_are_logits(model, x),
        masking_checks.check_deterministic(model, x),
    ]


def _not_checked(check, reason):
    return {"check": check, "status": "ok", "reason": "Not checked: " + reason}


def _pair_flag(report, specs, check, is_weak, is_strong, check_fn):
    """Flags for attacks that should add little after stronger ones in the cascade."""
    names = [s.name for s in specs]
    flags = []
    for position, spec in enumerate(specs):
        if not is_weak(spec):
            continue
        stronger = [s.name for s in specs[:position] if is_strong(s)]
        if not stronger:
            later = [s.name for s in specs[position + 1:] if is_strong(s)]
            if later:
                flags.append(_not_checked(check, f"{spec.name} ran before {', '.join(later)}; "
                                                 "list it after them to compare."))
            continue
        before = report.robust_accuracy[names[position - 1]]
        flags.append(check_fn(report.eps, before, report.robust_accuracy[spec.name],
                              ", ".join(stronger), spec.name))
    return flags


def _result_flags(report, specs, run, y):
    flags = [masking_checks.check_accuracy_decreases_with_eps(report.eps, report.worst_case_accuracy)]
    flags += _pair_flag(
        report, specs, "iterative_beats_single_step",
        lambda s: s.name in masking_checks.SINGLE_STEP_ATTACKS,
        lambda s: s.white_box and s.name not in masking_checks.SINGLE_STEP_ATTACKS,
        lambda e, before, after, strong, weak: masking_checks.check_iterative_beats_single_step(
            e, before, after, iterative=strong, single_step=weak),
    )
    flags += _pair_flag(
        report, specs, "black_box_not_stronger",
        lambda s: not s.white_box,
        lambda s: s.white_box,
        lambda e, before, after, strong, weak: masking_checks.check_black_box_not_stronger(
            e, before, after, white_box=strong, black_box=weak),
    )
    if specs:
        flags.append(_large_eps_flag(report, specs, run, y))
    return flags


def _chance(y):
    return float(np.max(np.bincount(np.asarray(y)))) / len(y)


def _large_eps_flag(report, specs, run, y):
    big = masking_checks.large_eps(report.norm, run.x.shape[1:], run.clip_min, run.clip_max)
    for e, accuracy in zip(report.eps, report.worst_case_accuracy):
        if e >= big:
            return masking_checks.check_accuracy_at_large_eps(accuracy, _chance(y.numpy()), eps=e)
    # The evaluation did not reach that bound: probe it with the first white-box attack on a sample.
    spec = next((s for s in specs if s.white_box), specs[0])
    sample = np.arange(min(CHECK_SAMPLE_SIZE, run.x.shape[0]))
    accuracy = _standalone_accuracy(run, spec, sample, big)
    flag = masking_checks.check_accuracy_at_large_eps(accuracy, _chance(y.numpy()[sample]), eps=big)
    flag["reason"] += f" ({spec.name} on {len(sample)} points.)"
    return flag


def _standalone_accuracy(run, spec, sample, eps, **budget):
    correct = _predict(run.model, tf.gather(run.x, sample), run.batch_size) == run.y.numpy()[sample]
    targets = sample[correct]
    broken = 0
    for b, batch in enumerate(run._batches(targets)):
        broken += len(run.broken(spec, batch, eps, run.seed + b, **budget))
    return (int(correct.sum()) - broken) / len(sample)


def _thoroughness_flag(report, specs, run):
    white = [s for s in specs if s.white_box]
    if not white:
        return _not_checked("more_iterations_change_little", "no white-box attack ran.")
    broken_first_eps = report.broken_by[0]
    spec = max(white, key=lambda s: sum(by == s.name for by in broken_first_eps))
    params = inspect.signature(spec.fn).parameters
    if "steps" in params:
        steps = run.steps_for(spec) or params["steps"].default
        if not isinstance(steps, int):
            return _not_checked("more_iterations_change_little", f"{spec.name} has no default steps.")
        budget, more, what = {"steps": steps}, {"steps": 2 * steps}, f"{2 * steps} instead of {steps} steps"
    elif "restarts" in params:
        budget, more = {"restarts": run.restarts}, {"restarts": 2 * run.restarts}
        what = f"{2 * run.restarts} instead of {run.restarts} restarts"
    else:
        return _not_checked("more_iterations_change_little", f"{spec.name} takes neither steps nor restarts.")
    sample = np.arange(min(CHECK_SAMPLE_SIZE, run.x.shape[0]))
    eps = report.eps[0]
    accuracy = _standalone_accuracy(run, spec, sample, eps, **budget)
    accuracy_more = _standalone_accuracy(run, spec, sample, eps, **more)
    flag = masking_checks.check_more_iterations_change_little(accuracy, accuracy_more, attack=spec.name,
                                                              what=what)
    flag["reason"] += f" (eps={eps:g}, {len(sample)} points.)"
    return flag
