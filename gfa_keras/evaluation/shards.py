"""Shard reports: what a shard of an evaluation records, and `merge_shard_reports`.

`evaluate_robustness(..., shard=(index, count))` evaluates the blocks `k` with
`k % count == index` and returns a shard report: its per-example results, plus (in
`report.shard`) its blocks, the digests and counts of the whole run and, in shard 0, the
results of every check that needs the model. `merge_shard_reports` joins the shards
and rebuilds the report with `complete_report`, the code a single run uses too.
"""
from __future__ import annotations

import itertools
import json
import os
import types

import numpy as np

from gfa_keras.evaluation import masking_checks
from gfa_keras.evaluation.presets import standard_reasons
from gfa_keras.evaluation.report import RobustnessReport, build_report, json_ready, norm_statistics

__all__ = ["merge_shard_reports", "complete_report", "record_probes", "shard_report", "validate_shard"]

# Settings that may differ between the shards of one run.
_SHARD_LOCAL_SETTINGS = ("date", "num_points")
# Facts about the whole run every shard records and the merge requires to agree, with what each is.
_SHARD_SHARED_FIELDS = {"count": "shard count", "num_blocks": "number of blocks", "total_points": "number of points",
                        "data_sha256": "data digest", "model_sha256": "model digest", "input_shape": "input shape",
                        "white_box": "attacks' kinds", "budgets": "attacks' budgets"}


def merge_shard_reports(reports) -> RobustnessReport:
    """Joins the shard reports of one evaluation into the report of the whole set.

    Each shard report comes from `evaluate_robustness(..., shard=(index, count))`
    with the same model, data and settings. The per-example results are put back in
    the order of the data, the accuracies, budgets and `standard` flag recomputed, and
    the gradient-masking checks run on the joined results: the report equals (per
    example, in every accuracy, budget and flag) the one a single run over the whole set
    returns, but for its date. The checks that need the model (input gradients,
    logits, determinism, the probes at larger eps, `thorough`) ran in shard 0, on the
    first `cascade.CHECK_SAMPLE_SIZE` points, and travel in its report.

    Args:
        reports: The shard reports, in any order: `RobustnessReport`s, their dicts,
            or paths of their JSON files.

    Returns:
        The `RobustnessReport` of the whole set.

    Raises:
        ValueError: If a report is not a shard report, shards are missing or given
            twice, their counts or indices are invalid, or they differ in settings,
            model or data (the message names the field).

    Example:

    ```python
    parts = [evaluate_robustness(model, data, "autoattack", 0.1, shard=(i, 3)) for i in range(3)]
    report = merge_shard_reports(parts)
    ```
    """
    shards = _load_shards(reports)
    first = shards[0]
    owner = next(r for r in shards if r.shard["index"] == 0)
    settings = {k: v for k, v in first.settings.items() if k not in ("model_name", "date", "versions")}
    settings["num_points"] = first.shard["total_points"]
    correct, broken_by, norms = _join_blocks(shards, len(settings["eps"]), settings["minimum_norm_attacks"])
    payload = _whole_run_payload(shards, owner, settings["attacks"])
    return complete_report(settings, first.settings.get("model_name", "model"), first.settings.get("versions", {}),
                           correct, broken_by, norms, payload, _carried_probe(owner), frozenset(settings["checks"]))


def _load_shards(reports):
    """The shard reports loaded, checked to come from one run and to hold each shard once."""
    if isinstance(reports, (str, os.PathLike, RobustnessReport, dict)) or not hasattr(reports, "__iter__"):
        raise ValueError("reports must be a list of shard reports (RobustnessReport, dict or JSON path). "
                         f"Received: reports of type {type(reports).__name__}")
    loaded = [_as_report(r, i) for i, r in enumerate(reports)]
    if not loaded:
        raise ValueError("merge_shard_reports needs at least one shard report. Received: reports=[]")
    first = loaded[0]
    count = first.shard["count"]
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"Shard count must be an integer >= 1. Received: count={count!r} in report 0")
    for i, report in enumerate(loaded[1:], start=1):
        _require_same_run(first, report, i)
    _require_every_shard_once(loaded, count)
    return loaded


def _require_every_shard_once(loaded, count):
    """Raises unless the shard indices are each of `0..count - 1` once."""
    indices = []
    for i, report in enumerate(loaded):
        index = report.shard["index"]
        if not isinstance(index, int) or not 0 <= index < count:
            raise ValueError(f"Shard index must lie in [0, {count}). Received: index={index!r} in report {i}")
        indices.append(index)
    duplicates = sorted({k for k in indices if indices.count(k) > 1})
    if duplicates:
        raise ValueError(f"Shards given twice: {duplicates}. Expected each of the {count} shards once. "
                         f"Received shard indices {indices}")
    missing = sorted(set(range(count)) - set(indices))
    if missing:
        raise ValueError(f"Shards missing: {missing} of {count}. Expected all of 0..{count - 1}. "
                         f"Received shard indices {sorted(indices)}")


def _join_blocks(shards, eps_count, minimum_norm_attacks):
    """The shards' per-example results put back in the order of the data: `(correct, broken_by, norms)`."""
    num_blocks = shards[0].shard["num_blocks"]
    chunks = [None] * num_blocks  # per block: (correct, broken_by rows, norms per attack)
    for report in shards:
        start = 0
        for k, size in zip(report.shard["blocks"], report.shard["block_sizes"]):
            if not 0 <= k < num_blocks or chunks[k] is not None:
                raise ValueError(f"Shard {report.shard['index']} holds block {k}, which is outside the "
                                 f"{num_blocks} blocks or held by another shard too.")
            rows = [row[start:start + size] for row in report.broken_by]
            norms = {a: report.minimum_norm[a]["norms"][start:start + size] for a in minimum_norm_attacks}
            chunks[k] = ([by != "clean" for by in rows[0]], rows, norms)
            start += size
        if start != len(report.broken_by[0]):
            raise ValueError(f"Shard {report.shard['index']} holds {len(report.broken_by[0])} points, but its "
                             f"blocks add up to {start}.")
    empty = [k for k, c in enumerate(chunks) if c is None]
    if empty:
        raise ValueError(f"No shard holds blocks {empty}: the shards do not come from one run.")
    correct = np.concatenate([c[0] for c in chunks])
    broken_by = [list(itertools.chain.from_iterable(c[1][i] for c in chunks)) for i in range(eps_count)]
    norms = {a: np.concatenate([np.asarray(c[2][a], dtype=np.float64) for c in chunks]) for a in minimum_norm_attacks}
    return correct, broken_by, norms


def _whole_run_payload(shards, owner, attacks):
    """The payload of the whole run, for `complete_report`.

    The facts every shard shares, shard 0's sample (its checks' results and probes), and
    the label and zero-gradient counts summed over the shards.
    """
    return {**shards[0].shard, "index": 0, "count": 1, "sample": owner.shard["sample"],
            "label_counts": np.sum([r.shard["label_counts"] for r in shards], axis=0).tolist(),
            "zero_gradients": masking_checks.sum_zero_gradients(
                itertools.chain.from_iterable(r.shard["zero_gradients"] for r in shards), attacks)}


def _carried_probe(owner):
    """The checks' `probe`, answered from the probes shard 0 (`owner`) ran and recorded."""
    recorded = {_probe_key(p["attack"], p["eps"], p["options"]): p["accuracy"]
                for p in (owner.shard["sample"] or {}).get("probes", [])}

    def probe(spec, e, **overrides):
        key = _probe_key(spec.name, e, overrides)
        if key not in recorded:
            raise ValueError(f"Shard 0 carries no probe of {spec.name} at eps={e:g} with {overrides}: its report "
                             "was written with other checks than the others.")
        return recorded[key]

    return probe


def validate_shard(shard):
    """`(index, count)`; `(0, 1)` for no shard."""
    if shard is None:
        return 0, 1
    if (not isinstance(shard, (tuple, list)) or len(shard) != 2
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in shard)):
        raise ValueError(f"shard must be a pair of integers (index, count). Received: shard={shard!r}")
    index, count = int(shard[0]), int(shard[1])
    if count < 1:
        raise ValueError(f"The shard count must be >= 1. Received: shard={shard!r}")
    if not 0 <= index < count:
        raise ValueError(f"The shard index must lie in [0, {count}). Received: shard={shard!r}")
    return index, count


def _as_report(value, position):
    if isinstance(value, (str, os.PathLike)):
        value = RobustnessReport.from_json(value)
    elif isinstance(value, dict):
        # Through JSON, so that the `None` standing for inf (a failed minimum-norm attack) turns back.
        value = RobustnessReport.from_json(json.dumps(value))
    if not isinstance(value, RobustnessReport):
        raise ValueError("Each shard report must be a RobustnessReport, its dict or a JSON path. "
                         f"Received: report {position} of type {type(value).__name__}")
    if not value.shard:
        raise ValueError(f"Report {position} is not a shard report (evaluate_robustness(..., shard=(index, count)) "
                         "writes those). Received a report without a shard field.")
    return value


def _require_same_run(first, report, position):
    """Raises unless `report` comes from the same run as `first`, naming the field that differs."""
    settings = {k for k in set(first.settings) | set(report.settings) if k not in _SHARD_LOCAL_SETTINGS}
    for key in sorted(settings):
        if first.settings.get(key) != report.settings.get(key):
            raise ValueError(
                f"Shards of different runs: settings[{key!r}] differs. Expected the same model, data and settings "
                f"in every shard. Received: {first.settings.get(key)!r} in report 0 (shard {first.shard['index']}), "
                f"{report.settings.get(key)!r} in report {position} (shard {report.shard['index']})"
            )
    for key, what in _SHARD_SHARED_FIELDS.items():
        if first.shard.get(key) != report.shard.get(key):
            raise ValueError(
                f"Shards of different runs: the {what} ({key}) differs. Expected the same model, data and settings "
                f"in every shard. Received: {first.shard.get(key)!r} in report 0 (shard {first.shard['index']}), "
                f"{report.shard.get(key)!r} in report {position} (shard {report.shard['index']})"
            )


def _probe_key(attack, eps, options):
    return attack, float(eps), tuple(sorted((k, json_ready(v)) for k, v in dict(options).items()))


def _stand_in_specs(settings, payload):
    """What the checks need of each cascade attack (its name and kind), without the attack itself."""
    return [types.SimpleNamespace(name=n, white_box=payload["white_box"][n]) for n in settings["attacks"]]


def _results_report(settings, model_name, versions, correct, broken_by, norms, budgets):
    """The report of the per-example results, with its `standard` flag and reasons; no checks."""
    minimum_norm = {a: norm_statistics(norms[a], correct) for a in settings["minimum_norm_attacks"]}
    report = build_report(correct, settings["eps"], settings["norm"], settings["attacks"], broken_by, minimum_norm,
                          settings, model_name, versions)
    report.standard_reasons = standard_reasons(report.attacks, budgets, settings["norm"], settings["num_classes"])
    report.standard = not report.standard_reasons
    return report


def complete_report(settings, model_name, versions, correct, broken_by, norms, payload, probe, selected):
    """The report of the whole set, with its checks; the same code for a single run and a merge."""
    eps, budgets = settings["eps"], payload["budgets"]
    report = _results_report(settings, model_name, versions, correct, broken_by, norms, budgets)
    sample = payload["sample"]
    specs = _stand_in_specs(settings, payload)
    # Only the class counts matter to the chance level the checks compare with.
    labels = np.repeat(np.arange(len(payload["label_counts"])), payload["label_counts"])
    zero_gradients = {(eps[i], name): (zero, attacked) for i, name, zero, attacked in payload["zero_gradients"]}
    report.flags = list(sample["model_flags"]) + masking_checks.cascade_checks(
        report, specs, budgets, probe, labels=labels, sample_labels=np.asarray(sample["labels"]),
        input_shape=tuple(payload["input_shape"]), clip_min=settings["clip_min"], clip_max=settings["clip_max"],
        num_classes=settings["num_classes"], zero_gradients=zero_gradients, selected=selected)
    if "more_iterations_change_little" in selected:
        report.flags.append(masking_checks.thoroughness_check(report, specs, budgets, probe, len(sample["labels"])))
    return report


def record_probes(settings, model_name, versions, part, payload, probe, selected):
    """Runs every probe the merged report's checks can ask for and returns them as JSON-ready records.

    The checks on the shard's own points ask for the same probes as on the whole set
    (they depend on the settings only), but for `thorough`, which reruns whichever
    white-box attack broke most points of the whole set: that one is not known yet, so
    every candidate is probed.
    """
    records = []

    def recording(spec, e, **overrides):
        accuracy = probe(spec, e, **overrides)
        records.append({"attack": spec.name, "eps": float(e), "options": json_ready(overrides),
                        "accuracy": float(accuracy)})
        return accuracy

    complete_report(settings, model_name, versions, part.correct, part.broken_by, part.norms, payload, recording,
                    selected - {"more_iterations_change_little"})
    if "more_iterations_change_little" in selected:
        specs = _stand_in_specs(settings, payload)
        for spec in specs:
            if spec.white_box:
                # A report in which this attack broke the most points makes the check pick it.
                masking_checks.thoroughness_check(types.SimpleNamespace(broken_by=[[spec.name]], eps=settings["eps"]),
                                                  specs, payload["budgets"], recording, len(part.sample_y))
    unique = {}
    for record in records:
        unique.setdefault(_probe_key(record["attack"], record["eps"], record["options"]), record)
    return list(unique.values())


def shard_report(settings, model_name, versions, part, payload):
    """The report over one shard's points, carrying what `merge_shard_reports` needs; no flags."""
    settings = {**settings, "num_points": len(part.correct)}
    report = _results_report(settings, model_name, versions, part.correct, part.broken_by, part.norms,
                             payload["budgets"])
    report.shard = json_ready(payload)
    return report
