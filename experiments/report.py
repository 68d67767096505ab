"""``report.md`` and PNG plots of a sweep's results."""

from __future__ import annotations

import math
from collections.abc import Sequence
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

__all__ = ["plot_cost_per_aggregator", "plot_empirical_epsilon", "plot_label_histograms",
           "plot_vs_epsilon", "write_report"]


def plot_vs_epsilon(
    table: Sequence[dict[str, Any]], figure: str, ylabel: str, path: Path
) -> Path | None:
    """Mean ``figure`` (95% interval) against epsilon, one line per privacy mechanism, the
    non-private runs as a dashed line.

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
    ax.set_title(f"{ylabel} against epsilon")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_empirical_epsilon(
    table: Sequence[dict[str, Any]], path: Path, confidence: float | None = None
) -> Path | None:
    """The canary audit's epsilon lower bound against the theoretical epsilon (with y = x:
    a point above the diagonal would be a DP bug).

    ``confidence`` (the audits' ``1 - beta``, e.g. from
    :func:`~experiments.audits.common_confidence`) goes into the axis label when given.
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
    ax.set_title("empirical against theoretical epsilon")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_cost_per_aggregator(table: Sequence[dict[str, Any]], path: Path) -> Path:
    """Seconds per round and bytes up per client per round, by secure aggregation kind."""
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
    fig.suptitle("cost per aggregator")
    return _save(fig, path)


def plot_label_histograms(config: ExperimentConfig, path: Path) -> Path:
    """Per-client label counts of ``config``'s partition (stacked bars)."""
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
    ax.set_title(f"labels per client: {data.dataset}, {data.partition}")
    ax.legend(title="label", fontsize="small", ncol=2)
    return _save(fig, path)


def write_report(sweep_dir: Path, rows: Sequence[dict[str, Any]],
                 table: Sequence[dict[str, Any]], first: ExperimentConfig) -> Path:
    """Write ``report.md`` and its plots into ``sweep_dir``."""
    plots = [
        plot_vs_epsilon(table, "final_accuracy", "test accuracy",
                        sweep_dir / "accuracy_vs_epsilon.png"),
        plot_vs_epsilon(table, "mia_auc", "membership AUC (LiRA)",
                        sweep_dir / "mia_auc_vs_epsilon.png"),
        plot_vs_epsilon(table, "mia_tpr_at_1pct_fpr", "membership TPR at 1% FPR",
                        sweep_dir / "mia_tpr_vs_epsilon.png"),
        plot_empirical_epsilon(table, sweep_dir / "empirical_epsilon.png",
                               confidence=common_confidence(rows)),
        plot_cost_per_aggregator(table, sweep_dir / "cost_per_aggregator.png") if table else None,
        plot_label_histograms(first, sweep_dir / "label_histograms.png"),
    ]
    failed = [r for r in rows if r["status"] != "done"]
    lines = [f"# Sweep report: {sweep_dir.name}", "",
             f"{len(rows)} runs: {len(rows) - len(failed)} done, {len(failed)} not done.", "",
             "## Results (mean and 95% interval over seeds)", "", *_markdown(table), ""]
    if failed:
        lines += ["## Runs not done", "", "| run | status | error |", "|---|---|---|",
                  *(f"| {r['run']} | {r['status']} | {r['error']} |" for r in failed), ""]
    lines += ["## Plots", ""]
    lines += [f"![{p.stem}]({p.name})" for p in plots if p is not None]
    grids = [r["run"] for r in rows if (sweep_dir / r["run"] / "audit" / "reconstructions.png")
             .is_file()]
    if grids:
        lines += ["", "## Reconstructions from what the server decodes (audited runs)", ""]
        lines += [f"{run}: ![reconstructions]({run}/audit/reconstructions.png)" for run in grids]
    return write_text(sweep_dir / "report.md", "\n".join(lines) + "\n")


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
