"""Audits of finished runs (``attacks.run_audit``), resumable, and their headline figures."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from attacks import run_audit
from attacks.runner import completed_audit
from privfed.config import ExperimentConfig

__all__ = ["LEAKAGE_FIGURES", "AUDIT_CONFIDENCE", "audit_run", "common_confidence",
           "leakage_figures", "read_leakage"]

LEAKAGE_FIGURES = ("mia_auc", "mia_tpr_at_1pct_fpr", "epsilon_lower",
                   "user_level_epsilon_estimate", "server_inversion_psnr_db")
"""The figures :func:`leakage_figures` extracts from a ``leakage.json``."""

AUDIT_CONFIDENCE = "epsilon_lower_confidence"
"""The key of the canary audit's confidence in :func:`leakage_figures` (not a figure: it is
a setting of the audit, not averaged over seeds)."""


def read_leakage(run_dir: Path, config: ExperimentConfig) -> dict[str, Any] | None:
    """The run's ``audit/leakage.json`` if it is complete and of ``config`` (its audit
    settings included: a quick audit is not taken for a full one), else None."""
    return completed_audit(run_dir / "audit", config)


def audit_run(
    run_dir: Path, config: ExperimentConfig, *, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Audit ``config`` into ``run_dir/audit`` unless a complete audit of it is there already.

    An interrupted audit resumes from its finished units (``attacks.run_audit``).

    Parameters
    ----------
    run_dir : Path
        The run directory of ``config``'s training.
    config : ExperimentConfig
        The audited configuration; ``config.audit`` sizes the audit (e.g. ``quick``).
    progress : callable, optional
        Called with a short message as each unit of the audit finishes.
    """
    leakage = read_leakage(run_dir, config)
    if leakage is None:
        run_audit(config, run_dir / "audit", progress=progress)
        leakage = read_leakage(run_dir, config)
    if leakage is None:
        raise RuntimeError(f"the audit of {run_dir} wrote no leakage.json for this config")
    return leakage


def leakage_figures(leakage: dict[str, Any]) -> dict[str, Any]:
    """Headline leakage: LiRA online against the released model (AUC, TPR at 1% FPR), the
    canary audit's epsilon lower bound (its confidence, and whether it flags a DP
    violation), the one-run user-level epsilon estimate (None in an audit from before it),
    and the best inversion PSNR from what the server decodes (None where the server decodes
    nothing)."""
    lira = leakage["membership"]["outsider"]["lira_online"]
    audit = leakage["epsilon_audit"]
    user_level = leakage.get("user_level_estimate") or {}
    attacked = [s["mean_psnr_db"] for s in leakage["inversion"].values()
                if s.get("status") == "attacked" and s.get("view") == "server"]
    return {
        "mia_auc": lira["auc"],
        "mia_tpr_at_1pct_fpr": lira["tpr_at_1%_fpr"],
        "epsilon_lower": audit.get("epsilon_lower"),
        AUDIT_CONFIDENCE: audit.get("confidence"),
        "dp_violation": audit.get("violation"),
        "user_level_epsilon_estimate": user_level.get("epsilon_estimate"),
        "server_inversion_psnr_db": max(attacked) if attacked else None,
    }


def common_confidence(rows: Iterable[Mapping[str, Any]]) -> float | None:
    """The canary audits' confidence shared by ``rows`` (dicts holding
    :data:`AUDIT_CONFIDENCE`, as :func:`leakage_figures` gives it).

    Parameters
    ----------
    rows : iterable of dict
        Rows of a table; those without an audit are ignored.

    Returns
    -------
    float or None
        The confidence, or None when no row has one or the rows differ.
    """
    found = {row.get(AUDIT_CONFIDENCE) for row in rows} - {None}
    return found.pop() if len(found) == 1 else None
