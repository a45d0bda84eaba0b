"""A report directory: one JSON with every result, rendered as Markdown, PNG plots and one HTML page.

This module owns the directory: it reads, merges and writes `report.json`, draws the
plots, lays out the page's content (`report_sections`: the same tables for Markdown
and HTML, the robustness ones from `gfa_keras.evaluation.report.robustness_tables`),
writes the Markdown, and has `gfa_keras.reports.html` render the HTML page.

Layout of a report directory:

| file | what |
|---|---|
| `report.json` | machine-readable: per model its `RobustnessReport` dict, training history, loss landscape; the tuner's trials |
| `report.md` | the tables in Markdown, with links to the PNGs |
| `report.html` | one self-contained page (the plots inlined as data URIs, no script): open it in a browser |
| `*.png` | the plots of `gfa_keras.reports.plots` |

`add_to_report` merges results into `report.json` (several `gfa-keras evaluate` runs
into one directory compare several models on one chart); `render_report` writes the
rest from the JSON alone, so a report can be rebuilt, or several merged, without the
models. Neither needs TensorFlow.
"""
from __future__ import annotations

import datetime
import json
import os
import re
from pathlib import Path
from typing import Mapping, Sequence

from gfa_keras import atomic_files
from gfa_keras.evaluation.report import (
    budget_text, format_number, format_percent, json_ready, markdown_table, robustness_tables, setting_text,
)
from gfa_keras.reports import html, plots

__all__ = [
    "REPORT_FORMAT",
    "REPORT_JSON",
    "REPORT_MARKDOWN",
    "REPORT_HTML",
    "add_to_report",
    "load_report",
    "merge_reports",
    "render_report",
    "report_sections",
]

REPORT_FORMAT = "gfa_keras.evaluation.report"
REPORT_JSON = "report.json"
REPORT_MARKDOWN = "report.md"
REPORT_HTML = "report.html"
_VERSION = 1
_SECTIONS = ("robustness", "history", "landscape", "training")


def _empty_report(title):
    return {"format": REPORT_FORMAT, "version": _VERSION, "title": title, "models": {}}


def load_report(directory: str | os.PathLike) -> dict:
    """Reads and checks the `report.json` of a report directory.

    Args:
        directory: The report directory (or the path of its `report.json`).

    Returns:
        The report dict: `{"format", "version", "title", "models": {name: {...}}, "tuning"?}`.

    Raises:
        FileNotFoundError: If there is no `report.json`.
        ValueError: If the file is not JSON or not a gfa_keras report.

    Example:

    ```python
    report = load_report("reports/digits")
    print(sorted(report["models"]))
    ```
    """
    path = Path(directory)
    if path.is_dir() or not path.suffix:
        path = path / REPORT_JSON
    if not path.is_file():
        raise FileNotFoundError(
            f"No {REPORT_JSON} in {path.parent}. Expected a report directory written by "
            "`gfa-keras train`, `evaluate` or `tune`."
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}). Expected a gfa_keras report.") from None
    if not isinstance(data, dict) or data.get("format") != REPORT_FORMAT or not isinstance(data.get("models"), dict):
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ValueError(
            f"{path} is not a gfa_keras report. Expected a JSON object with format={REPORT_FORMAT!r} and "
            f"'models'. Received: format={found!r}"
        )
    return data


def add_to_report(directory: str | os.PathLike, model_name: str | None = None, *, robustness=None,
                  history=None, landscape=None, training: Mapping | None = None,
                  tuning: Mapping | None = None, title: str | None = None) -> Path:
    """Merges results into the `report.json` of a report directory, creating both if needed.

    A section given for a model replaces that model's previous one; other models
    and sections are kept, so several runs can fill one report.

    Args:
        directory: The report directory.
        model_name: The model the `robustness`, `history`, `landscape` and
            `training` sections belong to; required when one of them is given.
        robustness: A `RobustnessReport` (or its dict).
        history: A Keras history dict `{metric: [value per epoch]}` (or `History`).
        landscape: A `plots.loss_along_directions` result.
        training: Training settings to show (method, weights, epochs, ...).
        tuning: The tuner's results: `{"trials": [...], "best_hyperparameters": {...}, ...}`.
        title: The report's title; default the directory's name.

    Returns:
        The path of `report.json`.

    Raises:
        ValueError: If a model section is given without `model_name`, or the
            directory holds a `report.json` that is not a gfa_keras report.

    Example:

    ```python
    add_to_report("reports/digits", "gfa", robustness=report, history=history.history)
    render_report("reports/digits")
    ```
    """
    sections = {"robustness": robustness, "history": getattr(history, "history", history),
                "landscape": landscape, "training": training}
    sections = {k: v for k, v in sections.items() if v is not None}
    if sections and not model_name:
        raise ValueError(f"Results for a model need its name. Received: model_name={model_name!r} "
                         f"with sections {sorted(sections)}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / REPORT_JSON
    data = load_report(directory) if path.exists() else _empty_report(directory.resolve().name)
    if title is not None:
        data["title"] = title
    if sections:
        data["models"].setdefault(model_name, {}).update(json_ready(sections))
    if tuning is not None:
        data["tuning"] = json_ready(tuning)
    atomic_files.write_text(path, json.dumps(data, indent=1, allow_nan=False))
    return path


def merge_reports(sources: Sequence[str | os.PathLike], directory: str | os.PathLike,
                  title: str | None = None) -> Path:
    """Writes one `report.json` in `directory` holding the models of several report directories.

    Args:
        sources: Report directories to merge.
        directory: The output directory (created if needed).
        title: The merged report's title; default the output directory's name.

    Returns:
        The path of the merged `report.json`.

    Raises:
        ValueError: If two sources hold a model of the same name, or two hold
            tuning results.

    Example:

    ```python
    merge_reports(["runs/plain", "runs/gfa"], "runs/comparison")
    render_report("runs/comparison")
    ```
    """
    directory = Path(directory)
    merged = _empty_report(title or directory.resolve().name)
    owner = {}
    for source in sources:
        data = load_report(source)
        for name, sections in data["models"].items():
            if name in owner:
                raise ValueError(
                    f"Model {name!r} is in both {owner[name]} and {source}. Expected distinct model names; "
                    "rename one (e.g. `gfa-keras evaluate --name`)."
                )
            owner[name] = source
            merged["models"][name] = sections
        if "tuning" in data:
            if "tuning" in merged:
                raise ValueError(f"More than one source holds tuning results ({source} and an earlier one). "
                                 "Expected at most one.")
            merged["tuning"] = data["tuning"]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / REPORT_JSON
    atomic_files.write_text(path, json.dumps(merged, indent=1, allow_nan=False))
    return path


def render_report(directory: str | os.PathLike) -> dict[str, Path]:
    """Writes the plots, `report.md` and the self-contained `report.html` from `report.json`.

    Args:
        directory: A report directory holding a `report.json`.

    Returns:
        `{"json", "markdown", "html", <plot name>...: path}` of the files written.

    Raises:
        FileNotFoundError: If the directory has no `report.json`.
        ValueError: If `report.json` is not a gfa_keras report.

    Example:

    ```python
    paths = render_report("reports/digits")
    print("open", paths["html"])
    ```
    """
    directory = Path(directory)
    data = load_report(directory)
    figures = _draw_figures(data, directory)
    sections = [(heading, tables, [figures[k] for k in _figure_keys(keys, figures)])
                for heading, tables, keys in report_sections(data)]
    sections = [section for section in sections if section[1] or section[2]]
    written = _now()
    markdown = _markdown(data["title"], sections, written)
    page = html.render_page(data["title"], sections, written)
    paths = {"json": directory / REPORT_JSON, "markdown": directory / REPORT_MARKDOWN,
             "html": directory / REPORT_HTML}
    atomic_files.write_text(paths["markdown"], markdown)
    atomic_files.write_text(paths["html"], page)
    paths.update({key: path for key, (path, _) in figures.items()})
    return paths


def _slug(name):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "model"


def _draw_figures(data, directory):
    """{key: (png path, caption)} for every plot the data supports, in page order."""
    models = data["models"]
    figures = {}
    robust = {n: m["robustness"] for n, m in models.items() if m.get("robustness")}
    norms = sorted({r["norm"] for r in robust.values()})
    for norm in norms:
        key = "robust_accuracy" if len(norms) == 1 else f"robust_accuracy_{norm}"
        same_norm = {n: r for n, r in robust.items() if r["norm"] == norm}
        path = directory / f"{key}.png"
        plots.plot_robust_accuracy(same_norm, path)
        figures[key] = (path, f"Worst-case robust accuracy against eps ({norm}), every test point counted.")
    with_norms = {n: r for n, r in robust.items() if r.get("minimum_norm")}
    if with_norms:
        path = directory / "minimum_norms.png"
        plots.plot_minimum_norms(with_norms, path)
        figures["minimum_norms"] = (path, "Minimum adversarial perturbation norms (ECDF over clean-correct points).")
    landscapes = {n: m["landscape"] for n, m in models.items() if m.get("landscape")}
    if landscapes:
        path = directory / "loss_landscape.png"
        plots.plot_loss_landscape(landscapes, path)
        figures["loss_landscape"] = (path, "Mean loss along radial (x/||x||, solid) and tangential (orthogonal, "
                                           "dashed) directions around test points.")
    for name, sections in models.items():
        history = sections.get("history") or {}
        if any(k.startswith("alignment_") for k in history):
            key = f"alignment_{_slug(name)}"
            path = directory / f"{key}.png"
            plots.plot_alignment(history, path, title=f"{name}: gradient-feature alignment per layer")
            figures[key] = (path, f"{name}: per-layer alignment cos(dL/dh, h) over the epochs.")
    trials = (data.get("tuning") or {}).get("trials") or []
    if any(t.get("clean_accuracy") is not None and t.get("robust_accuracy") is not None for t in trials):
        path = directory / "tuning.png"
        plots.plot_tuning_trials(trials, path)
        figures["tuning"] = (path, "Tuner trials: clean against robust accuracy, with the Pareto front.")
    return figures


def _summary_rows(models):
    """Header and rows: model, clean, worst case per (norm, eps), attacks, budget, points, flags fired."""
    robust = {n: m["robustness"] for n, m in models.items() if m.get("robustness")}
    columns = sorted({(r["norm"], e) for r in robust.values() for e in r["eps"]})
    header = (["model", "clean"] + [f"{norm} eps={e:g}" for norm, e in columns]
              + ["attacks", "budget", "points", "flags"])
    rows = []
    for name, r in robust.items():
        worst = {(r["norm"], e): a for e, a in zip(r["eps"], r["worst_case_accuracy"])}
        fired = [f"{f['check']} ({f['status']})" for f in r.get("flags", []) if f["status"] != "ok"]
        rows.append([name, format_percent(r["clean_accuracy"])]
                    + [format_percent(worst[c]) if c in worst else "-" for c in columns]
                    + [", ".join(r["attacks"]), budget_text(r.get("standard"), r.get("standard_reasons", [])),
                       str(r.get("settings", {}).get("num_points", "?")), ", ".join(fired) or "none"])
    return header, rows


def _history_rows(history):
    """The last epoch's value of each logged metric."""
    return ["metric", "last epoch"], [[k, format_number(v[-1] if v else None)] for k, v in history.items()]


def _settings_rows(settings):
    return ["setting", "value"], [[k, setting_text(v)] for k, v in settings.items()]


def _trial_rows(trials):
    names = list(dict.fromkeys(k for t in trials for k in (t.get("hyperparameters") or {})
                               if not k.startswith("tuner/")))
    header = ["trial", "status"] + names + ["clean", "robust", "objective"]
    rows = []
    for t in trials:
        hp = t.get("hyperparameters") or {}
        rows.append([str(t.get("trial_id", "")), str(t.get("status", ""))] + [format_number(hp.get(n)) for n in names]
                    + [format_percent(t.get("clean_accuracy")), format_percent(t.get("robust_accuracy")),
                       format_number(t.get("objective"))])
    return header, rows


def report_sections(data: dict) -> list:
    """The content of a report's pages, shared by its Markdown and HTML.

    Args:
        data: A report dict (`load_report`).

    Returns:
        `[(heading, [(caption, header, rows)], [figure keys])]` in page order, every
        table cell a string.
    """
    models = data["models"]
    out = []
    summary = _summary_rows(models)
    if summary[1]:
        out.append(("Summary: worst-case robust accuracy", [(None, *summary)], ["robust_accuracy"]))
    for name, sections in models.items():
        r = sections.get("robustness")
        tables = []
        if r:
            tables += [("Evaluation settings" if caption == "Settings" else caption, header, rows)
                       for caption, header, rows in robustness_tables(r)]
        if sections.get("training"):
            tables.append(("Training settings", *_settings_rows(sections["training"])))
        if sections.get("history"):
            tables.append(("Training metrics", *_history_rows(sections["history"])))
        out.append((f"Model: {name}", tables, [f"alignment_{_slug(name)}"]))
    out.append(("Perturbation norms and loss landscape", [], ["minimum_norms", "loss_landscape"]))
    tuning = data.get("tuning")
    if tuning:
        tables = []
        if tuning.get("best_hyperparameters"):
            best = {k: v for k, v in tuning.items() if k not in ("trials", "best_hyperparameters")}
            best.update(tuning["best_hyperparameters"])
            tables.append(("Best trial", *_settings_rows(best)))
        tables.append(("Trials", *_trial_rows(tuning.get("trials", []))))
        out.append(("Tuning", tables, ["tuning"]))
    return out


def _figure_keys(keys, figures):
    """The figure keys of a section that exist, with the per-norm robust accuracy plots expanded."""
    found = []
    for key in keys:
        found += [k for k in figures if k == key or (key == "robust_accuracy" and k.startswith(key + "_"))]
    return found


def _markdown(title, sections, written):
    lines = [f"# {title}", "", f"Written by gfa_keras on {written}.", ""]
    for heading, tables, shown in sections:
        lines += ["## " + heading, ""]
        for caption, header, rows in tables:
            if caption:
                lines += [f"### {caption}", ""]
            lines += markdown_table(header, rows) + [""]
        for path, caption in shown:
            lines += [f"![{caption}]({path.name})", ""]
    return "\n".join(lines)


def _now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
