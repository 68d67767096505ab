"""The progress display: a plain line per step with elapsed time and ETA off a terminal."""

import io
import re

from rich.console import Console

from privfed.cli import main
from privfed.config import load_config
from privfed.progress import format_seconds, steps


def test_off_a_terminal_each_step_is_one_line_with_elapsed_and_eta():
    clock = iter([0.0, 2.0, 4.0, 6.0]).__next__
    out = io.StringIO()
    with steps(Console(file=out, force_terminal=False, width=40), 4, clock) as display:
        display.update("configuration a: training", advance=False)
        display.update("configuration a: done")
        display.update("configuration b: done")
    assert out.getvalue().splitlines() == [
        "configuration a: training  elapsed 2.0s  eta ?",
        "configuration a: done  elapsed 4.0s  eta 12s",  # 1 of 4 in 4 s: 3 more, 4 s each
        "configuration b: done  elapsed 6.0s  eta 6.0s",  # not wrapped at 40 columns
    ]


def test_format_seconds():
    assert [format_seconds(s) for s in (4.14, 37.2, 125, 3720)] == [
        "4.1s", "37s", "2m05s", "1h02m"]


def test_privfed_run_in_a_log_prints_one_line_per_round_with_an_eta(tmp_path, capsys):
    config = load_config(overrides=["federation.rounds=3", "model.hidden=[8]",
                                    "data.num_clients=3", f"output_dir='{tmp_path}'"])
    (tmp_path / "run.toml").write_text(config.to_toml())
    assert main(["run", str(tmp_path / "run.toml")]) == 0
    out = capsys.readouterr().out
    assert "live metrics: " in out and ".partial/metrics.jsonl" in out
    rounds = [line for line in out.splitlines() if line.startswith("round ")]
    assert len(rounds) == 3
    for k, line in enumerate(rounds, 1):
        assert re.fullmatch(rf"round {k}/3  loss \S+  acc [\d.]+  elapsed [\d.]+s  eta \S+",
                            line), line
