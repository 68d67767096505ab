"""The summary table ``privfed run`` prints for a finished run."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from privfed.federated.metrics import beats_majority
from privfed.rundir import describe_epsilon

__all__ = ["format_figure", "summary_table"]


def summary_table(summary: dict[str, Any]) -> Table:
    """The figures of a run's ``summary.json`` as a two-column table (a figure that does
    not apply, e.g. the central test set's under federated evaluation only, is left out)."""
    table = Table(title="summary", show_header=True)
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows = [
        ("dataset / model", f"{summary['dataset']} / {summary['model']}"),
        ("clients x rounds", f"{summary['num_clients']} x {summary['rounds']}"),
        ("parameters", f"{summary['num_params']:,}"),
        ("final test accuracy", format_figure(summary["final_accuracy"], ".4f")),
        *_utility_rows(summary),
        ("privacy", _privacy_cell(summary)),
        ("secure aggregation", summary["secure_aggregation"]),
        ("final test loss", format_figure(summary["final_loss"], ".4f")),
        ("seconds per round", format_figure(summary["seconds_per_round"], ".4f")),
        ("bytes up per client per round",
         format_figure(summary["bytes_up_per_client_round"], ",.0f")),
        ("bytes up / down in total", f"{summary['bytes_up_total']:,} / "
                                     f"{summary['bytes_down_total']:,}"),
    ]
    for name, value in rows:
        if value != "-":  # e.g. no central test set: federated evaluation only
            table.add_row(name, value)
    return table


def _utility_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The clinician's metrics of the central test set and of the last federated
    evaluation, each beside the majority-class baseline (flagged when not beaten)."""
    rows = []
    for label, metrics in (("test", summary.get("test_metrics")),
                           ("federated", (summary.get("federated_metrics") or {}).get("pooled"))):
        if not metrics:
            continue
        if label == "federated":
            rows.append(("federated accuracy (pooled)", format_figure(metrics["accuracy"], ".4f")))
        rows.append((f"{label}: balanced acc / ROC AUC / F1",
                     f"{format_figure(metrics['balanced_accuracy'], '.4f')} / "
                     f"{format_figure(metrics['roc_auc'], '.4f')} / "
                     f"{format_figure(metrics['f1_macro'], '.4f')}"))
        if metrics.get("sensitivity") is not None:
            rows.append((f"{label}: sensitivity / specificity",
                         f"{format_figure(metrics['sensitivity'], '.4f')} / "
                         f"{format_figure(metrics['specificity'], '.4f')}"))
        flag = "" if beats_majority(metrics) else "  [red]model does NOT beat it[/]"
        rows.append((f"{label}: majority-class baseline",
                     f"{metrics['majority_baseline']:.4f}{flag}"))
    worst = (summary.get("federated_metrics") or {}).get("worst")
    if worst:
        rows.append(("worst client (accuracy)", f"client {worst['client']}: "
                                                f"{worst['accuracy']:.4f}"))
    return rows


def _privacy_cell(summary: dict[str, Any]) -> str:
    if summary["privacy_mechanism"] == "none":
        return "none (epsilon = inf)"
    text = (f"{summary['privacy_mechanism']}: epsilon {describe_epsilon(summary, '.3g')} "
            f"at delta {summary['delta']:.0e}")
    if summary.get("stop_reason"):
        text += f"; stopped early: {summary['stop_reason']}"
    return text


def format_figure(value: float | None, spec: str) -> str:
    """``value`` formatted with ``spec``; ``"-"`` for a figure that does not exist."""
    return "-" if value is None else format(value, spec)
