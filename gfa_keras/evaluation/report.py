"""The result of `evaluate_robustness`: plain data, JSON round trip, Markdown tables.

`RobustnessReport` holds only numbers, strings, lists and dicts, so that other tools
(HTML pages, plots) can be built from its JSON without importing TensorFlow.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os

__all__ = ["RobustnessReport", "FLAG_STATUSES"]

FLAG_STATUSES = ("ok", "warn", "fail")


def _json_safe(value):
    """Infinite and NaN floats become `None`: strict JSON has no Infinity."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _percent(value):
    return "n/a" if value is None else f"{100.0 * value:.2f}%"


def _norm_text(value):
    if value is None:
        return "n/a"
    return "inf" if math.isinf(value) else f"{value:.4g}"


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
        settings: Evaluation settings (eps, norm, steps, restarts, seed, number of
            points, attacks, model name, date, versions, ...).
        flags: Gradient-masking checks, each `{"check", "status", "reason"}` with
            status in `FLAG_STATUSES`.

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

    def robust_mask(self, eps_index: int = 0) -> list:
        """Per point, whether it survived every attack at `eps[eps_index]`."""
        return [by is None for by in self.broken_by[eps_index]]

    def to_dict(self) -> dict:
        """The report as a dict of plain JSON-ready values (`inf` becomes `None`)."""
        return _json_safe(dataclasses.asdict(self))

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
        worst = ", ".join(f"{e:g}: {_percent(a)}" for e, a in zip(self.eps, self.worst_case_accuracy))
        text = (
            f"{name}: clean {_percent(self.clean_accuracy)}, worst-case robust accuracy "
            f"({self.norm}) {worst} over {self.settings.get('num_points', '?')} points "
            f"[{', '.join(self.attacks)}]"
        )
        for attack, stats in self.minimum_norm.items():
            text += f"; {attack} median {self.norm} norm {_norm_text(stats['median'])}"
        fired = [f for f in self.flags if f["status"] != "ok"]
        if fired:
            text += "; flags: " + ", ".join(f"{f['check']} ({f['status']})" for f in fired)
        return text

    def to_markdown(self) -> str:
        """Markdown tables for a human reader: accuracies, breakdown, norms, flags, settings."""
        lines = ["# Robustness report", "", self.summary(), ""]
        lines += [f"Clean accuracy: {_percent(self.clean_accuracy)}", ""]
        if self.attacks:
            lines += ["## Robust accuracy (cumulative cascade, all points)", ""]
            lines += ["| eps | " + " | ".join(f"after {a}" for a in self.attacks) + " | worst case |"]
            lines += ["|---" * (len(self.attacks) + 2) + "|"]
            for i, e in enumerate(self.eps):
                cells = [_percent(self.robust_accuracy[a][i]) for a in self.attacks]
                lines += [f"| {e:g} | " + " | ".join(cells) + f" | {_percent(self.worst_case_accuracy[i])} |"]
            lines += ["", "## Per attack: accuracy on the points still robust before it", ""]
            lines += ["| attack | eps | points attacked | points broken | accuracy on attacked |"]
            lines += ["|---|---|---|---|---|"]
            for i, e in enumerate(self.eps):
                for position, attack in enumerate(self.attacks):
                    earlier = {"clean", *self.attacks[:position]}
                    attacked = sum(by not in earlier for by in self.broken_by[i])
                    broken = sum(by == attack for by in self.broken_by[i])
                    lines += [
                        f"| {attack} | {e:g} | {attacked} | {broken} | "
                        f"{_percent(self.attack_accuracy[attack][i])} |"
                    ]
            lines += [""]
        if self.minimum_norm:
            lines += [f"## Minimum-norm attacks ({self.norm})", ""]
            lines += ["| attack | median norm | mean norm (successes) | success rate |", "|---|---|---|---|"]
            for attack, stats in self.minimum_norm.items():
                lines += [
                    f"| {attack} | {_norm_text(stats['median'])} | {_norm_text(stats['mean'])} | "
                    f"{_percent(stats['success_rate'])} |"
                ]
            lines += [""]
        if self.flags:
            lines += ["## Gradient-masking checks", "", "| check | status | reason |", "|---|---|---|"]
            for flag in self.flags:
                lines += [f"| {flag['check']} | {flag['status']} | {flag['reason']} |"]
            lines += [""]
        lines += ["## Settings", "", "| setting | value |", "|---|---|"]
        for key, value in self.settings.items():
            lines += [f"| {key} | {value} |"]
        return "\n".join(lines) + "\n"
