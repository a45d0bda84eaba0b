"""The result of `evaluate_robustness`: plain data, JSON round trip, and its tables.

`RobustnessReport` holds only numbers, strings, lists and dicts, so that other tools
(HTML pages, plots) can be built from its JSON without TensorFlow. The tables, the
number formatting and the JSON cleaning are defined here once: `to_markdown` and the
report directory's Markdown and HTML pages (`gfa_keras.reports`) render the same
`robustness_tables`.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
from typing import Mapping

import numpy as np

__all__ = [
    "RobustnessReport",
    "FLAG_STATUSES",
    "build_report",
    "norm_statistics",
    "json_ready",
    "format_percent",
    "format_number",
    "markdown_table",
    "robustness_tables",
    "budget_text",
    "setting_text",
]

FLAG_STATUSES = ("ok", "warn", "fail")


def json_ready(value):
    """Plain JSON values: `to_dict()` objects and NumPy values converted, non-finite floats `None`.

    Strict JSON has no Infinity or NaN; readers turn `None` back where it stands for inf.
    """
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def format_percent(value) -> str:
    """`0.1234` -> `"12.34%"`; `None` -> `"n/a"`."""
    return "n/a" if value is None else f"{100.0 * value:.2f}%"


def format_number(value) -> str:
    """Floats to 4 significant digits (`inf` for infinity), `None` -> `"n/a"`, anything else `str`."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.4g}"
    return str(value)


def markdown_table(header, rows) -> list:
    """Markdown lines of one table, `|` in cells escaped."""
    cells = [[str(c).replace("|", "\\|") for c in row] for row in [header, *rows]]
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in cells[1:]]


def budget_text(standard, reasons) -> str:
    """`"AutoAttack standard version"`, or `"not the AutoAttack standard version (reasons)"`."""
    if standard is None:
        return "budget against AutoAttack's standard version not recorded"
    if standard:
        return "AutoAttack standard version"
    return f"not the AutoAttack standard version ({'; '.join(reasons)})"


def _options_text(options):
    return ", ".join(f"{k}={format_number(v)}" for k, v in options.items()) or "-"


def setting_text(value) -> str:
    """A setting's table cell: JSON for lists and dicts, `str` for anything else."""
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def robustness_tables(report) -> list:
    """The tables of a report, as `(caption, header, rows)` with every cell a string.

    Args:
        report: A `RobustnessReport` or its dict (`to_dict()` / JSON).

    Returns:
        In order: the cumulative cascade, each attack on the points handed to it, the
        budgets (with whether they are AutoAttack's standard version and the number of
        points), the minimum-norm attacks, the gradient-masking checks, the other
        settings; the tables with no content are left out.
    """
    r = report.to_dict() if isinstance(report, RobustnessReport) else report
    attacks, eps = r["attacks"], r["eps"]
    tables = []
    if attacks:
        rows = [[f"{e:g}"] + [format_percent(r["robust_accuracy"][a][i]) for a in attacks]
                + [format_percent(r["worst_case_accuracy"][i])] for i, e in enumerate(eps)]
        tables.append(("Robust accuracy (cumulative cascade, all points)",
                       ["eps"] + [f"after {a}" for a in attacks] + ["worst case"], rows))
        rows = []
        for i, e in enumerate(eps):
            for position, attack in enumerate(attacks):
                earlier = {"clean", *attacks[:position]}
                attacked = sum(by not in earlier for by in r["broken_by"][i])
                broken = sum(by == attack for by in r["broken_by"][i])
                rows.append([attack, f"{e:g}", str(attacked), str(broken),
                             format_percent(r["attack_accuracy"][attack][i])])
        tables.append(("Per attack: accuracy on the points still robust before it",
                       ["attack", "eps", "points attacked", "points broken", "accuracy on attacked"], rows))
    budgets = r.get("settings", {}).get("budgets")
    if attacks or budgets:
        rows = [[name, _options_text(options)] for name, options in (budgets or {}).items()]
        rows.append(["AutoAttack standard version",
                     "not recorded" if r.get("standard") is None else "yes" if r["standard"]
                     else "no: " + "; ".join(r.get("standard_reasons", []))])
        rows.append(["points evaluated", str(r.get("settings", {}).get("num_points", len(r["broken_by"][0])
                                                                       if r["broken_by"] else 0))])
        tables.append(("Budgets: each attack's options as run", ["attack", "budget"], rows))
    if r.get("minimum_norm"):
        rows = [[a, format_number(math.inf if s["median"] is None else s["median"]), format_number(s["mean"]),
                 format_percent(s["success_rate"])] for a, s in r["minimum_norm"].items()]
        tables.append((f"Minimum-norm attacks ({r['norm']})",
                       ["attack", "median norm", "mean norm (successes)", "success rate"], rows))
    if r.get("flags"):
        tables.append(("Gradient-masking checks", ["check", "status", "reason"],
                       [[f["check"], f["status"], f["reason"]] for f in r["flags"]]))
    if r.get("settings"):
        tables.append(("Settings", ["setting", "value"],
                       [[k, setting_text(v)] for k, v in r["settings"].items() if k != "budgets"]))
    return tables


@dataclasses.dataclass
class RobustnessReport:
    """Robust accuracy of one model under a cascade of attacks, with sanity flags.

    Accuracies are fractions of ALL evaluated points (a point the model already
    misclassifies counts as non-robust). Lists indexed by eps follow `eps`.

    Attributes:
        clean_accuracy: Accuracy on the unperturbed points.
        eps: The perturbation bounds, increasing.
        norm: `"linf"` or `"l2"`.
        attacks: Attack names in cascade order.
        robust_accuracy: `{attack: [accuracy per eps]}`, the cumulative cascade
            accuracy after this attack and every attack before it.
        attack_accuracy: `{attack: [accuracy per eps]}`, the fraction of the points
            handed to this attack (those still robust before it) that it did not
            break; `None` where no point was left to attack.
        worst_case_accuracy: Per eps, the per-example worst case over all attacks.
        broken_by: Per eps, per point: `"clean"` if misclassified without attack,
            else the name of the first attack that broke it, else `None` (robust).
        minimum_norm: `{attack: {"median", "mean", "success_rate", "norms"}}` for the
            unbounded minimum-norm attacks. `norms` is per point: 0 for points already
            misclassified, `inf` where the attack failed. `median` is over all points,
            `mean` over the clean-correct points the attack broke, `success_rate` over
            the clean-correct points.
        settings: Evaluation settings (eps, norm, `budgets`: each attack's options as
            run, seed, `num_points`, attacks, checks, model name, date, versions, ...).
        flags: Gradient-masking checks, each `{"check", "status", "reason"}` with
            status in `FLAG_STATUSES`.
        standard: Whether the attacks and their budgets are exactly AutoAttack's
            standard version (APGD-CE, APGD-T, FAB-T 100 steps, Square 5,000 queries,
            ...; see `gfa_keras.evaluation.presets.AUTOATTACK_STANDARD`); `None` in
            reports written before this was recorded. The number of points is not
            part of it: `settings["num_points"]` says how many were evaluated.
        standard_reasons: Why `standard` is False, e.g. `"square: 1000 queries < 5000"`.
        shard: `None` for the report of a whole set. In a shard report
            (`evaluate_robustness(..., shard=(index, count))`, which covers only the
            shard's blocks and has no flags) what `merge_shard_reports` needs: `index`,
            `count`, the shard's `blocks` and their sizes, the whole set's point count and
            data digest, the model digest, the class counts, the zero-gradient counts and,
            in shard 0, the `sample` checks' results.

    Example:

    ```python
    report = evaluate_robustness(model, (x_test, y_test), eps=0.1)
    print(report.summary())
    report.to_json("report.json")
    same = RobustnessReport.from_json("report.json")
    ```
    """

    clean_accuracy: float
    eps: list
    norm: str
    attacks: list
    robust_accuracy: dict
    attack_accuracy: dict
    worst_case_accuracy: list
    broken_by: list
    minimum_norm: dict = dataclasses.field(default_factory=dict)
    settings: dict = dataclasses.field(default_factory=dict)
    flags: list = dataclasses.field(default_factory=list)
    standard: bool | None = None
    standard_reasons: list = dataclasses.field(default_factory=list)
    shard: dict | None = None

    def robust_mask(self, eps_index: int = 0) -> list:
        """Per point, whether it survived every attack at `eps[eps_index]`."""
        return [by is None for by in self.broken_by[eps_index]]

    def to_dict(self) -> dict:
        """The report as a dict of plain JSON-ready values (`inf` becomes `None`)."""
        return json_ready(dataclasses.asdict(self))

    def to_json(self, path: str | os.PathLike | None = None, indent: int = 1) -> str:
        """Serializes the report to JSON.

        Args:
            path: If given, the JSON is also written to this file.
            indent: JSON indentation.

        Returns:
            The JSON text.
        """
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False)
        if path is not None:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        return text

    @classmethod
    def from_json(cls, source: str | os.PathLike) -> "RobustnessReport":
        """Reads a report written by `to_json`.

        Args:
            source: JSON text, or the path of a file holding it.

        Returns:
            The `RobustnessReport`.
        """
        text = str(source)
        if isinstance(source, os.PathLike) or not text.lstrip().startswith("{"):
            with open(source, encoding="utf-8") as f:
                text = f.read()
        data = json.loads(text)
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ValueError(f"Not a RobustnessReport: unknown fields {unknown}. Expected fields: {sorted(fields)}")
        for stats in data.get("minimum_norm", {}).values():
            # `None` stands for inf (a failed attack) in the JSON.
            stats["norms"] = [math.inf if v is None else v for v in stats["norms"]]
            if stats.get("median") is None:
                stats["median"] = math.inf
        return cls(**data)

    def summary(self) -> str:
        """One line: clean accuracy, worst case at each eps, and how many flags fired."""
        name = self.settings.get("model_name", "model")
        worst = ", ".join(f"{e:g}: {format_percent(a)}" for e, a in zip(self.eps, self.worst_case_accuracy))
        text = (
            f"{name}: clean {format_percent(self.clean_accuracy)}, worst-case robust accuracy "
            f"({self.norm}) {worst} over {self.settings.get('num_points', '?')} points "
            f"[{', '.join(self.attacks)}]"
        )
        if self.attacks:
            text += f"; {self.budget_summary()}"
        for attack, stats in self.minimum_norm.items():
            text += f"; {attack} median {self.norm} norm {format_number(stats['median'])}"
        fired = [f for f in self.flags if f["status"] != "ok"]
        if fired:
            text += "; flags: " + ", ".join(f"{f['check']} ({f['status']})" for f in fired)
        return text

    def budget_summary(self) -> str:
        """Whether the run is AutoAttack's standard version, and if not why, in one phrase."""
        return budget_text(self.standard, self.standard_reasons)

    def to_markdown(self) -> str:
        """Markdown for a human reader: the summary and every table of `robustness_tables`."""
        lines = ["# Robustness report", "", self.summary(), ""]
        lines += [f"Clean accuracy: {format_percent(self.clean_accuracy)}", ""]
        for caption, header, rows in robustness_tables(self):
            lines += [f"## {caption}", "", *markdown_table(header, rows), ""]
        return "\n".join(lines)


def norm_statistics(norms, correct) -> dict:
    """Median / mean / success rate of a minimum-norm attack's per-point norms.

    Args:
        norms: Per point: 0 where the clean point is misclassified, the norm found,
            or inf where the attack failed.
        correct: Per point, whether the clean point is classified correctly.

    Returns:
        `{"median", "mean", "success_rate", "norms"}` as documented on `RobustnessReport`.
    """
    norms, correct = np.asarray(norms, dtype=np.float64), np.asarray(correct, dtype=bool)
    broken = np.isfinite(norms) & correct
    return {
        "median": float(np.median(norms)),
        "mean": float(np.mean(norms[broken])) if broken.any() else None,
        "success_rate": float(broken.sum() / correct.sum()) if correct.any() else None,
        "norms": norms.tolist(),
    }


def build_report(correct, eps, norm, attacks, broken_by, minimum_norm, settings, model_name,
                 versions) -> RobustnessReport:
    """A `RobustnessReport` from the cascade's per-point outcomes.

    Args:
        correct: Per point, whether the clean point is classified correctly.
        eps: The bounds, one cascade each.
        norm: The threat model.
        attacks: Attack names in cascade order.
        broken_by: Per eps, per point: `"clean"`, the first attack that broke it, or None.
        minimum_norm: `{attack: norm_statistics(...)}`.
        settings: The evaluation settings to record.
        model_name: The model's name.
        versions: `{package: version}` to record.

    Returns:
        The report, without flags.
    """
    robust_accuracy = {n: [] for n in attacks}
    attack_accuracy = {n: [] for n in attacks}
    for row in broken_by:
        for position, name in enumerate(attacks):
            earlier = {"clean", *attacks[:position]}
            attacked = sum(by not in earlier for by in row)
            broken = sum(by == name for by in row)
            robust_accuracy[name].append(float((attacked - broken) / len(row)))
            attack_accuracy[name].append(None if attacked == 0 else 1.0 - broken / attacked)
    settings = {
        **settings,
        "model_name": str(model_name),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": dict(versions),
    }
    return RobustnessReport(
        clean_accuracy=float(np.mean(correct)),
        eps=list(eps),
        norm=norm,
        attacks=list(attacks),
        robust_accuracy=robust_accuracy,
        attack_accuracy=attack_accuracy,
        worst_case_accuracy=[float(np.mean([b is None for b in row])) for row in broken_by],
        broken_by=[list(row) for row in broken_by],
        minimum_norm=minimum_norm,
        settings=settings,
    )
