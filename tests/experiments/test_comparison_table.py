"""The comparison table is complete and readable in 80 columns, its legend explains it."""

from __future__ import annotations

import math

from rich.console import Console

from experiments.cli import print_comparison
from experiments.comparison import COMPACT_COLUMNS, CONFIGURATIONS, SHORT_LABELS
from privfed.privacy.randomness import REPRODUCIBLE_NOISE


def _row(label: str, index: int) -> dict:
    """A worst-case row: wide numbers, the longest epsilon text, warnings."""
    private = index > 0
    return {
        "configuration": label, "accuracy": 0.6204, "majority_baseline": 0.6271,
        "beats_majority": index != 1, "epsilon": 17.9 if private else math.inf,
        "epsilon_unit": "user" if private else "-",
        "epsilon_text": (f"17.90 user vs server (7.94 vs outsider) ({REPRODUCIBLE_NOISE})"
                         if private else "inf"),
        "noise": REPRODUCIBLE_NOISE, "mia_auc": 0.5123, "mia_tpr_at_1pct_fpr": 0.0123,
        "epsilon_lower": 12.34 if private else None, "dp_violation": index == 2,
        "server_inversion_psnr_db": 142.4 if index != 3 else None,
        "seconds_per_round": 123.456, "bytes_up_per_client_round": 987_654_321.0,
    }


def _render(rows: list[dict]) -> str:
    console = Console(width=80, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    print_comparison(console, rows, "privacy configurations compared (digits, 10 clients, "
                                    "delta 1e-05)")
    console.file.close()
    return console.export_text()


def test_the_table_fits_80_columns_without_cutting_a_cell():
    rows = [_row(label, i) for i, (label, _) in enumerate(CONFIGURATIONS)]
    text = _render(rows)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in text
    table = lines[:lines.index(next(line for line in lines if line.startswith("acc:")))]
    (head,) = [line for line in table if line.split()[:1] == ["config"]]
    assert head.split() == [header for header, _meaning in COMPACT_COLUMNS]
    for cell in ("0.620!", "17.90 u", "inf", "0.512", "0.012", "12.34", "142", "123.46",
                 "964,506"):
        assert any(cell in line for line in table), cell
    for label, _ in CONFIGURATIONS:
        assert any(line.split()[:1] == [SHORT_LABELS[label]] for line in table), label


def test_the_legend_explains_every_abbreviation_and_warning():
    rows = [_row(label, i) for i, (label, _) in enumerate(CONFIGURATIONS)]
    text = _render(rows)
    legend = " ".join(text[text.index("\nacc:"):].split())  # unwrapped
    for header, meaning in COMPACT_COLUMNS[1:]:
        assert f"{header}: {' '.join(meaning.split())}" in legend
    for label, _ in CONFIGURATIONS:
        assert f"{SHORT_LABELS[label]} = {label}: epsilon" in legend
    assert legend.count(f"17.90 user vs server (7.94 vs outsider) ({REPRODUCIBLE_NOISE})") == 5
    assert "accuracy <= the majority class's 0.627" in legend
    assert "LIKELY DP BUG" in legend
