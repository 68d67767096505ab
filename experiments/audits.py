"""Audits of finished runs (``attacks.run_audit``), resumable, and their headline figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from attacks import run_audit
from privfed.config import ExperimentConfig

__all__ = ["LEAKAGE_FIGURES", "audit_run", "leakage_figures", "read_leakage"]

LEAKAGE_FIGURES = ("mia_auc", "mia_tpr_at_1pct_fpr", "epsilon_lower", "server_inversion_psnr_db")
"""The figures :func:`leakage_figures` extracts from a ``leakage.json``."""


def read_leakage(run_dir: Path, config: ExperimentConfig) -> dict[str, Any] | None:
    """The run's ``audit/leakage.json`` if it is complete and of ``config``, else None."""
    try:
        leakage = json.loads((run_dir / "audit" / "leakage.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return leakage if leakage.get("config_hash") == config.short_hash() else None


def audit_run(run_dir: Path, config: ExperimentConfig, *, quick: bool = False) -> dict[str, Any]:
    """Audit ``config`` into ``run_dir/audit`` unless a complete audit is there already."""
    leakage = read_leakage(run_dir, config)
    if leakage is None:
        run_audit(config, run_dir / "audit", quick=quick)
        leakage = read_leakage(run_dir, config)
    if leakage is None:
        raise RuntimeError(f"the audit of {run_dir} wrote no leakage.json for this config")
    return leakage


def leakage_figures(leakage: dict[str, Any]) -> dict[str, Any]:
    """Headline leakage: LiRA online against the released model (AUC, TPR at 1% FPR), the
    canary audit's epsilon lower bound (and whether it flags a DP violation), and the best
    inversion PSNR from what the server decodes (None where the server decodes nothing)."""
    lira = leakage["membership"]["outsider"]["lira_online"]
    audit = leakage["epsilon_audit"]
    attacked = [s["mean_psnr_db"] for s in leakage["inversion"].values()
                if s.get("status") == "attacked" and s.get("view") == "server"]
    return {
        "mia_auc": lira["auc"],
        "mia_tpr_at_1pct_fpr": lira["tpr_at_1%_fpr"],
        "epsilon_lower": audit.get("epsilon_lower"),
        "dp_violation": audit.get("violation"),
        "server_inversion_psnr_db": max(attacked) if attacked else None,
    }
