"""Sanity checks that catch gradient masking and other unreliable evaluations.

After "On Evaluating Adversarial Robustness" (Carlini et al., 2019) and AutoAttack's
checks. Each check is a small function returning one flag,
`{"check": name, "status": "ok" | "warn" | "fail", "reason": text}`:
"fail" where the numbers are impossible for a correct evaluation (accuracy rising
with eps, above chance at a bound that reaches every image), "warn" where they
are suspicious. Checks on numbers take accuracies; checks on a model take a small
sample of data.

`select_checks`, `model_checks` and `cascade_checks` decide which checks an
evaluation runs and on what; the attacks they need run through a `probe` the
evaluation passes in, so this module imports no attack. Every tolerance is a fraction
of the points, in [0, 1].
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from gfa_keras.threat_model import NORMS
from gfa_keras.validation import check_choice, check_number

__all__ = [
    "CHECKS",
    "SINGLE_STEP_ATTACKS",
    "ZERO_GRADIENT_LOSSES",
    "large_eps",
    "check_accuracy_decreases_with_eps",
    "check_accuracy_at_large_eps",
    "check_iterative_beats_single_step",
    "check_black_box_not_stronger",
    "check_more_iterations_change_little",
    "check_input_gradients",
    "check_outputs_are_logits",
    "check_deterministic",
    "check_zero_gradients",
    "sum_zero_gradients",
    "check_target_classes",
    "check_late_breaks",
    "zero_input_gradients",
    "select_checks",
    "model_checks",
    "cascade_checks",
    "thoroughness_check",
]

# Attacks that take one gradient step; any other white-box bounded attack is iterative.
SINGLE_STEP_ATTACKS = ("fgsm",)
# The APGD runs and the loss whose input gradient each starts from (as AutoAttack's
# check_zero_gradients, which looks at the gradient APGD computes first).
ZERO_GRADIENT_LOSSES = {"apgd_ce": "ce", "apgd_t": "dlr_targeted"}
# Attacks after APGD-T in AutoAttack's cascade that should add little.
LATE_ATTACKS = ("fab_t", "square")
# Every check an evaluation can run, by name (`checks=[...]` picks some).
CHECKS = (
    "input_gradients",
    "outputs_are_logits",
    "deterministic",
    "accuracy_decreases_with_eps",
    "accuracy_at_large_eps",
    "iterative_beats_single_step",
    "black_box_not_stronger",
    "zero_gradients",
    "target_classes",
    "late_breaks",
    "more_iterations_change_little",
)


def _flag(check, status, reason):
    return {"check": check, "status": status, "reason": reason}


def _tolerance(value):
    return check_number("tolerance", value, low=0.0, high=1.0)


def _pairs(eps, values):
    if eps is None:
        eps = list(range(len(values)))
    if len(eps) != len(values):
        raise ValueError(
            "Expected one accuracy per eps. "
            f"Received: len(eps)={len(eps)}, len(accuracies)={len(values)}"
        )
    return list(zip(eps, values))


def large_eps(norm: str, input_shape, clip_min: float = 0.0, clip_max: float = 1.0) -> float:
    """The smallest eps whose ball around any point of the box contains the box's centre.

    At this bound every input can be moved to the same image, so no classifier can
    keep more accuracy than the share of the class it gives that image.

    Args:
        norm: `"linf"` or `"l2"`.
        input_shape: Shape of one input, without the batch axis.
        clip_min: Lower end of the input box.
        clip_max: Upper end of the input box.

    Returns:
        Half the box width for Linf; that times sqrt(input size) for L2.

    Example:

    >>> large_eps("linf", (8, 8, 1))
    0.5
    """
    check_choice("norm", norm, NORMS)
    half = 0.5 * (clip_max - clip_min)
    if norm == "linf":
        return half
    return half * math.sqrt(float(np.prod(input_shape)))


def check_accuracy_decreases_with_eps(eps, accuracies, tolerance: float = 0.0) -> dict:
    """Fails if robust accuracy rises with eps: a larger ball contains every smaller one.

    Args:
        eps: Increasing perturbation bounds.
        accuracies: Robust accuracy at each eps.
        tolerance: Allowed rise, as a fraction of the points.

    Returns:
        The flag dict.

    Example:

    >>> check_accuracy_decreases_with_eps([0.1, 0.2], [0.5, 0.7])["status"]
    'fail'
    """
    tolerance = _tolerance(tolerance)
    pairs = _pairs(eps, accuracies)
    rises = [
        (e0, a0, e1, a1) for (e0, a0), (e1, a1) in zip(pairs, pairs[1:]) if a1 > a0 + tolerance
    ]
    if rises:
        e0, a0, e1, a1 = rises[0]
        return _flag(
            "accuracy_decreases_with_eps",
            "fail",
            f"Accuracy rises from {a0:.2%} at eps={e0:g} to {a1:.2%} at eps={e1:g}: the attack "
            "misses points it breaks at a smaller eps (a sign of gradient masking).",
        )
    return _flag("accuracy_decreases_with_eps", "ok", "Accuracy does not rise with eps.")


def check_accuracy_at_large_eps(accuracy: float, chance_accuracy: float, eps: float | None = None,
                                tolerance: float = 0.05) -> dict:
    """Fails if accuracy stays above chance at an eps that reaches every image (see `large_eps`).

    Args:
        accuracy: Robust accuracy at the large eps.
        chance_accuracy: Accuracy of the best constant prediction (share of the most
            frequent class among the points).
        eps: The bound used, for the message.
        tolerance: Allowed excess over chance.

    Returns:
        The flag dict.

    Example:

    >>> check_accuracy_at_large_eps(0.6, chance_accuracy=0.1, eps=0.5)["status"]
    'fail'
    """
    tolerance = _tolerance(tolerance)
    at = "" if eps is None else f" at eps={eps:g}"
    if accuracy > chance_accuracy + tolerance:
        return _flag(
            "accuracy_at_large_eps",
            "fail",
            f"Accuracy{at} is {accuracy:.2%}, above chance ({chance_accuracy:.2%}) although this "
            "bound can move every input to the same image: the attack is failing.",
        )
    return _flag("accuracy_at_large_eps", "ok", f"Accuracy{at} is {accuracy:.2%}, at most chance "
                 f"({chance_accuracy:.2%}) + {tolerance:.0%}.")


def _weaker_adds_little(check, weaker_kind, stronger, weaker, eps, accuracy_before, accuracy_after, tolerance):
    for e, before, after in zip(eps, accuracy_before, accuracy_after):
        if after < before - tolerance:
            return _flag(
                check,
                "warn",
                f"{weaker} ({weaker_kind}) lowered the accuracy from {before:.2%} after {stronger} "
                f"to {after:.2%} at eps={e:g}: the stronger attacks miss points a weaker one finds "
                "(a sign of gradient masking; try more steps, restarts or an adaptive attack).",
            )
    return _flag(check, "ok", f"{weaker} found at most {tolerance:.1%} more points than {stronger}.")


def check_iterative_beats_single_step(eps, iterative_accuracy, single_step_accuracy, *,
                                      iterative: str = "pgd", single_step: str = "fgsm",
                                      tolerance: float = 0.01) -> dict:
    """Warns if a single-step attack reaches a lower accuracy than an iterative one.

    Works on standalone accuracies, or on a cascade in which the single-step attack
    ran after the iterative one (then `single_step_accuracy` is the accuracy after both).

    Args:
        eps: The perturbation bounds.
        iterative_accuracy: Accuracy under the iterative attack, per eps.
        single_step_accuracy: Accuracy under the single-step attack, per eps.
        iterative: Name of the iterative attack, for the message.
        single_step: Name of the single-step attack, for the message.
        tolerance: Allowed difference, as a fraction of the points.

    Returns:
        The flag dict.

    Example:

    >>> check_iterative_beats_single_step([0.1], [0.4], [0.2])["status"]
    'warn'
    """
    tolerance = _tolerance(tolerance)
    _pairs(eps, iterative_accuracy)
    _pairs(eps, single_step_accuracy)
    return _weaker_adds_little("iterative_beats_single_step", "single-step", iterative, single_step,
                               eps, iterative_accuracy, single_step_accuracy, tolerance)


def check_black_box_not_stronger(eps, white_box_accuracy, black_box_accuracy, *,
                                 white_box: str = "white-box attacks", black_box: str = "square",
                                 tolerance: float = 0.002) -> dict:
    """Warns if a black-box (score-based) attack reaches a lower accuracy than the white-box ones.

    Works on standalone accuracies, or on a cascade in which the black-box attack
    ran after the white-box ones (then `black_box_accuracy` is the accuracy after all).

    Args:
        eps: The perturbation bounds.
        white_box_accuracy: Accuracy under the white-box attacks, per eps.
        black_box_accuracy: Accuracy under the black-box attack, per eps.
        white_box: Name(s) of the white-box attacks, for the message.
        black_box: Name of the black-box attack, for the message.
        tolerance: Allowed difference, as a fraction of the points; AutoAttack's
            check_square_sr uses 0.2%.

    Returns:
        The flag dict.

    Example:

    >>> check_black_box_not_stronger([0.1], [0.4], [0.399])["status"]
    'ok'
    """
    tolerance = _tolerance(tolerance)
    _pairs(eps, white_box_accuracy)
    _pairs(eps, black_box_accuracy)
    return _weaker_adds_little("black_box_not_stronger", "black-box", white_box, black_box,
                               eps, white_box_accuracy, black_box_accuracy, tolerance)


def check_more_iterations_change_little(accuracy: float, accuracy_more: float, *, attack: str = "attack",
                                        what: str = "twice the steps", tolerance: float = 0.01) -> dict:
    """Warns if running the strongest attack longer changes the accuracy by more than `tolerance`.

    Args:
        accuracy: Accuracy with the evaluation's budget.
        accuracy_more: Accuracy with the larger budget, on the same points.
        attack: The attack's name, for the message.
        what: The larger budget, for the message.
        tolerance: Allowed change, as a fraction of the points.

    Returns:
        The flag dict.

    Example:

    >>> check_more_iterations_change_little(0.40, 0.30)["status"]
    'warn'
    """
    tolerance = _tolerance(tolerance)
    if abs(accuracy_more - accuracy) > tolerance:
        return _flag(
            "more_iterations_change_little",
            "warn",
            f"{attack} with {what} changes the accuracy from {accuracy:.2%} to {accuracy_more:.2%}: "
            "the attack has not converged; raise steps or restarts.",
        )
    return _flag("more_iterations_change_little", "ok",
                 f"{attack} with {what}: {accuracy:.2%} -> {accuracy_more:.2%}.")


def check_input_gradients(model, x, y) -> dict:
    """Fails on non-finite or all-zero input gradients of the cross-entropy; warns on some zero.

    Zero gradients (rounding, `stop_gradient`, saturated softmax) starve
    gradient-based attacks and make a model look robust when it is not.

    Args:
        model: Callable mapping a batch to logits.
        x: A small batch of inputs.
        y: Integer labels of `x`.

    Returns:
        The flag dict.

    Example:

    ```python
    flag = check_input_gradients(model, x_test[:100], y_test[:100])
    ```
    """
    x = tf.convert_to_tensor(x, tf.float32)
    y = tf.convert_to_tensor(y, tf.int32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=model(x))
    grad = tape.gradient(loss, x)
    if grad is None:
        return _flag("input_gradients", "fail", "The loss has no gradient with respect to the input.")
    grad = tf.reshape(grad, [tf.shape(grad)[0], -1])
    non_finite = int(tf.reduce_sum(tf.cast(~tf.reduce_all(tf.math.is_finite(grad), axis=1), tf.int32)))
    zero = int(tf.reduce_sum(tf.cast(tf.reduce_all(grad == 0.0, axis=1), tf.int32)))
    n = int(grad.shape[0])
    if non_finite:
        return _flag("input_gradients", "fail", f"{non_finite} of {n} points have NaN or infinite input gradients.")
    if zero == n:
        return _flag("input_gradients", "fail", f"All {n} points have zero input gradients: gradient-based "
                     "attacks cannot work here (gradient masking); use an adaptive or black-box attack.")
    if zero:
        return _flag("input_gradients", "warn", f"{zero} of {n} points have zero input gradients: "
                     "gradient-based attacks are unreliable on them.")
    return _flag("input_gradients", "ok", f"Input gradients are finite and non-zero on all {n} points.")


def check_outputs_are_logits(model, x, atol: float = 1e-4) -> dict:
    """Warns if the model outputs probabilities (rows in [0, 1] summing to 1) instead of logits.

    Attack losses expect logits; a softmax output flattens them (saturation).

    Args:
        model: Callable mapping a batch to its outputs.
        x: A small batch of inputs.
        atol: Tolerance for "sums to 1" and "lies in [0, 1]".

    Returns:
        The flag dict.

    Example:

    ```python
    flag = check_outputs_are_logits(model, x_test[:100])
    ```
    """
    out = tf.convert_to_tensor(model(tf.convert_to_tensor(x, tf.float32)))
    in_unit = bool(tf.reduce_all(out >= -atol)) and bool(tf.reduce_all(out <= 1.0 + atol))
    sums_to_one = bool(tf.reduce_all(tf.abs(tf.reduce_sum(out, axis=-1) - 1.0) <= atol))
    if in_unit and sums_to_one:
        return _flag("outputs_are_logits", "warn", "The outputs lie in [0, 1] and every row sums to 1: the "
                     "model seems to end in a softmax. Evaluate the model without it (logits).")
    return _flag("outputs_are_logits", "ok", "The outputs are not probability rows.")


def check_deterministic(model, x, repeats: int = 3, atol: float = 1e-4) -> dict:
    """Fails if repeated forward passes on the same inputs disagree (a randomized model).

    Randomized defenses need an evaluation with expectation over the randomness,
    which a plain attack does not do.

    Args:
        model: Callable mapping a batch to logits.
        x: A small batch of inputs.
        repeats: Forward passes to compare.
        atol: Allowed difference between the L2-normalized output rows.

    Returns:
        The flag dict.

    Example:

    ```python
    flag = check_deterministic(model, x_test[:100])
    ```
    """
    x = tf.convert_to_tensor(x, tf.float32)
    outputs = []
    for _ in range(repeats):
        out = tf.reshape(tf.convert_to_tensor(model(x)), [tf.shape(x)[0], -1])
        outputs.append(out / (tf.norm(out, axis=1, keepdims=True) + 1e-12))
    diff = max(float(tf.reduce_max(tf.abs(o - outputs[0]))) for o in outputs[1:])
    if diff > atol:
        return _flag("deterministic", "fail", f"{repeats} forward passes on the same inputs differ by up "
                     f"to {diff:.3g}: the model is randomized (e.g. dropout or noise at inference). "
                     "Evaluate it with expectation over transformation instead.")
    return _flag("deterministic", "ok", f"{repeats} forward passes agree.")


def zero_input_gradients(model, x, y, loss: str = "ce"):
    """Per example, whether the input gradient of `loss` is exactly zero (or not finite).

    Args:
        model: Callable mapping a batch to logits.
        x: A batch of inputs.
        y: Integer labels of `x`.
        loss: `"ce"` (cross-entropy, APGD-CE's loss) or `"dlr_targeted"` (APGD-T's
            targeted DLR loss toward the top-ranked wrong class; cross-entropy with
            fewer than 4 classes, where DLR is undefined).

    Returns:
        A boolean NumPy vector.
    """
    x = tf.convert_to_tensor(x, tf.float32)
    y = tf.convert_to_tensor(y, tf.int32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = tf.cast(model(x), tf.float32)
        if loss == "dlr_targeted" and logits.shape[-1] >= 4:
            ranked = tf.sort(logits, axis=-1, direction="DESCENDING")
            true = tf.gather(logits, y, axis=1, batch_dims=1)
            others = tf.where(tf.one_hot(y, logits.shape[-1]) > 0, -np.inf, logits)
            target = tf.reduce_max(others, axis=-1)
            value = -(true - target) / (ranked[:, 0] - 0.5 * (ranked[:, 2] + ranked[:, 3]) + 1e-12)
        elif loss in ("ce", "dlr_targeted"):
            value = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
        else:
            raise ValueError(f"Unknown loss. Expected 'ce' or 'dlr_targeted'. Received: loss={loss!r}")
    grad = tape.gradient(value, x)
    if grad is None:
        return np.ones(x.shape[0], dtype=bool)
    grad = tf.reshape(grad, [tf.shape(grad)[0], -1])
    size = tf.reduce_sum(tf.abs(grad), axis=1)
    return ((size == 0.0) | ~tf.math.is_finite(size)).numpy()


def check_zero_gradients(attack: str, zero: int, attacked: int, eps: float | None = None) -> dict:
    """Warns if points handed to a gradient attack have an exactly zero input gradient.

    As AutoAttack's `check_zero_gradients`: from such a point APGD's first step goes
    nowhere, so the attack cannot find what may be there. Fails when every attacked
    point has one.

    Args:
        attack: The attack's name.
        zero: Attacked points whose gradient of the attack's loss is exactly zero.
        attacked: Points handed to the attack.
        eps: The bound, for the message.

    Returns:
        The flag dict.

    Example:

    >>> check_zero_gradients("apgd_ce", zero=3, attacked=100)["status"]
    'warn'
    """
    at = "" if eps is None else f" at eps={eps:g}"
    if zero and zero == attacked:
        return _flag("zero_gradients", "fail", f"All {attacked} points attacked by {attack}{at} have an exactly "
                     "zero input gradient of its loss: the attack cannot move them (gradient masking); use an "
                     "adaptive or black-box attack.")
    if zero:
        return _flag("zero_gradients", "warn", f"{zero} of {attacked} points attacked by {attack}{at} "
                     f"({zero / attacked:.1%}) have an exactly zero input gradient of its loss: gradient-based "
                     "attacks are unreliable on them.")
    return _flag("zero_gradients", "ok", f"No point attacked by {attack}{at} has a zero input gradient "
                 f"({attacked} points).")


def sum_zero_gradients(counts, attacks) -> list:
    """Sums the zero-gradient counts of each eps and attack, in the cascade's order.

    A run counts them per block (`check_zero_gradients` wants them per eps and attack),
    and a merge joins the totals of its shards the same way.

    Args:
        counts: `(eps index, attack, zero, attacked)` records, e.g. one per block and
            APGD stage.
        attacks: The cascade's attack names, in order.

    Returns:
        `[[eps index, attack, zero, attacked], ...]`, one per eps and attack, by eps index
        and then the attack's place in `attacks`.

    Example:

    >>> sum_zero_gradients([(0, "apgd_t", 1, 5), (0, "apgd_ce", 0, 9), (0, "apgd_t", 2, 4)], ["apgd_ce", "apgd_t"])
    [[0, 'apgd_ce', 0, 9], [0, 'apgd_t', 3, 9]]
    """
    totals = {}
    for i, attack, zero, attacked in counts:
        total = totals.setdefault((i, attack), [0, 0])
        total[0] += zero
        total[1] += attacked
    return [[i, attack, zero, attacked] for (i, attack), (zero, attacked)
            in sorted(totals.items(), key=lambda item: (item[0][0], attacks.index(item[0][1])))]


def check_target_classes(attack: str, used: int, wanted: int, num_classes: int) -> dict:
    """Warns if a targeted attack's targets are capped because the model has too few classes.

    Args:
        attack: The attack's name.
        used: Target classes it ran against.
        wanted: Target classes of AutoAttack's standard version (9).
        num_classes: The model's classes.

    Returns:
        The flag dict.

    Example:

    >>> check_target_classes("apgd_t", used=4, wanted=9, num_classes=5)["status"]
    'warn'
    """
    if num_classes - 1 < wanted:
        return _flag("target_classes", "warn", f"{attack} targets {used} classes instead of {wanted}: the model "
                     f"has only {num_classes} classes, so its targets are capped at the {num_classes - 1} others "
                     "(AutoAttack's check_n_classes warns here too).")
    return _flag("target_classes", "ok", f"{attack} targets {used} of the {num_classes - 1} other classes.")


def check_late_breaks(eps, accuracy_before, accuracy_after, *, attack: str, after: str = "apgd_t",
                      tolerance: float = 0.01) -> dict:
    """Warns if an attack run after APGD-T still breaks more than `tolerance` of the points.

    In AutoAttack's cascade FAB-T and Square usually add little once APGD-CE and
    APGD-T have run; when they add more, the gradient attacks are struggling (masking,
    too few steps).

    Args:
        eps: The perturbation bounds.
        accuracy_before: Cascade accuracy before `attack`, per eps.
        accuracy_after: Cascade accuracy after `attack`, per eps.
        attack: The late attack's name.
        after: The attack it ran after, for the message.
        tolerance: Allowed drop, as a fraction of the points.

    Returns:
        The flag dict.

    Example:

    >>> check_late_breaks([0.1], [0.40], [0.37], attack="fab_t")["status"]
    'warn'
    """
    tolerance = _tolerance(tolerance)
    for e, before, after_value in _triples(eps, accuracy_before, accuracy_after):
        if before - after_value > tolerance:
            return _flag("late_breaks", "warn", f"{attack} broke {before - after_value:.2%} of the points after "
                         f"{after} at eps={e:g} (more than {tolerance:.0%}): the gradient attacks miss points; "
                         "raise their steps or restarts, or try an adaptive attack.")
    return _flag("late_breaks", "ok", f"{attack} broke at most {tolerance:.0%} of the points after {after}.")


def _triples(eps, first, second):
    _pairs(eps, first)
    _pairs(eps, second)
    return list(zip(eps, first, second))


def select_checks(checks, thorough: bool = False) -> frozenset:
    """The names of the checks to run.

    Args:
        checks: True (every check but `more_iterations_change_little`), False (none),
            or a list of names from `CHECKS`.
        thorough: Also run `more_iterations_change_little`.

    Returns:
        A frozenset of check names.

    Raises:
        ValueError: For a name not in `CHECKS` or a value of another type.
    """
    if isinstance(checks, bool):
        chosen = set(CHECKS) - {"more_iterations_change_little"} if checks else set()
    elif isinstance(checks, (list, tuple, set, frozenset)) and all(isinstance(c, str) for c in checks):
        unknown = sorted(set(checks) - set(CHECKS))
        if unknown:
            raise ValueError(f"Unknown check names {unknown}. Expected names from {list(CHECKS)}. "
                             f"Received: checks={list(checks)!r}")
        chosen = set(checks)
    else:
        raise ValueError(f"checks must be True, False or a list of check names from {list(CHECKS)}. "
                         f"Received: checks={checks!r}")
    if thorough:
        chosen.add("more_iterations_change_little")
    return frozenset(chosen)


def not_checked(check: str, reason: str) -> dict:
    """An "ok" flag saying why a check could not run."""
    return _flag(check, "ok", "Not checked: " + reason)


def model_checks(model, x, y, selected=frozenset(CHECKS)) -> list:
    """The checks on the model itself (those in `selected`): input gradients, logits, determinism."""
    flags = []
    if "input_gradients" in selected:
        flags.append(check_input_gradients(model, x, y))
    if "outputs_are_logits" in selected:
        flags.append(check_outputs_are_logits(model, x))
    if "deterministic" in selected:
        flags.append(check_deterministic(model, x))
    return flags


def _pair_flags(report, specs, check, is_weak, is_strong, check_fn):
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
                flags.append(not_checked(check, f"{spec.name} ran before {', '.join(later)}; "
                                                "list it after them to compare."))
            continue
        before = report.robust_accuracy[names[position - 1]]
        flags.append(check_fn(report.eps, before, report.robust_accuracy[spec.name],
                              ", ".join(stronger), spec.name))
    return flags


def _chance(labels):
    return float(np.max(np.bincount(np.asarray(labels)))) / len(labels)


# Steps of the fast attack that probes larger bounds when only one eps was evaluated.
PROBE_STEPS = 20


def cascade_checks(report, specs, budgets, probe, *, labels, sample_labels, input_shape, clip_min, clip_max,
                   num_classes, zero_gradients=None, selected=frozenset(CHECKS)) -> list:
    """The checks on a cascade's results (those in `selected`).

    Args:
        report: The `RobustnessReport` of the cascade.
        specs: The cascade's `AttackSpec`s, in order.
        budgets: `{attack name: {option: value}}` as run.
        probe: `probe(spec, eps, **budget_overrides)` -> the accuracy of `spec` alone at
            `eps` on a fixed sample of the points.
        labels: Labels of all evaluated points.
        sample_labels: Labels of the probe's sample.
        input_shape: Shape of one input.
        clip_min: Lower end of the input box.
        clip_max: Upper end of the input box.
        num_classes: The model's classes.
        zero_gradients: `{(eps, attack): (zero, attacked)}` counted during the APGD runs.
        selected: Names of the checks to run.

    Returns:
        The flags.
    """
    names = [s.name for s in specs]
    flags = []
    if "accuracy_decreases_with_eps" in selected:
        flags.append(_eps_flag(report, specs, budgets, probe, len(sample_labels)))
    if "iterative_beats_single_step" in selected:
        flags += _pair_flags(
            report, specs, "iterative_beats_single_step",
            lambda s: s.name in SINGLE_STEP_ATTACKS,
            lambda s: s.white_box and s.name not in SINGLE_STEP_ATTACKS,
            lambda e, before, after, strong, weak: check_iterative_beats_single_step(
                e, before, after, iterative=strong, single_step=weak),
        )
    if "black_box_not_stronger" in selected:
        flags += _pair_flags(
            report, specs, "black_box_not_stronger",
            lambda s: not s.white_box,
            lambda s: s.white_box,
            lambda e, before, after, strong, weak: check_black_box_not_stronger(
                e, before, after, white_box=strong, black_box=weak),
        )
    if "late_breaks" in selected and "apgd_t" in names:
        for position, name in enumerate(names):
            if name in LATE_ATTACKS and position > names.index("apgd_t"):
                flags.append(check_late_breaks(report.eps, report.robust_accuracy[names[position - 1]],
                                               report.robust_accuracy[name], attack=name))
    if "zero_gradients" in selected:
        for (e, name), (zero, attacked) in (zero_gradients or {}).items():
            flags.append(check_zero_gradients(name, zero, attacked, eps=e))
    if "target_classes" in selected:
        for name in names:
            used = budgets.get(name, {}).get("num_target_classes")
            if name in ("apgd_t", "fab_t") and used is not None:
                flags.append(check_target_classes(name, used, 9, num_classes))
    if "accuracy_at_large_eps" in selected and specs:
        big = large_eps(report.norm, input_shape, clip_min, clip_max)
        reached = [(e, a) for e, a in zip(report.eps, report.worst_case_accuracy) if e >= big]
        if reached:
            flags.append(check_accuracy_at_large_eps(reached[0][1], _chance(labels), eps=reached[0][0]))
        else:
            # The evaluation did not reach that bound: probe it with the first white-box attack.
            spec = next((s for s in specs if s.white_box), specs[0])
            flag = check_accuracy_at_large_eps(probe(spec, big), _chance(sample_labels), eps=big)
            flag["reason"] += f" ({spec.name} on {len(sample_labels)} points.)"
            flags.append(flag)
    return flags


def _eps_flag(report, specs, budgets, probe, sample_size):
    """Accuracy against eps: over the evaluated bounds, or, with one bound, probed at 2x and 4x it."""
    check = "accuracy_decreases_with_eps"
    if len(report.eps) > 1:
        return check_accuracy_decreases_with_eps(report.eps, report.worst_case_accuracy)
    eps = report.eps[0]
    if not specs or eps == 0:
        return not_checked(check, "one eps, and it is 0." if specs else "no attack ran.")
    # A fast attack on a sample: the first white-box one with few steps.
    spec = next((s for s in specs if s.white_box), specs[0])
    overrides = {}
    if isinstance(budgets[spec.name].get("steps"), int) and spec.white_box:
        overrides["steps"] = min(budgets[spec.name]["steps"], PROBE_STEPS)
    bounds = [eps, 2 * eps, 4 * eps]
    flag = check_accuracy_decreases_with_eps(bounds, [probe(spec, e, **overrides) for e in bounds])
    steps = f" with {overrides['steps']} steps" if overrides else ""
    flag["reason"] += f" (one eps evaluated: {spec.name}{steps} alone on {sample_size} points at " \
                      f"{', '.join(f'{e:g}' for e in bounds)}.)"
    return flag


def thoroughness_check(report, specs, budgets, probe, sample_size: int) -> dict:
    """Reruns the white-box attack that broke most points with twice its steps (or restarts).

    Args:
        report: The `RobustnessReport` of the cascade.
        specs: The cascade's `AttackSpec`s.
        budgets: `{attack name: {option: value}}` as run.
        probe: As in `cascade_checks`.
        sample_size: Points in the probe's sample, for the message.

    Returns:
        The flag.
    """
    check = "more_iterations_change_little"
    white = [s for s in specs if s.white_box]
    if not white:
        return not_checked(check, "no white-box attack ran.")
    spec = max(white, key=lambda s: sum(by == s.name for by in report.broken_by[0]))
    budget = budgets[spec.name]
    if isinstance(budget.get("steps"), int):
        option = "steps"
    elif isinstance(budget.get("restarts"), int):
        option = "restarts"
    else:
        return not_checked(check, f"{spec.name} takes neither steps nor restarts.")
    value = budget[option]
    eps = report.eps[0]
    flag = check_more_iterations_change_little(
        probe(spec, eps), probe(spec, eps, **{option: 2 * value}), attack=spec.name,
        what=f"{2 * value} instead of {value} {option}")
    flag["reason"] += f" (eps={eps:g}, {sample_size} points.)"
    return flag
