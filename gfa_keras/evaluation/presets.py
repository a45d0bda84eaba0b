"""Attack presets and the budget every attack of an evaluation runs with.

A budget is the full set of an attack's own options (`steps`, `restarts`, `p_init`,
...) with the value it runs with, passed to the attack by name and recorded in the
report. It starts from the attack's declared defaults, takes the preset's settings
(AutoAttack's standard version for `"autoattack"` / `"standard"`), then the
evaluation's `steps` / `restarts`. An override naming an option the attack does not
have is an error, never silently dropped.

`standard_reasons` compares what ran with AutoAttack's standard version
(fra31/auto-attack, `autoattack/autoattack.py`, `set_version("standard")`).
"""
from __future__ import annotations

import inspect

from gfa_keras.attacks import ATTACKS, AttackSpec, get_attack

__all__ = [
    "PRESETS",
    "AUTOATTACK_STANDARD",
    "STANDARD_PRESETS",
    "resolve_attacks",
    "declared_options",
    "attack_budgets",
    "standard_reasons",
]

# "fast" runs the iterative attack first so that the single-step one, run on what
# is left, shows whether it finds points the iterative attack missed.
PRESETS = {
    "fast": ("pgd", "fgsm"),
    "autoattack": ("apgd_ce", "apgd_t", "fab_t", "square"),
    "standard": ("apgd_ce", "apgd_t", "fab_t", "square"),
}
STANDARD_PRESETS = ("autoattack", "standard")

# AutoAttack's standard version for Linf and L2, option by option (APGD's rho=0.75 and
# eot_iter=1 are fixed inside gfa_keras' APGD). Square counts queries in `steps`.
AUTOATTACK_STANDARD = {
    "apgd_ce": {"steps": 100, "restarts": 1},
    "apgd_t": {"steps": 100, "restarts": 1, "num_target_classes": 9},
    "fab_t": {"steps": 100, "restarts": 1, "num_target_classes": 9, "alpha_max": 0.1, "eta": 1.05, "beta": 0.9},
    "square": {"steps": 5000, "p_init": 0.8, "rescale_schedule": False},
}

# Arguments of the uniform attack signature that the evaluation sets itself.
_THREAT_MODEL_ARGS = ("eps", "norm", "clip_min", "clip_max", "seed", "targets")
# Attacks whose targets are the top-ranked wrong classes: at most num_classes - 1 of them.
_TOP_CLASS_TARGETED = ("apgd_t", "fab_t")


def resolve_attacks(attacks, norm: str, arg_name: str = "attacks") -> list[AttackSpec]:
    """The `AttackSpec`s of a preset name or a list of names / specs, checked against `norm`."""
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


def declared_options(spec: AttackSpec) -> dict:
    """The attack's own keyword options and their defaults (the threat-model arguments excluded)."""
    options = {}
    for name, parameter in inspect.signature(spec.fn).parameters.items():
        if name in _THREAT_MODEL_ARGS or parameter.default is inspect.Parameter.empty:
            continue
        if parameter.kind in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL):
            continue
        options[name] = parameter.default
    return options


def attack_budgets(specs, *, preset=None, steps=None, restarts=None, num_classes=None, cascade=True):
    """Per attack, the options it runs with.

    Args:
        specs: The attacks.
        preset: The preset name the attacks came from, or None; a standard preset
            applies `AUTOATTACK_STANDARD`.
        steps: None, an int for the white-box attacks of the bounded cascade, or a dict
            `{attack name: steps}`.
        restarts: None, or an int for every attack that takes `restarts`.
        num_classes: The model's classes; caps the top-class targets of APGD-T / FAB-T.
        cascade: False for the unbounded minimum-norm runs (an int `steps` skips them).

    Returns:
        `{attack name: {option: value}}`.

    Raises:
        ValueError: If `steps` names an attack that takes no `steps`.
    """
    budgets = {}
    for spec in specs:
        budget = declared_options(spec)
        if preset in STANDARD_PRESETS:
            budget.update({k: v for k, v in AUTOATTACK_STANDARD.get(spec.name, {}).items() if k in budget})
        if isinstance(steps, dict):
            if spec.name in steps:
                if "steps" not in budget:
                    raise ValueError(f"steps names {spec.name!r}, which takes no steps option. "
                                     f"Its options: {sorted(budget)}")
                budget["steps"] = int(steps[spec.name])
        elif steps is not None and cascade and spec.white_box and "steps" in budget:
            budget["steps"] = int(steps)
        if restarts is not None and "restarts" in budget:
            budget["restarts"] = int(restarts)
        if spec.name in _TOP_CLASS_TARGETED and num_classes is not None and "num_target_classes" in budget:
            wanted = budget["num_target_classes"] or AUTOATTACK_STANDARD[spec.name]["num_target_classes"]
            budget["num_target_classes"] = min(int(wanted), num_classes - 1)
        budgets[spec.name] = budget
    return budgets


def standard_reasons(attacks, budgets, norm, num_classes=None) -> list[str]:
    """Why a run differs from AutoAttack's standard version; empty when it is that version.

    Targeting every other class when there are fewer than 10 is what the standard
    version can do there (the evaluation warns about it separately), not a reason.

    Args:
        attacks: Attack names in cascade order.
        budgets: `{attack name: {option: value}}` as run.
        norm: The threat model.
        num_classes: The model's classes, for the cap on target classes.

    Returns:
        One short reason per difference, e.g. `"square: 1000 queries < 5000"`.
    """
    standard = list(AUTOATTACK_STANDARD)
    if list(attacks) != standard:
        return [f"attacks {', '.join(attacks) or 'none'} instead of {', '.join(standard)}"]
    if norm not in ("linf", "l2"):
        return [f"norm {norm}: the standard version is defined here for linf and l2"]
    reasons = []
    for name, wanted in AUTOATTACK_STANDARD.items():
        budget = budgets.get(name, {})
        for option, value in wanted.items():
            if option == "num_target_classes" and num_classes is not None:
                value = min(value, num_classes - 1)
            if option not in budget:
                reasons.append(f"{name}: has no {option} option (standard: {option}={value})")
                continue
            got = budget[option]
            if got == value:
                continue
            if option == "steps":
                unit = "queries" if name == "square" else "steps"
                reasons.append(f"{name}: {got} {unit} {'<' if got < value else '>'} {value}")
            elif option == "num_target_classes" and got is not None and got < value:
                reasons.append(f"{name}: {got} target classes < {value}")
            else:
                reasons.append(f"{name}: {option}={got!r} (standard: {value!r})")
    return reasons
