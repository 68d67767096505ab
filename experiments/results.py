"""Collect a sweep's runs into tables: one row per run, and mean with a 95% interval over seeds."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scipy import stats

from experiments.audits import AUDIT_CONFIDENCE, LEAKAGE_FIGURES, leakage_figures, read_leakage
from experiments.sweep import SweepPoint
from privfed.atomic import write_text
from privfed.rundir import read_summary, run_problems

__all__ = ["FIGURES", "collect_rows", "aggregate_over_seeds", "write_csv"]

FIGURES = (
    "final_accuracy",
    "final_loss",
    "epsilon",
    "epsilon_outsider",
    "delta",
    "seconds_per_round",
    "bytes_up_per_client_round",
)
"""Numeric figures of a run's ``summary.json`` that the tables carry."""


def collect_rows(points: Sequence[SweepPoint], sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One row per point: its grid values, status, run directory and figures.

    A point that is not done has status ``"failed"`` (with the recorded error),
    ``"invalid"`` (a run directory that fails :func:`privfed.rundir.run_problems`, e.g. a
    file edited after the run: the problems as its error) or ``"missing"``, and empty
    figures. An audited point also has the leakage figures of
    :func:`experiments.audits.leakage_figures`.
    """
    sweep_dir = Path(sweep_dir)
    rows = []
    for point in points:
        run_dir = sweep_dir / point.key
        row: dict[str, Any] = {"run": point.key, **point.values}
        problems = run_problems(run_dir, point.config)
        if not problems:
            summary = read_summary(run_dir)
            row.update(status="done", error="", privacy_mechanism=summary["privacy_mechanism"],
                       secure_aggregation=summary["secure_aggregation"],
                       epsilon_against=summary.get("epsilon_against") or "-",
                       noise=summary.get("noise") or "-",
                       diagnostics=summary.get("diagnostics") or "-")
            row.update({f: summary.get(f) for f in FIGURES})
            if summary["privacy_mechanism"] == "none":
                row["epsilon"] = math.inf  # no privacy: epsilon is infinite, not missing
            leakage = read_leakage(run_dir, point.config)
            if leakage is not None:
                row.update(leakage_figures(leakage))
        else:
            failure = sweep_dir / "failed" / f"{point.key}.json"
            error = json.loads(failure.read_text(encoding="utf-8"))["error"] \
                if failure.is_file() else ""
            status = "failed" if error else "missing"
            if run_dir.exists():  # a directory that fails its checks is never used
                status, error = "invalid", "; ".join(problems)
            row.update(status=status, error=error,
                       privacy_mechanism=point.config.privacy.mechanism,
                       secure_aggregation=point.config.secure.kind, epsilon_against="-",
                       noise="-", diagnostics="-")
            row.update(dict.fromkeys(FIGURES))
        rows.append(row)
    return rows


def aggregate_over_seeds(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Group the finished rows by everything but ``seed``; mean and 95% t-interval per figure.

    Each output row has the group's grid values, ``runs`` (the number of seeds) and, per
    figure, ``<figure>_mean`` and ``<figure>_ci95`` (the half-width; 0 for a single run,
    empty when the figure is missing).
    """
    done = [r for r in rows if r["status"] == "done"]
    figures = [f for f in (*FIGURES, *LEAKAGE_FIGURES) if any(f in r for r in done)]
    keys = [k for k in (done[0] if done else {}) if k not in
            {"run", "seed", "status", "error", "dp_violation", AUDIT_CONFIDENCE, *figures}]
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in done:
        groups.setdefault(tuple(json.dumps(row[k]) for k in keys), []).append(row)
    table = []
    for members in groups.values():
        out = {k: members[0][k] for k in keys}
        out["runs"] = len(members)
        if any("dp_violation" in m for m in members):
            out["dp_violation"] = any(m.get("dp_violation") for m in members)
        for figure in figures:
            values = [m[figure] for m in members if m.get(figure) is not None]
            mean, half = _mean_ci(values)
            out[f"{figure}_mean"], out[f"{figure}_ci95"] = mean, half
        table.append(out)
    return table


def write_csv(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write ``rows`` (dicts, possibly with different keys) as CSV; lists are JSON-encoded."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=columns, restval="")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: json.dumps(v) if isinstance(v, list | dict) else
                         ("" if v is None else v) for k, v in row.items()})
    return write_text(path, out.getvalue())


def _mean_ci(values: Sequence[float]) -> tuple[float | None, float | None]:
    if values and all(v == math.inf for v in values):
        return math.inf, 0.0
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return None, None
    mean = sum(finite) / len(finite)
    if len(finite) == 1:
        return mean, 0.0
    sem = stats.sem(finite)
    return mean, float(stats.t.ppf(0.975, len(finite) - 1) * sem)
