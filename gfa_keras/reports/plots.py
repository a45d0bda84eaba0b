"""Figures for robustness results, as matplotlib `Figure`s (saved as PNG when given a path).

Each `plot_*` function takes plain data (a `RobustnessReport` or its JSON dict, a
Keras history dict, a list of tuner trial dicts), so reports can be redrawn from
JSON without TensorFlow. `loss_along_directions` computes the data of the paper's
Figure 2 from a model. The figures are built on `matplotlib.figure.Figure` directly,
never on pyplot: no global state, no display needed.

| function | shows |
|---|---|
| `plot_robust_accuracy` | worst-case robust accuracy against eps, one curve per model |
| `plot_alignment` | per-layer alignment cos(dL/dh, h) over the epochs, one curve per logged metric |
| `plot_robust_overfitting` | accuracy on the attacked training batches against held-out robust accuracy, per epoch |
| `plot_loss_landscape` | the loss along radial and tangential directions, two curves per model |
| `plot_minimum_norms` | the distribution (ECDF) of minimum perturbation norms, one curve per model and attack |
| `plot_tuning_trials` | the tuner's trials, clean against robust accuracy, with the Pareto front |
"""
from __future__ import annotations

import math
import os
from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = [
    "plot_robust_accuracy",
    "plot_alignment",
    "plot_robust_overfitting",
    "loss_along_directions",
    "plot_loss_landscape",
    "plot_minimum_norms",
    "plot_tuning_trials",
    "pareto_front_indices",
]

_DPI = 110


def _as_dict(report) -> dict:
    """A `RobustnessReport` or its `to_dict()` form, as the dict."""
    if hasattr(report, "to_dict"):
        return report.to_dict()
    if isinstance(report, Mapping) and "worst_case_accuracy" in report:
        return dict(report)
    raise ValueError(
        "Expected a RobustnessReport or the dict of its JSON. "
        f"Received: an object of type {type(report).__name__}"
    )


def _as_named(items, what) -> dict:
    """A mapping name -> item, or a single item under the name "model"."""
    if isinstance(items, Mapping) and not ("worst_case_accuracy" in items or "radial" in items or _is_history(items)):
        named = dict(items)
    else:
        named = {"model": items}
    if not named:
        raise ValueError(f"Expected at least one {what}. Received: an empty mapping")
    return named


def _finish(fig, path):
    fig.tight_layout()
    if path is not None:
        fig.savefig(os.fspath(path), dpi=_DPI)
    return fig


def plot_robust_accuracy(reports, path: str | os.PathLike | None = None) -> Figure:
    """Plots worst-case robust accuracy against eps, one curve per model.

    Each curve starts at eps = 0 with the clean accuracy (unless eps 0 was
    evaluated) and follows the per-example worst case over the attack cascade.

    Args:
        reports: `{model name: RobustnessReport or its dict}`, or one report.
        path: If given, the figure is saved there as PNG.

    Returns:
        The `Figure` (one `Line2D` per model on its only axes).

    Raises:
        ValueError: If there is no report, a report is of another type, or the
            reports were evaluated in different norms.

    Example:

    ```python
    plot_robust_accuracy({"plain": plain_report, "gfa": gfa_report}, "robust_accuracy.png")
    ```
    """
    named = {name: _as_dict(r) for name, r in _as_named(reports, "report").items()}
    norms = sorted({r["norm"] for r in named.values()})
    if len(norms) != 1:
        raise ValueError(f"Reports to compare on one chart must share a norm. Received norms: {norms}")
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    for name, report in named.items():
        eps, accuracy = list(report["eps"]), list(report["worst_case_accuracy"])
        if eps[0] > 0:
            eps, accuracy = [0.0] + eps, [report["clean_accuracy"]] + accuracy
        ax.plot(eps, accuracy, marker="o", label=name)
    attacks = sorted({a for r in named.values() for a in r["attacks"]})
    ax.set(xlabel=f"eps ({norms[0]})", ylabel="robust accuracy (worst case, all points)", ylim=(-0.02, 1.02),
           title="Robust accuracy under " + ", ".join(attacks))
    ax.grid(alpha=0.3)
    ax.legend()
    return _finish(fig, path)


def plot_alignment(history, path: str | os.PathLike | None = None, title: str | None = None) -> Figure:
    """Plots the per-layer alignment cos(dL/dh, h) logged by GFA training over the epochs.

    Training metrics `alignment_<layer>` are solid lines, their validation
    counterparts `val_alignment_<layer>` dashed in the same colour.

    Args:
        history: A `keras.callbacks.History`, or its `.history` dict
            `{metric: [value per epoch]}`.
        path: If given, the figure is saved there as PNG.
        title: The axes title; default "Gradient-feature alignment per layer".

    Returns:
        The `Figure` (one `Line2D` per alignment metric).

    Raises:
        ValueError: If the history holds no `alignment_` metric (the model was not
            trained with GFA).

    Example:

    ```python
    history = model.fit(x, y, epochs=10, validation_split=0.1)
    plot_alignment(history, "alignment.png")
    ```
    """
    logs = getattr(history, "history", history)
    train_keys = [k for k in logs if k.startswith("alignment_")]
    if not train_keys:
        raise ValueError(
            "The history has no alignment_<layer> metrics; only models trained with GFA log them. "
            f"Received metrics: {sorted(logs)}"
        )
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    for color, key in zip(_colors(len(train_keys)), train_keys):
        layer = key[len("alignment_"):]
        ax.plot(*_per_epoch(logs[key]), color=color, marker=".", label=f"{layer} (train)")
        if f"val_{key}" in logs:
            ax.plot(*_per_epoch(logs[f"val_{key}"]), color=color, linestyle="--", label=f"{layer} (validation)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel="alignment cos(dL/dh, h)", ylim=(-1.02, 1.02),
           title=title or "Gradient-feature alignment per layer")
    ax.axhline(0.0, color="0.6", linewidth=0.8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _finish(fig, path)


def plot_robust_overfitting(histories, path: str | os.PathLike | None = None, *, train_key: str = "accuracy",
                            held_out_key: str = "val_robust_accuracy", title: str | None = None) -> Figure:
    """Plots, per epoch, an adversarially trained model's accuracy on its own attacked training
    batches (solid) against its robust accuracy on held-out points (dashed, same colour), and
    marks the best held-out epoch.

    The gap between the two curves is what adversarial weight perturbation, weight averaging and
    robust early stopping work on (Rice et al. 2020: robust overfitting): a held-out curve that
    peaks and falls while the training curve climbs is the case where they pay; two curves that
    rise together (the model is short of capacity or training) leave them little to gain.

    Args:
        histories: A `keras.callbacks.History` or its `.history` dict, or a mapping name -> either
            (one pair of curves per name). Fit with the `RobustAccuracy` or `RobustEarlyStopping`
            callback to log `val_robust_accuracy`.
        path: If given, the figure is saved there as PNG.
        train_key: The training metric (for a hardened model, fit's accuracy is measured on the
            perturbed batches it trains on).
        held_out_key: The held-out robust accuracy metric.
        title: The axes title; default "Training vs held-out robust accuracy".

    Returns:
        The `Figure` (per history: the training line, the held-out line, the best-epoch marker).

    Raises:
        ValueError: For no histories, or a history without either metric (naming the metrics it has).

    Example:

    ```python
    history = model.fit(x, y, epochs=30, callbacks=[RobustAccuracy((x_val, y_val), eps=0.1)])
    plot_robust_overfitting(history, "overfitting.png")
    ```
    """
    named = _as_named(histories, "history")
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    for color, (name, history) in zip(_colors(len(named)), named.items()):
        logs = getattr(history, "history", history)
        missing = [key for key in (train_key, held_out_key) if key not in logs]
        if missing:
            raise ValueError(
                f"The history {name!r} lacks {missing}; the held-out one is logged by the RobustAccuracy "
                f"callback. Received metrics: {sorted(logs)}"
            )
        prefix = "" if len(named) == 1 and name == "model" else f"{name}: "
        ax.plot(*_per_epoch(logs[train_key]), color=color, label=f"{prefix}training (attacked batches)")
        epochs, held_out = _per_epoch(logs[held_out_key])
        ax.plot(epochs, held_out, color=color, linestyle="--", label=f"{prefix}held-out robust")
        if not np.all(np.isnan(held_out)):
            best = int(np.nanargmax(held_out))
            ax.plot([epochs[best]], [held_out[best]], color=color, marker="o", linestyle="none",
                    label=f"{prefix}best held-out (epoch {epochs[best]})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel="accuracy", title=title or "Training vs held-out robust accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _finish(fig, path)


def _is_history(value):
    """A history dict (metric -> list of per-epoch values) rather than a mapping of histories."""
    return all(isinstance(v, (list, tuple, np.ndarray)) for v in value.values()) and bool(value)


def _per_epoch(values):
    """Epoch numbers from 1, and the values as floats (a NaN stored as JSON null stays a gap)."""
    values = np.array([np.nan if v is None else v for v in values], dtype=float)
    return np.arange(1, len(values) + 1), values


def _colors(n):
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def loss_along_directions(model, x, y, radii=None, *, seed: int = 0, batch_size: int = 256) -> dict:
    """The mean cross-entropy along radial and tangential directions around points (paper, Fig. 2).

    For each point x: the radial direction is r = x / ||x|| (along the input
    itself); the tangential one is a random Gaussian direction with its component
    along x removed, normalised (orthogonal to x). The loss is evaluated at
    x + a r and x + a t for each a in `radii` (an L2 distance in pixel scale, not
    clipped to the pixel box: this is a landscape, not an attack) and averaged
    over the points.

    Args:
        model: A classifier mapping a batch to logits.
        x: Points, shape `(n, ...)`, none of them all zero.
        y: Integer labels, shape `(n,)`.
        radii: Signed distances a; default 21 values from -r to r, r = half the
            median ||x||.
        seed: Seed of the tangential directions (NumPy).
        batch_size: Points per forward pass.

    Returns:
        `{"radii": [a ...], "radial": [mean loss ...], "tangential": [mean loss ...]}`,
        plain floats, ready for JSON and `plot_loss_landscape`.

    Raises:
        ValueError: If x and y differ in length, x is empty or holds an all-zero
            point (no radial direction), or radii is empty.

    Example:

    ```python
    curves = {"plain": loss_along_directions(plain, x_test[:200], y_test[:200])}
    plot_loss_landscape(curves, "landscape.png")
    ```
    """
    import keras

    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y).astype(np.int64)
    if x.ndim < 2 or len(x) == 0 or len(x) != len(y) or y.ndim != 1:
        raise ValueError(
            "Expected points x of shape (n, ...) with n > 0 and labels y of shape (n,). "
            f"Received: x.shape={x.shape}, y.shape={y.shape}"
        )
    flat = x.reshape(len(x), -1)
    norms = np.linalg.norm(flat, axis=1)
    if np.any(norms == 0):
        raise ValueError(
            "An all-zero point has no radial direction. Expected points with ||x|| > 0. "
            f"Received: zero points at indices {np.flatnonzero(norms == 0)[:10].tolist()}"
        )
    radial = flat / norms[:, None]
    noise = np.random.default_rng(seed).standard_normal(flat.shape).astype(np.float32)
    tangential = noise - np.sum(noise * radial, axis=1, keepdims=True) * radial
    tangential /= np.linalg.norm(tangential, axis=1, keepdims=True)
    if radii is None:
        half = 0.5 * float(np.median(norms))
        radii = np.linspace(-half, half, 21)
    radii = [float(a) for a in np.ravel(radii)]
    if not radii:
        raise ValueError("radii must hold at least one distance. Received: radii=[]")

    def mean_loss(points):
        losses = []
        for start in range(0, len(points), batch_size):
            logits = model(points[start:start + batch_size], training=False)
            losses.append(keras.ops.convert_to_numpy(keras.losses.sparse_categorical_crossentropy(
                y[start:start + batch_size], logits, from_logits=True)))
        return float(np.mean(np.concatenate(losses)))

    curves = {"radii": radii, "radial": [], "tangential": []}
    for a in radii:
        curves["radial"].append(mean_loss((flat + a * radial).reshape(x.shape)))
        curves["tangential"].append(mean_loss((flat + a * tangential).reshape(x.shape)))
    return curves


def plot_loss_landscape(curves, path: str | os.PathLike | None = None) -> Figure:
    """Plots the loss along radial (solid) and tangential (dashed) directions, per model.

    Args:
        curves: `{model name: loss_along_directions(...) result}`, or one result.
        path: If given, the figure is saved there as PNG.

    Returns:
        The `Figure` (two `Line2D`s per model).

    Raises:
        ValueError: If a result lacks "radii", "radial" or "tangential", or their
            lengths differ.

    Example:

    ```python
    plot_loss_landscape({"plain": loss_along_directions(plain, x, y),
                         "gfa": loss_along_directions(hardened, x, y)}, "landscape.png")
    ```
    """
    named = _as_named(curves, "set of curves")
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    for color, (name, curve) in zip(_colors(len(named)), named.items()):
        missing = [k for k in ("radii", "radial", "tangential") if k not in curve]
        if missing or not len(curve["radii"]) == len(curve["radial"]) == len(curve["tangential"]):
            raise ValueError(
                "Each set of curves needs equal-length 'radii', 'radial' and 'tangential' lists, as "
                f"loss_along_directions returns. Received for {name!r}: keys {sorted(curve)}"
            )
        ax.plot(curve["radii"], curve["radial"], color=color, label=f"{name}: radial")
        ax.plot(curve["radii"], curve["tangential"], color=color, linestyle="--", label=f"{name}: tangential")
    ax.set(xlabel="distance a along the direction (L2, pixel scale)", ylabel="mean cross-entropy",
           title="Loss along radial (x/||x||) and tangential (orthogonal) directions")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _finish(fig, path)


def plot_minimum_norms(reports, path: str | os.PathLike | None = None) -> Figure:
    """Plots the distribution of minimum adversarial perturbation norms (DeepFool, CW, EAD, ...).

    One panel per attack; in each, one curve per model: the empirical CDF, i.e.
    the fraction of the clean-correct points broken with a perturbation of norm at
    most r. Failed attacks (infinite norm) never count as broken, so a curve that
    stays below 1 shows the failure rate.

    Args:
        reports: `{model name: RobustnessReport or its dict}`, or one report; those
            without `minimum_norm` statistics are left out.
        path: If given, the figure is saved there as PNG.

    Returns:
        The `Figure`: one axes per attack, one `Line2D` per model that ran it.

    Raises:
        ValueError: If no report has minimum-norm statistics.

    Example:

    ```python
    report = evaluate_robustness(model, (x, y), "fast", eps=0.1, minimum_norm_attacks=("deepfool", "ead"))
    plot_minimum_norms({"gfa": report}, "minimum_norms.png")
    ```
    """
    named = {name: _as_dict(r) for name, r in _as_named(reports, "report").items()}
    attacks = list(dict.fromkeys(a for r in named.values() for a in r.get("minimum_norm", {})))
    if not attacks:
        raise ValueError("No report has minimum-norm statistics. Expected reports evaluated with "
                         "minimum_norm_attacks=(...). Received: none with minimum_norm")
    fig = Figure(figsize=(4.2 * len(attacks), 4.0))
    axes = fig.subplots(1, len(attacks), squeeze=False)[0]
    colors = dict(zip(named, _colors(len(named))))
    for ax, attack in zip(axes, attacks):
        for name, report in named.items():
            stats = report.get("minimum_norm", {}).get(attack)
            if stats is None:
                continue
            # Zero norms are points already misclassified: the distribution is over the others.
            norms = np.array([math.inf if v is None else v for v in stats["norms"]], dtype=float)
            norms = np.sort(norms[norms > 0])
            if len(norms) == 0:
                ax.plot([], [], color=colors[name], label=f"{name} (no clean-correct point)")
                continue
            broken = np.isfinite(norms)
            fraction = np.arange(1, len(norms) + 1) / len(norms)
            label = f"{name}: median {np.median(norms):.3g} over {len(norms)} points"
            ax.step(norms[broken], fraction[broken], where="post", color=colors[name], label=label)
        ax.set(xlabel=f"minimum perturbation norm ({named[next(iter(named))]['norm']})",
               ylabel="fraction of clean-correct points broken", ylim=(-0.02, 1.02), title=attack)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return _finish(fig, path)


def pareto_front_indices(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats in both coordinates (higher is better).

    Args:
        points: `(clean accuracy, robust accuracy)` pairs.

    Returns:
        Indices of the Pareto-optimal points, by increasing first coordinate.

    Example:

    >>> pareto_front_indices([(0.9, 0.1), (0.8, 0.3), (0.7, 0.2)])
    [1, 0]
    """
    front = []
    for i, (a, b) in enumerate(points):
        dominated = any(c >= a and d >= b and (c > a or d > b) for c, d in points)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


def plot_tuning_trials(trials: Sequence[Mapping], path: str | os.PathLike | None = None,
                       color_by: str | None = None) -> Figure:
    """Plots a tuner's trials: clean accuracy against robust accuracy, with the Pareto front.

    Trials without both accuracies (failed or still running) are left out.

    Args:
        trials: Dicts with "clean_accuracy", "robust_accuracy" and optionally
            "hyperparameters" (a dict) and "trial_id", as `gfa_keras.tuning.search` records them.
        path: If given, the figure is saved there as PNG.
        color_by: A hyperparameter to colour the points by (log scale when all its
            values are positive); default: `penalty_weight` when every trial has
            it, else the only numeric hyperparameter, if there is one.

    Returns:
        The `Figure`: one scatter collection with one point per finished trial, and
        a `Line2D` through the Pareto front.

    Raises:
        ValueError: If no trial has both accuracies, or `color_by` is not a numeric
            hyperparameter of every plotted trial.

    Example:

    ```python
    result = gfa_keras.tuning.search.tune(...)
    plot_tuning_trials(result.trials, "tuning.png")
    ```
    """
    done = [t for t in trials if t.get("clean_accuracy") is not None and t.get("robust_accuracy") is not None]
    if not done:
        raise ValueError(
            "No trial has both clean_accuracy and robust_accuracy. Expected finished trials. "
            f"Received: {len(trials)} trials with statuses {sorted({str(t.get('status')) for t in trials})}"
        )
    points = [(float(t["clean_accuracy"]), float(t["robust_accuracy"])) for t in done]
    # Keras Tuner's bookkeeping values ("tuner/epochs", ...) are not hyperparameters to show.
    hps = [{k: v for k, v in (t.get("hyperparameters") or {}).items() if not k.startswith("tuner/")} for t in done]
    if color_by is None:
        numeric = set.intersection(*[{k for k, v in hp.items() if _is_number(v)} for hp in hps])
        if "penalty_weight" in numeric:
            color_by = "penalty_weight"
        elif len(numeric) == 1:
            color_by = next(iter(numeric))
    elif not all(_is_number(hp.get(color_by)) for hp in hps):
        raise ValueError(
            f"color_by must name a numeric hyperparameter of every trial. Received: color_by={color_by!r}; "
            f"hyperparameters of the first trial: {hps[0]}"
        )
    fig = Figure(figsize=(6.4, 4.6))
    ax = fig.add_subplot()
    xs, ys = zip(*points)
    if color_by is None:
        ax.scatter(xs, ys, s=36)
    else:
        from matplotlib.colors import LogNorm, Normalize

        values = np.array([float(hp[color_by]) for hp in hps])
        scale = LogNorm() if np.all(values > 0) and values.max() > values.min() else Normalize()
        scatter = ax.scatter(xs, ys, c=values, cmap="viridis", norm=scale, s=36)
        fig.colorbar(scatter, ax=ax, label=color_by)
    front = pareto_front_indices(points)
    ax.plot([points[i][0] for i in front], [points[i][1] for i in front], color="crimson", linewidth=1,
            label=f"Pareto front ({len(front)} trials)")
    ax.set(xlabel="clean accuracy", ylabel="robust accuracy",
           title=f"Tuner trials ({len(done)} of {len(trials)} finished)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _finish(fig, path)


def _is_number(value):
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(float(value))
