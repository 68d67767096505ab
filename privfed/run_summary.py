"""A finished run's headline figures: ``summary.json``'s content (:func:`summarize`) and the
table ``privfed run`` prints of it (:func:`summary_table`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.table import Table

from privfed.config import ExperimentConfig
from privfed.federated import History
from privfed.federated.metrics import beats_majority
from privfed.privacy.diagnostics import NOT_PRIVATE
from privfed.privacy.randomness import REPRODUCIBLE_NOISE

__all__ = ["describe_epsilon", "format_figure", "summarize", "summary_table"]


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
    if summary.get("neighbouring"):
        text += f", {summary['neighbouring']} ({summary['accounting']})"
    if summary.get("stop_reason"):
        text += f"; stopped early: {summary['stop_reason']}"
    return text


def format_figure(value: float | None, spec: str) -> str:
    """``value`` formatted with ``spec``; ``"-"`` for a figure that does not exist."""
    return "-" if value is None else format(value, spec)


def summarize(
    config: ExperimentConfig, history: History, num_params: int,
    test_metrics: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The headline figures of a finished run, as plain JSON-able data: utility (the
    central test set's ``test_metrics`` and the last federated evaluation, each with the
    majority-class baseline), privacy and cost."""
    rounds = len(history.rounds)
    participations = sum(len(r.clients) for r in history.rounds)
    last = history.evaluated()[-1] if history.evaluated() else None
    return {
        "name": config.name,
        "config_hash": config.short_hash(),
        "dataset": config.data.dataset,
        "model": config.model.name,
        "num_params": num_params,
        "num_clients": config.data.num_clients,
        "rounds": rounds,
        "final_accuracy": last.test_accuracy if last else None,
        "final_loss": last.test_loss if last else None,
        "test_metrics": dict(test_metrics) if test_metrics is not None else None,
        "federated_metrics": _last_federated(history),
        "seconds_total": history.total("seconds"),
        "seconds_per_round": history.total("seconds") / rounds if rounds else None,
        "bytes_up_total": int(history.total("bytes_up")),
        "bytes_down_total": int(history.total("bytes_down")),
        "bytes_up_per_client_round": history.total("bytes_up") / participations
        if participations else None,
        "secure_aggregation": config.secure.kind,
        **{f"seconds_{stage}_total": sum(r.extra.get(f"seconds_{stage}", 0.0)
                                         for r in history.rounds)
           for stage in ("encode", "aggregate", "decode")},
        **_privacy_summary(config, history),
    }


def _last_federated(history: History) -> dict[str, Any] | None:
    """The last federated evaluation's pooled metrics and worst client (None if none)."""
    runs = [r.federated for r in history.rounds if r.federated and r.federated["pooled"]]
    if not runs:
        return None
    return {"pooled": runs[-1]["pooled"], "worst": runs[-1]["worst"],
            "clients": len(runs[-1]["included"])}


_NOISE_COHORT_KEYS = ("epsilon_deployment", "cohort_size", "noise_cohort_size",
                      "noise_multiplier_run")
"""What a run with ``privacy.noise_cohort_size`` adds to the summary."""


def _privacy_summary(config: ExperimentConfig, history: History) -> dict[str, Any]:
    """The privacy spent by the end of training, as the mechanism reported it: the headline
    epsilon, the party it holds against, how it was accounted and for which neighbouring
    relation, the epsilon against an outsider, whether the noise can be regenerated from
    the config, and the per-round diagnostics released (``"exact"``: non-private ones
    too); with a noise cohort also the deployment's epsilon and both cohort sizes
    (``epsilon`` stays the run's own)."""
    mechanism = config.privacy.mechanism
    if mechanism == "none":
        return {"privacy_mechanism": mechanism, "privacy_unit": None, "epsilon": None,
                "delta": None}
    last = history.rounds[-1].extra if history.rounds else {}
    return {
        "privacy_mechanism": mechanism,
        "privacy_unit": "record" if mechanism == "local" else "user",
        "epsilon": last.get("epsilon"),
        "epsilon_against": last.get("epsilon_against"),
        "accounting": last.get("accounting"),
        "neighbouring": last.get("neighbouring"),
        "epsilon_outsider": last.get("epsilon_outsider", last.get("epsilon")),
        "delta": last.get("delta"),
        "noise": last.get("noise"),
        "diagnostics": config.privacy.diagnostics,
        "stop_reason": history.stop_reason,
        **{key: last[key] for key in _NOISE_COHORT_KEYS if key in last},
    }


def describe_epsilon(summary: Mapping[str, Any], spec: str = ".2f") -> str:
    """One line for a run's privacy: e.g. ``"3.00 record vs server"``,
    ``"17.9 user vs server (7.94 vs outsider)"``, ending in ``"(noise reproducible from the
    config)"`` when the noise was seeded and ``"(diagnostics not private)"`` when exact
    diagnostics were released; ``"inf"`` without a mechanism. With a noise cohort it
    leads with the deployment's epsilon, labelled with both cohort sizes, and states the
    run's own: ``"3.00 user vs outsider for a deployed cohort of 1000 clients per round
    (NOT this run's); this run's cohort of 10 carried that cohort's noise per client: its
    own model has epsilon 40.1 user vs outsider"``."""
    if summary.get("privacy_mechanism", "none") == "none" or summary.get("epsilon") is None:
        return "inf"
    epsilon = summary["epsilon"]
    against = summary.get("epsilon_against")
    unit = " ".join(filter(None, [summary.get("privacy_unit"), against and f"vs {against}"]))
    if summary.get("noise_cohort_size") is not None:
        text = (f"{summary['epsilon_deployment']:{spec}} {unit} for a deployed cohort of "
                f"{summary['noise_cohort_size']} clients per round (NOT this run's); this "
                f"run's cohort of {summary['cohort_size']:g} carried that cohort's noise per "
                f"client: its own model has epsilon {epsilon:{spec}} {unit}")
    else:
        text = f"{epsilon:{spec}} {unit}".rstrip()
    outsider = summary.get("epsilon_outsider")
    if summary.get("epsilon_against") != "outsider" and outsider not in (None, epsilon):
        text += f" ({outsider:{spec}} vs outsider)"
    if summary.get("noise") == REPRODUCIBLE_NOISE:
        text += f" ({REPRODUCIBLE_NOISE})"
    if summary.get("diagnostics") == "exact":
        text += f" ({NOT_PRIVATE})"
    return text
