"""``report.md`` and PNG plots of a sweep's results."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

from attacks.audit import format_confidence  # noqa: E402
from experiments.audits import common_confidence  # noqa: E402
from privfed.atomic import write_text  # noqa: E402
from privfed.clientdata import load_partitioned  # noqa: E402
from privfed.config import ExperimentConfig  # noqa: E402
from privfed.data import label_histogram  # noqa: E402
from privfed.plots import save_figure  # noqa: E402
from privfed.rundir import DIAGNOSTICS_PLOT  # noqa: E402

__all__ = ["HEADLINE_METRICS", "plot_cost_per_aggregator", "plot_empirical_epsilon",
           "plot_label_histograms", "plot_metrics_vs_field", "plot_vs_epsilon", "write_report"]


def plot_vs_epsilon(
    table: Sequence[dict[str, Any]], figure: str, ylabel: str, path: Path, *, name: str = ""
) -> Path | None:
    """Mean ``figure`` (95% interval) against epsilon, one line per privacy mechanism, the
    non-private runs as a dashed line; titled with the sweep's ``name`` and the figure.

    Returns None (and writes nothing) when no row has a finite epsilon and the figure.
    """
    mean = f"{figure}_mean"
    private = [r for r in table if _finite(r.get("epsilon_mean")) and _finite(r.get(mean))]
    if not private:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for mechanism in sorted({r["privacy_mechanism"] for r in private}):
        rows = sorted((r for r in private if r["privacy_mechanism"] == mechanism),
                      key=lambda r: r["epsilon_mean"])
        ax.errorbar([r["epsilon_mean"] for r in rows], [r[mean] for r in rows],
                    yerr=[r[f"{figure}_ci95"] or 0 for r in rows], marker="o", capsize=3,
                    label=mechanism)
    baseline = [r[mean] for r in table if r["privacy_mechanism"] == "none" and _finite(r.get(mean))]
    if baseline:
        ax.axhline(float(np.mean(baseline)), color="grey", linestyle="--", label="non-private")
    ax.set_xscale("log")
    ax.set_xticks(sorted({r["epsilon_mean"] for r in private}))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.3g"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("epsilon (log scale)")
    ax.set_ylabel(ylabel)
    ax.set_title(_titled(name, f"{ylabel} against epsilon"))
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_empirical_epsilon(
    table: Sequence[dict[str, Any]], path: Path, confidence: float | None = None, *,
    name: str = "",
) -> Path | None:
    """The canary audit's epsilon lower bound against the theoretical epsilon (with y = x:
    a point above the diagonal would be a DP bug).

    ``confidence`` (the audits' ``1 - beta``, e.g. from
    :func:`~experiments.audits.common_confidence`) goes into the axis label when given;
    the sweep's ``name`` into the title.
    """
    rows = [r for r in table
            if _finite(r.get("epsilon_mean")) and _finite(r.get("epsilon_lower_mean"))]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(5, 4))
    theory = [r["epsilon_mean"] for r in rows]
    ax.scatter(theory, [r["epsilon_lower_mean"] for r in rows], label="audited runs")
    top = max(theory) * 1.1
    ax.plot([0, top], [0, top], color="grey", linestyle="--", label="lower bound = epsilon")
    ax.set_xlabel("theoretical epsilon")
    ax.set_ylabel("empirical epsilon lower bound" if confidence is None else
                  f"empirical epsilon lower bound ({format_confidence(confidence)})")
    ax.set_title(_titled(name, "empirical against theoretical epsilon"))
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_cost_per_aggregator(table: Sequence[dict[str, Any]], path: Path, *,
                             name: str = "") -> Path:
    """Seconds per round and bytes up per client per round, by secure aggregation kind
    (titled with the sweep's ``name``)."""
    kinds = sorted({r["secure_aggregation"] for r in table})
    seconds = [np.mean([r["seconds_per_round_mean"] for r in table
                        if r["secure_aggregation"] == k]) for k in kinds]
    kib = [np.mean([r["bytes_up_per_client_round_mean"] for r in table
                    if r["secure_aggregation"] == k]) / 1024 for k in kinds]
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.5))
    left.bar(kinds, seconds)
    left.set_xlabel("secure aggregation")
    left.set_ylabel("seconds per round")
    right.bar(kinds, kib)
    right.set_xlabel("secure aggregation")
    right.set_ylabel("KiB up per client per round")
    fig.suptitle(_titled(name, "cost per secure aggregator"))
    return _save(fig, path)


def plot_label_histograms(config: ExperimentConfig, path: Path, *, name: str = "") -> Path:
    """Per-client label counts of ``config``'s partition (stacked bars), titled with
    ``name`` (the sweep's)."""
    data = config.data
    dataset, parts = load_partitioned(config)
    counts = label_histogram(dataset.y_train, parts, dataset.num_classes)
    fig, ax = plt.subplots(figsize=(7, 4))
    bottom = np.zeros(len(parts))
    for label in range(dataset.num_classes):
        ax.bar(np.arange(len(parts)), counts[:, label], bottom=bottom, label=str(label))
        bottom += counts[:, label]
    ax.set_xlabel("client")
    ax.set_ylabel("training samples")
    ax.set_title(_titled(name, f"labels per client ({data.dataset}, {data.partition})"))
    ax.legend(title="label", fontsize="small", ncol=2)
    return _save(fig, path)


HEADLINE_METRICS: tuple[tuple[str, str], ...] = (
    ("final_accuracy", "test accuracy"),
    ("epsilon", "epsilon"),
    ("mia_auc", "membership AUC (LiRA)"),
    ("mia_tpr_at_1pct_fpr", "membership TPR at 1% FPR"),
    ("epsilon_lower", "audited epsilon lower bound"),
    ("server_inversion_psnr_db", "server inversion PSNR (dB)"),
    ("seconds_per_round", "seconds per round"),
    ("bytes_up_per_client_round", "bytes up per client per round"),
)
"""Figure of :func:`~experiments.results.aggregate_over_seeds` and its axis label, for the
plots against each swept field."""


def plot_metrics_vs_field(
    table: Sequence[dict[str, Any]], field: str, swept: Sequence[str], path: Path, *,
    name: str = "",
) -> Path | None:
    """One panel per headline metric present: its mean (95% interval over seeds) against
    the values of the swept ``field``, one line per combination of the other ``swept``
    fields.

    The axis is categorical unless every value is a finite number, and logarithmic when
    such values are positive and span more than two decades. Returns None (and writes
    nothing) when no metric has a finite mean.
    """
    metrics = [(m, label) for m, label in HEADLINE_METRICS
               if any(_finite(r.get(f"{m}_mean")) for r in table)]
    if not metrics:
        return None
    values = _distinct(r[field] for r in table)
    positions, scale = _axis(values)
    others = [f for f in swept if f != field]
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in table:
        groups.setdefault(", ".join(f"{o}={_text(row[o])}" for o in others), []).append(row)
    cols = min(3, len(metrics))
    fig, axes = plt.subplots(math.ceil(len(metrics) / cols), cols, squeeze=False,
                             figsize=(4 * cols, 3.2 * math.ceil(len(metrics) / cols)))
    for ax, (metric, label) in zip(axes.flat, metrics, strict=False):
        for group, rows in groups.items():
            _plot_metric(ax, rows, metric, [positions[values.index(r[field])] for r in rows],
                         group or None)
        _set_axis(ax, positions, values, scale)
        ax.set(xlabel=field, ylabel=label)
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        fig.delaxes(ax)
    if len(groups) > 1:
        axes[0, 0].legend(fontsize="x-small")
    fig.suptitle(_titled(name, f"headline metrics against {field} (mean, 95% interval "
                               "over seeds)"))
    return _save(fig, path)


def write_report(sweep_dir: Path, rows: Sequence[dict[str, Any]],
                 table: Sequence[dict[str, Any]], first: ExperimentConfig, *,
                 swept: Sequence[str] = ()) -> Path:
    """Write ``report.md`` and its plots into ``sweep_dir``.

    Parameters
    ----------
    sweep_dir : Path
        Its name is the sweep's, in every plot's title.
    rows, table : sequence of dict
        :func:`~experiments.results.collect_rows` and
        :func:`~experiments.results.aggregate_over_seeds`.
    first : ExperimentConfig
        The first point's config (its partition is plotted).
    swept : sequence of str
        The grid's fields; each but ``seed`` with two values or more gets
        :func:`plot_metrics_vs_field`.
    """
    name = sweep_dir.name
    plots = [
        plot_vs_epsilon(table, "final_accuracy", "test accuracy",
                        sweep_dir / "accuracy_vs_epsilon.png", name=name),
        plot_vs_epsilon(table, "mia_auc", "membership AUC (LiRA)",
                        sweep_dir / "mia_auc_vs_epsilon.png", name=name),
        plot_vs_epsilon(table, "mia_tpr_at_1pct_fpr", "membership TPR at 1% FPR",
                        sweep_dir / "mia_tpr_vs_epsilon.png", name=name),
        plot_empirical_epsilon(table, sweep_dir / "empirical_epsilon.png",
                               confidence=common_confidence(rows), name=name),
        plot_cost_per_aggregator(table, sweep_dir / "cost_per_aggregator.png", name=name)
        if table else None,
        plot_label_histograms(first, sweep_dir / "label_histograms.png", name=name),
    ]
    varied = [f for f in swept if f != "seed" and len(_distinct(r[f] for r in table)) > 1]
    by_field = [plot_metrics_vs_field(table, f, varied, sweep_dir / f"metrics_vs_{_slug(f)}.png",
                                      name=name) for f in varied]
    failed = [r for r in rows if r["status"] != "done"]
    lines = [f"# Sweep report: {name}", "",
             f"{len(rows)} runs: {len(rows) - len(failed)} done, {len(failed)} not done.", "",
             "## Results (mean and 95% interval over seeds)", "", *_markdown(table), ""]
    if failed:
        lines += ["## Runs not done", "", "| run | status | error |", "|---|---|---|",
                  *(f"| {r['run']} | {r['status']} | {r['error']} |" for r in failed), ""]
    if any(by_field):
        lines += ["## Headline metrics against each swept field", ""]
        lines += [f"{f}: ![{p.stem}]({p.name})" for f, p in zip(varied, by_field, strict=True)
                  if p is not None]
        lines += [""]
    lines += ["## Plots", ""]
    lines += [f"![{p.stem}]({p.name})" for p in plots if p is not None]
    lines += _run_plots(sweep_dir, rows)
    return write_text(sweep_dir / "report.md", "\n".join(lines) + "\n")


def _run_plots(sweep_dir: Path, rows: Sequence[dict[str, Any]]) -> list[str]:
    """The report's sections linking plots inside the run directories: the audits'
    reconstructions and the DP diagnostics (:data:`privfed.rundir.DIAGNOSTICS_PLOT`)."""
    lines = []
    grids = [r["run"] for r in rows if (sweep_dir / r["run"] / "audit" / "reconstructions.png")
             .is_file()]
    if grids:
        lines += ["", "## Reconstructions from what the server decodes (audited runs)", ""]
        lines += [f"{run}: ![reconstructions]({run}/audit/reconstructions.png)" for run in grids]
    diagnosed = [r["run"] for r in rows if r["status"] == "done"
                 and (sweep_dir / r["run"] / DIAGNOSTICS_PLOT).is_file()]
    if diagnosed:
        lines += ["", "## DP diagnostics per round (clipped fraction, signal / noise, epsilon)",
                  ""]
        lines += [f"{run}: ![diagnostics]({run}/{DIAGNOSTICS_PLOT})" for run in diagnosed]
    return lines


def _plot_metric(ax: plt.Axes, rows: Sequence[dict[str, Any]], metric: str,
                 positions: Sequence[float], label: str | None) -> None:
    """The finite means of ``metric`` with their 95% intervals, in order of position."""
    points = sorted((x, r[f"{metric}_mean"], r[f"{metric}_ci95"] or 0)
                    for x, r in zip(positions, rows, strict=True)
                    if _finite(r.get(f"{metric}_mean")))
    if points:
        xs, means, halves = zip(*points, strict=True)
        ax.errorbar(xs, means, yerr=halves, marker="o", capsize=3, label=label)


def _axis(values: Sequence[Any]) -> tuple[list[float], str]:
    """Where each value goes on the x axis, and the scale: "log", "linear" or "category"."""
    if not all(_finite(v) and not isinstance(v, bool) for v in values):
        return [float(i) for i in range(len(values))], "category"
    numbers = [float(v) for v in values]
    if min(numbers) > 0 and max(numbers) / min(numbers) > 100:
        return numbers, "log"
    return numbers, "linear"


def _set_axis(ax: plt.Axes, positions: Sequence[float], values: Sequence[Any],
              scale: str) -> None:
    """Ticks at every value, labelled with it."""
    if scale == "log":
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xticks(list(positions), [_text(v) for v in values],
                  rotation=30 if scale == "category" else 0, fontsize="small")


def _distinct(values: Iterable[Any]) -> list[Any]:
    """``values`` without repeats, in order of first appearance (the grid's order)."""
    out: list[Any] = []
    for value in values:
        if value not in out:
            out.append(value)
    return out


def _text(value: Any) -> str:
    """A grid value as a label: numbers with ``%g``, tables and lists as JSON."""
    if isinstance(value, float):
        return f"{value:g}"
    return value if isinstance(value, str) else json.dumps(value)


def _slug(field: str) -> str:
    """``field`` as part of a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", field)


def _titled(name: str, what: str) -> str:
    """``"<name>: <what>"``, or ``what`` without a name."""
    return f"{name}: {what}" if name else what


def _markdown(table: Sequence[dict[str, Any]]) -> list[str]:
    if not table:
        return ["(no finished run)"]
    keys = [k for k in table[0] if not k.endswith(("_mean", "_ci95"))]
    figures = [k[: -len("_mean")] for k in table[0] if k.endswith("_mean")]
    head = keys + figures
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table:
        cells = [str(row[k]) for k in keys]
        cells += [_pm(row[f"{f}_mean"], row[f"{f}_ci95"]) for f in figures]
        out.append("| " + " | ".join(cells) + " |")
    return out


def _pm(mean: float | None, half: float | None) -> str:
    if mean is None:
        return "-"
    if math.isinf(mean):
        return "inf"
    if not half or half < 1e-9 * abs(mean):  # one run, or float noise around a constant
        return f"{mean:.4g}"
    return f"{mean:.4g} ± {half:.2g}"


def _finite(value: Any) -> bool:
    return isinstance(value, float | int) and math.isfinite(value)


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)
