"""The main job: one federation under several privacy configurations, trained and audited.

``privfed compare`` (and ``privfed run`` without a config) runs this on the embedded digits
data (10 clients): plain FedAvg, local DP-SGD, user-level DP-FedAvg, HE aggregation, masking
aggregation, and masking with distributed DP. Each configuration is trained
(:func:`privfed.rundir.train_run`: a normal run directory, with the figures of utility and
cost and the final model) and audited (``attacks.run_audit``: what each party could learn).
Both steps are resumable: a configuration whose run directory and ``audit/leakage.json`` are
complete is not redone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attacks.audit import format_confidence
from experiments.audits import audit_run, common_confidence, leakage_figures, read_leakage
from experiments.results import write_csv
from privfed.atomic import remove_stale_temporaries, write_text
from privfed.config import ConfigError, ExperimentConfig, config_from_dict
from privfed.config.loading import apply_overrides
from privfed.federated.metrics import beats_majority
from privfed.run_summary import describe_epsilon
from privfed.rundir import read_summary, run_name, run_problems, train_run

__all__ = ["COMPACT_COLUMNS", "CONFIGURATIONS", "Comparison", "comparison_configs",
           "compact_cells", "compact_legend", "format_cells", "run_comparison",
           "write_comparison_report"]

CONFIGURATIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("plain FedAvg", ()),
    ("local DP-SGD", ("privacy.mechanism=local", "privacy.epsilon=3.0",
                      "federation.lr=0.5", "federation.batch_size=32")),
    ("user-level DP-FedAvg", ("privacy.mechanism=central", "privacy.epsilon=8.0",
                              "privacy.clip_norm=0.5")),
    ("HE (CKKS)", ("secure.kind=he",)),
    ("masking", ("secure.kind=masking",)),
    ("masking + distributed DP", ("secure.kind=masking", "privacy.mechanism=distributed",
                                  "privacy.epsilon=8.0", "privacy.clip_norm=0.5")),
)
"""Label and config overrides of each configuration, applied on top of the base config."""

COMPARISON_BASE = ("name=compare", "model.hidden=[128]")
"""Defaults of the comparison's base (a smaller MLP suits the DP rows); user overrides win."""

SHORT_LABELS = {"plain FedAvg": "FedAvg", "local DP-SGD": "LDP-SGD",
                "user-level DP-FedAvg": "DP-FedAvg", "HE (CKKS)": "HE", "masking": "Mask",
                "masking + distributed DP": "Mask+DDP"}
"""The 80-column table's name of each configuration (the legend spells it out)."""

COMPACT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("config", "configuration (below)"),
    ("acc", "test accuracy (! = does not beat the majority class)"),
    ("eps", "epsilon, r = record level, u = user level (in full below)"),
    ("AUC", "membership AUC (LiRA online, outsider view)"),
    ("TPR", "its TPR at 1% FPR"),
    ("eps>=", "the canary audit's lower bound on epsilon"),
    ("PSNR", "best inversion PSNR in dB from what the server decodes"),
    ("s/rd", "seconds per round"),
    ("KiB", "KiB up per client per round"),
)
"""Header and meaning of each column of the 80-column comparison table."""


@dataclass(frozen=True)
class Comparison:
    """One configuration of the comparison with its figures.

    Attributes
    ----------
    label : str
    config : ExperimentConfig
    run_dir : Path
    summary : dict
        The run's ``summary.json``.
    leakage : dict
        The audit's ``leakage.json``.
    """

    label: str
    config: ExperimentConfig
    run_dir: Path
    summary: dict[str, Any]
    leakage: dict[str, Any]

    def row(self) -> dict[str, Any]:
        """The figures of the comparison table (None where a figure does not apply)."""
        s = self.summary
        return {
            "configuration": self.label,
            "accuracy": s["final_accuracy"],
            "majority_baseline": (s.get("test_metrics") or {}).get("majority_baseline"),
            "beats_majority": s.get("test_metrics") is None or beats_majority(s["test_metrics"]),
            "epsilon": math.inf if s["privacy_mechanism"] == "none" else s["epsilon"],
            "epsilon_unit": s["privacy_unit"] or "-",
            "epsilon_against": s.get("epsilon_against"),
            "epsilon_outsider": s.get("epsilon_outsider"),
            "noise": s.get("noise"),
            "epsilon_text": describe_epsilon(s),
            "delta": s["delta"],
            **leakage_figures(self.leakage),
            "seconds_per_round": s["seconds_per_round"],
            "bytes_up_per_client_round": s["bytes_up_per_client_round"],
            "run_dir": str(self.run_dir),
        }


def comparison_configs(overrides: Sequence[str] = ()) -> list[tuple[str, ExperimentConfig]]:
    """The configurations of the comparison, each with the user's ``overrides`` applied
    after the comparison's base and the configuration's own settings.

    Raises
    ------
    ConfigError
        An override makes a configuration invalid, or names a site's own files (the
        comparison audits each configuration, which needs a built-in dataset).
    """
    configs = []
    for label, own in CONFIGURATIONS:
        raw = apply_overrides({}, [*COMPARISON_BASE, *own, *overrides])
        configs.append((label, config_from_dict(raw)))
    data = configs[0][1].data
    if data.is_site_data:
        raise ConfigError(
            f"the main job audits every configuration, which needs a built-in dataset, not "
            f"data.dataset = {data.dataset!r}; train a site's files with `privfed run "
            "CONFIG` (and audit the same configuration on a public dataset of the same kind)")
    return configs


def run_comparison(
    configs: Sequence[tuple[str, ExperimentConfig]],
    out_dir: str | Path,
    *,
    progress: Callable[[str], None] | None = None,
) -> list[Comparison]:
    """Train and audit every configuration (skipping what is already complete); nothing is
    written before the first configuration is trained. Each config's ``[audit]`` section
    sizes its audit (``audit.quick = true``: a small one)."""
    out_dir = Path(out_dir)
    say = progress or (lambda _message: None)
    remove_stale_temporaries(out_dir)
    results = []
    for label, config in configs:
        run_dir = out_dir / run_name(config)
        problems = run_problems(run_dir, config)
        if problems:
            if run_dir.exists():
                say(f"{label}: {run_dir.name} fails its checks ({'; '.join(problems)}); "
                    "training it again")
            say(f"{label}: training")
            train_run(config, run_dir)
        if read_leakage(run_dir, config) is None:
            say(f"{label}: auditing")
        leakage = audit_run(run_dir, config,
                            progress=lambda message, label=label: say(f"{label}: audit "
                                                                      f"({message})"))
        results.append(Comparison(label, config, run_dir, read_summary(run_dir), leakage))
        say(f"{label}: done")
    return results


def write_comparison_report(results: Sequence[Comparison], out_dir: str | Path) -> Path:
    """Write ``comparison.csv`` and ``report.md`` (the table, notes, links to the plots)."""
    out_dir = Path(out_dir)
    rows = [r.row() for r in results]
    data = results[0].config.data
    confidence = common_confidence(rows)
    audit = "canary audit" if confidence is None else \
        f"{format_confidence(confidence)} canary audit"
    write_csv(rows, out_dir / "comparison.csv")
    lines = [
        "# privfed: privacy configurations compared", "",
        f"{data.dataset}, {data.num_clients} clients. Accuracy on the held-out test set; "
        "epsilon as the mechanism's accountant reports it (record level for local DP, user "
        f"level for DP-FedAvg; delta {results[0].config.privacy.delta:g}), named by the party "
        "it holds against (central DP trusts the server; distributed DP also gives the "
        "figure against an outsider, who does not know who took part); \"noise reproducible "
        "from the config\" marks a run whose noise anyone holding its config can regenerate "
        "(privacy.secure_mode = false), \"diagnostics not private\" one that released exact "
        "clipping and noise statistics (privacy.diagnostics = \"exact\"); membership "
        "inference is LiRA online against the released model (outsider view); the epsilon "
        f"lower bound is the {audit}; the inversion PSNR is the best reconstruction "
        "from what the server can decode (one client's update in plain aggregation, only the "
        "aggregate under HE or masking).", "",
        "| configuration | accuracy | epsilon | MIA AUC | TPR@1%FPR | epsilon lower | "
        "server inversion PSNR | s/round | KiB up/client/round |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(format_cells(row)) + " |")
    trivial = [r["configuration"] for r in rows if not r["beats_majority"]]
    if trivial:
        lines += ["", f"**Does not beat the majority-class baseline**: {', '.join(trivial)}."]
    violations = [r["configuration"] for r in rows if r["dp_violation"]]
    if violations:
        lines += ["", f"**LIKELY DP BUG**: the audit's lower bound exceeds epsilon for "
                  f"{', '.join(violations)}."]
    lines += ["", "## Per configuration", ""]
    for result in results:
        rel = result.run_dir.name
        lines += [f"### {result.label}", "",
                  f"Run directory `{rel}`: ![accuracy]({rel}/accuracy.png) "
                  f"![ROC]({rel}/audit/roc.png) "
                  f"![reconstructions]({rel}/audit/reconstructions.png)", ""]
    return write_text(out_dir / "report.md", "\n".join(lines) + "\n")


def format_cells(row: dict[str, Any]) -> list[str]:
    """The table cells of one :meth:`Comparison.row`, as text."""
    psnr = row["server_inversion_psnr_db"]
    return [
        row["configuration"],
        f"{row['accuracy']:.3f}" + ("" if row["beats_majority"] else
                                    f" (<= majority {row['majority_baseline']:.3f})"),
        row["epsilon_text"],
        f"{row['mia_auc']:.3f}",
        f"{row['mia_tpr_at_1pct_fpr']:.3f}",
        _num(row["epsilon_lower"], ".2f"),
        "-" if psnr is None else f"{psnr:.0f} dB",
        f"{row['seconds_per_round']:.3f}",
        f"{row['bytes_up_per_client_round'] / 1024:,.0f}",
    ]


def compact_cells(row: dict[str, Any]) -> list[str]:
    """The cells of one :meth:`Comparison.row` in the 80-column table
    (:data:`COMPACT_COLUMNS`; :func:`compact_legend` explains the abbreviations)."""
    psnr = row["server_inversion_psnr_db"]
    unit = {"record": " r", "user": " u"}.get(row["epsilon_unit"], "")
    epsilon = "inf" if math.isinf(row["epsilon"]) else f"{row['epsilon']:.2f}{unit}"
    return [
        SHORT_LABELS.get(row["configuration"], row["configuration"]),
        f"{row['accuracy']:.3f}" + ("" if row["beats_majority"] else "!"),
        epsilon,
        f"{row['mia_auc']:.3f}",
        f"{row['mia_tpr_at_1pct_fpr']:.3f}",
        _num(row["epsilon_lower"], ".2f"),
        "-" if psnr is None else f"{psnr:.0f}",
        f"{row['seconds_per_round']:.2f}",
        f"{row['bytes_up_per_client_round'] / 1024:,.0f}",
    ]


def compact_legend(rows: Sequence[dict[str, Any]]) -> list[str]:
    """What the 80-column table abbreviates: one line for the columns, then one per
    configuration (its full name, its epsilon in full and any warning)."""
    lines = ["; ".join(f"{short}: {meaning}" for short, meaning in COMPACT_COLUMNS[1:]) + "."]
    for row in rows:
        text = (f"{SHORT_LABELS.get(row['configuration'], row['configuration'])} = "
                f"{row['configuration']}: epsilon {row['epsilon_text']}")
        if not row["beats_majority"]:
            text += f"; accuracy <= the majority class's {row['majority_baseline']:.3f}"
        if row.get("dp_violation"):
            text += "; LIKELY DP BUG: the audit's lower bound exceeds epsilon"
        lines.append(text)
    return lines


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)
