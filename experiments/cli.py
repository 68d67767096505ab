"""The ``privfed sweep`` and ``privfed report`` commands (registered as plug-ins)."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from rich.console import Console

from experiments.report import write_report
from experiments.results import aggregate_over_seeds, collect_rows, write_csv
from experiments.sweep import SweepPoint, load_grid, run_sweep
from privfed.config import ConfigError

__all__ = ["register_report", "register_sweep", "summarize_sweep"]

GRID_COPY = "grid.toml"


def register_sweep(commands: argparse._SubParsersAction) -> None:
    """Add ``privfed sweep GRID.toml [--workers N] [--output-dir DIR]``."""
    text = "run every point of a grid of configs (resumable), then write results and report"
    parser = commands.add_parser("sweep", help=text, description=text)
    parser.add_argument("grid", metavar="GRID.toml", help="grid file: [base] config + [grid]")
    parser.add_argument("--workers", type=int, default=1, help="points run in parallel")
    parser.add_argument("--output-dir", default="runs",
                        help="the sweep directory is OUTPUT_DIR/<grid file name> (default: runs)")
    parser.set_defaults(handler=_sweep)


def register_report(commands: argparse._SubParsersAction) -> None:
    """Add ``privfed report SWEEP_DIR``."""
    text = "write results.csv, results_by_config.csv, report.md and plots of a sweep"
    parser = commands.add_parser("report", help=text, description=text)
    parser.add_argument("sweep_dir", metavar="SWEEP_DIR")
    parser.set_defaults(handler=_report)


def summarize_sweep(points: list[SweepPoint], sweep_dir: Path) -> Path:
    """Write the tables and the report of ``points`` in ``sweep_dir``; return report.md."""
    rows = collect_rows(points, sweep_dir)
    table = aggregate_over_seeds(rows)
    write_csv(rows, sweep_dir / "results.csv")
    write_csv(table, sweep_dir / "results_by_config.csv")
    return write_report(sweep_dir, rows, table, points[0].config)


def _sweep(args: argparse.Namespace) -> int:
    console = Console()
    grid = Path(args.grid)
    points = load_grid(grid)
    sweep_dir = Path(args.output_dir) / grid.stem
    sweep_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(grid, sweep_dir / GRID_COPY)
    console.print(f"[bold]privfed sweep[/] {grid} -> {sweep_dir}: {len(points)} points")

    def on_event(kind: str, point: SweepPoint, detail: str) -> None:
        style = {"skipped": "dim", "done": "green", "failed": "bold red"}[kind]
        console.print(f"[{style}]{kind:>7}[/] {point.key} {point.values}"
                      + (f": {detail}" if kind == "failed" else ""), highlight=False)

    outcome = run_sweep(points, sweep_dir, workers=args.workers, on_event=on_event)
    report = summarize_sweep(points, sweep_dir)
    console.print(f"{len(outcome['done'])} run, {len(outcome['skipped'])} already done, "
                  f"{len(outcome['failed'])} failed; report: {report}")
    return 1 if outcome["failed"] else 0


def _report(args: argparse.Namespace) -> int:
    sweep_dir = Path(args.sweep_dir)
    grid = sweep_dir / GRID_COPY
    if not grid.is_file():
        raise ConfigError(f"{sweep_dir} is not a sweep directory (no {GRID_COPY})")
    report = summarize_sweep(load_grid(grid), sweep_dir)
    Console().print(f"report: {report}")
    return 0
