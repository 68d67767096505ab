"""The leakage table printed by ``privfed audit``: one row per (view, attack)."""

from __future__ import annotations

import math
from typing import Any

from attacks.audit import format_confidence

__all__ = ["leakage_rows", "format_table"]


def leakage_rows(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(view, attack, result)`` rows of a :func:`~attacks.runner.run_audit` report.

    Views that reveal nothing appear as "not applicable: <reason>" rows, so the difference
    between protecting the updates (secure aggregation) and protecting the final model (DP)
    is visible.
    """
    rows: list[tuple[str, str, str]] = []
    outsider = report["membership"]["outsider"]
    for attack, m in outsider.items():
        if attack != "note":  # loss, lira_offline/online, rmia_offline/online
            rows.append(("outsider (final model)", f"membership: {attack}", _mia(m)))
    for view in ("server", "collusion"):
        entry = report["membership"][f"{view}_client_update"]
        rows.append((view, "membership in client 0 (its updates)",
                     _mia(entry) if entry["status"] == "attacked"
                     else f"not applicable: {entry['reason']}"))
    for scenario, entry in report["inversion"].items():
        text = (f"not applicable: {entry['reason']}" if entry["status"] != "attacked" else
                f"PSNR {entry['mean_psnr_db']:.1f} dB, SSIM {entry['mean_ssim']:.2f}, "
                f"{_matched(entry)}label acc. {entry['label_accuracy']:.2f}")
        rows.append((entry["view"], f"inversion: {scenario}", text))
    audit = report["epsilon_audit"]
    theory = audit["epsilon_theory"]
    confidence = format_confidence(audit["confidence"])
    text = (f"eps_lower {audit['epsilon_lower']:.2f} ({confidence}) vs eps "
            f"{'inf' if math.isinf(theory) else f'{theory:.2f}'}")
    if audit["violation"]:
        text += f"  !!! {audit['warning']} !!!"
    rows.append(("outsider (final model)",
                 f"record-level canary audit ({audit['canaries']} canaries)", text))
    estimate = report.get("user_level_estimate")
    if estimate is not None:  # audits written before the estimate have none
        rows.append(("outsider (final model)", "user-level one-run estimate (canary clients)",
                     _user_level(estimate)))
    return rows


def _user_level(estimate: dict[str, Any]) -> str:
    if estimate["status"] != "estimated":
        return f"not applicable: {estimate['reason']}"
    theory = estimate["epsilon_theory"]
    confidence = format_confidence(estimate["confidence"])
    theory_text = "inf" if math.isinf(theory) else f"{theory:.2f}"
    text = (f"eps_estimate {estimate['epsilon_estimate']:.2f} (lower "
            f"{estimate['epsilon_lower']:.2f}, {confidence}) vs user-level eps {theory_text}")
    if estimate["exceeds_theory"]:
        text += f"  !!! {estimate['warning']} !!!"
    return text


def format_table(report: dict[str, Any]) -> str:
    """Plain-text leakage table (the CLI may render :func:`leakage_rows` with rich instead)."""
    rows = [("view", "attack", "result"), *leakage_rows(report)]
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    lines = [f"{v:<{widths[0]}}  {a:<{widths[1]}}  {t}" for v, a, t in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _matched(entry: dict[str, Any]) -> str:
    """``"matched PSNR 23.4 dB / SSIM 0.91, "``; empty for a report written before the
    matched scores existed."""
    if "mean_matched_psnr_db" not in entry:
        return ""
    return (f"matched PSNR {entry['mean_matched_psnr_db']:.1f} dB / "
            f"SSIM {entry['mean_matched_ssim']:.2f}, ")


def _mia(m: dict[str, Any]) -> str:
    return (f"AUC {m['auc']:.3f}, TPR@0.1%FPR {m['tpr_at_0.1%_fpr']:.3f}, "
            f"TPR@1%FPR {m['tpr_at_1%_fpr']:.3f}, adv. {m['advantage']:.3f}")
