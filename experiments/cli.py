"""The experiments package's ``privfed`` commands, registered as plug-ins of the core CLI
(``privfed.commands`` entry points): ``compare`` (the main job, which ``privfed run`` runs
without a CONFIG), ``sweep`` and ``report``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from experiments.comparison import (
    COMPACT_COLUMNS,
    compact_cells,
    compact_legend,
    comparison_configs,
    run_comparison,
    write_comparison_report,
)
from experiments.report import write_report
from experiments.results import aggregate_over_seeds, collect_rows, write_csv
from experiments.sweep import SweepPoint, load_grid, run_sweep
from privfed import cli as core_cli
from privfed.atomic import write_bytes
from privfed.config import ConfigError
from privfed.progress import steps
from privfed.threads import add_threads_argument, cli_threads

__all__ = ["print_comparison", "register_compare", "register_report", "register_sweep",
           "run_main_job", "summarize_sweep"]

GRID_COPY = "grid.toml"


def register_compare(commands: argparse._SubParsersAction) -> None:
    """Add ``privfed compare [--set KEY=VALUE ...] [--seed N] [--data-dir DIR]
    [--output-dir DIR] [--quick] [-q]``: the main job."""
    text = ("the main job: one federation trained and audited under six privacy "
            "configurations, one table (resumable); `privfed run` without CONFIG runs it")
    parser = commands.add_parser("compare", help=text, description=text)
    core_cli.add_override_arguments(parser)
    core_cli.add_quick_argument(parser)
    add_threads_argument(parser)
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    parser.set_defaults(handler=run_main_job)


def run_main_job(args: argparse.Namespace) -> int:
    """``privfed compare``: train and audit every configuration, print a table.

    ``--set``, ``--seed`` and ``--data-dir`` apply to every configuration; the results go
    to ``<output dir>/compare/`` and an interrupted job resumes where it stopped.
    """
    out_dir = Path(args.output_dir or "runs") / "compare"
    console = Console(quiet=args.quiet)
    if not console.is_terminal:  # a log file: the full table, not one wrapped to 80 columns
        console = Console(quiet=args.quiet, width=140)
    configs = comparison_configs(core_cli.config_overrides(args))
    cli_threads(args, [config.model.name for _, config in configs])
    data = configs[0][1].data
    console.print(f"[bold]privfed[/]: {len(configs)} privacy configurations of {data.dataset} "
                  f"with {data.num_clients} clients, trained and audited -> {out_dir}")
    with steps(console, len(configs)) as display:
        results = run_comparison(
            configs, out_dir,
            progress=lambda message: display.update(message, advance=message.endswith(": done")))
    report = write_comparison_report(results, out_dir)
    print_comparison(console, [result.row() for result in results],
                     f"privacy configurations compared ({data.dataset}, {data.num_clients} "
                     f"clients, delta {configs[1][1].privacy.delta:g})")
    console.print(f"report: {report}")
    return 0


def print_comparison(console: Console, rows: list[dict[str, Any]], title: str) -> None:
    """Print the comparison table in 80 columns, its abbreviations explained below it.

    Parameters
    ----------
    console : rich.console.Console
    rows : list of dict
        :meth:`experiments.comparison.Comparison.row` of each configuration.
    title : str
    """
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    for header, _meaning in COMPACT_COLUMNS:
        table.add_column(header, justify="left" if header == "config" else "right",
                         no_wrap=True)
    for row in rows:
        table.add_row(*compact_cells(row))
    console.print(table)
    for line in compact_legend(rows):
        console.print(line, highlight=False)


OVERRIDES_COPY = "overrides.json"
"""The sweep's --set, --seed and --data-dir overrides, kept beside the grid's copy so that
``privfed report`` finds the same points."""


def register_sweep(commands: argparse._SubParsersAction) -> None:
    """Add ``privfed sweep GRID.toml [--workers N] [--output-dir DIR] [--set KEY=VALUE ...]
    [--seed N] [--data-dir DIR] [--quick]``; the overrides apply to the grid's base config of every
    point (a gridded field cannot be overridden)."""
    text = "run every point of a grid of configs (resumable), then write results and report"
    parser = commands.add_parser("sweep", help=text, description=text)
    parser.add_argument("grid", metavar="GRID.toml", help="grid file: [base] config + [grid]")
    core_cli.add_override_arguments(parser, output_dir=False)
    core_cli.add_quick_argument(parser)
    parser.add_argument("--workers", type=int, default=1, help="points run in parallel")
    add_threads_argument(parser)
    parser.add_argument("--audit", action="store_true",
                        help="also audit every point (membership, inversion, epsilon audit), "
                             "sized by the grid's [base.audit] section (--quick: small)")
    parser.add_argument("--output-dir", default="runs",
                        help="the sweep directory is OUTPUT_DIR/<grid file name> (default: runs)")
    parser.set_defaults(handler=_sweep)


def register_report(commands: argparse._SubParsersAction) -> None:
    """Add ``privfed report SWEEP_DIR``."""
    text = "write results.csv, results_by_config.csv, report.md and plots of a sweep"
    parser = commands.add_parser("report", help=text, description=text)
    parser.add_argument("sweep_dir", metavar="SWEEP_DIR")
    parser.set_defaults(handler=_report)


def summarize_sweep(points: list[SweepPoint], sweep_dir: Path,
                    rows: list[dict[str, Any]] | None = None) -> Path:
    """Write the tables and the report of ``points`` in ``sweep_dir`` (from their ``rows``,
    :func:`~experiments.results.collect_rows`, where already collected); return report.md."""
    rows = collect_rows(points, sweep_dir) if rows is None else rows
    table = aggregate_over_seeds(rows)
    write_csv(rows, sweep_dir / "results.csv")
    write_csv(table, sweep_dir / "results_by_config.csv")
    return write_report(sweep_dir, rows, table, points[0].config, swept=list(points[0].values))


def _sweep(args: argparse.Namespace) -> int:
    console = Console()
    grid = Path(args.grid)
    overrides = core_cli.config_overrides(args, output_dir=False)
    points = load_grid(grid, overrides)
    threads = cli_threads(args, [point.config.model.name for point in points], args.workers)
    sweep_dir = Path(args.output_dir) / grid.stem
    sweep_dir.mkdir(parents=True, exist_ok=True)
    write_bytes(sweep_dir / GRID_COPY, grid.read_bytes())
    write_bytes(sweep_dir / OVERRIDES_COPY, json.dumps(overrides).encode())
    console.print(f"[bold]privfed sweep[/] {grid} -> {sweep_dir}: {len(points)} points")

    with steps(console, len(points)) as display:

        def on_event(kind: str, point: SweepPoint, detail: str) -> None:
            display.update(f"{kind:>7} {point.key} {point.values}"
                           + (f": {detail}" if kind in ("failed", "invalid") else "")
                           + (" (running it again)" if kind == "invalid" else ""),
                           advance=kind != "invalid", keep=True)

        outcome = run_sweep(points, sweep_dir, workers=args.workers, audit=args.audit,
                            on_event=on_event, threads=threads)
    report = summarize_sweep(points, sweep_dir)
    console.print(f"{len(outcome['done'])} run, {len(outcome['skipped'])} already done, "
                  f"{len(outcome['failed'])} failed; report: {report}")
    return 1 if outcome["failed"] else 0


def _report(args: argparse.Namespace) -> int:
    sweep_dir = Path(args.sweep_dir)
    grid = sweep_dir / GRID_COPY
    if not grid.is_file():
        raise ConfigError(f"{sweep_dir} is not a sweep directory (no {GRID_COPY})")
    overrides = sweep_dir / OVERRIDES_COPY
    points = load_grid(grid, json.loads(overrides.read_text()) if overrides.is_file() else [])
    console = Console()
    rows = collect_rows(points, sweep_dir)
    for row in rows:
        if row["status"] == "invalid":
            console.print(f"[bold yellow]invalid[/] {row['run']}: {row['error']} (not used; "
                          "`privfed sweep` runs it again)", highlight=False)
    report = summarize_sweep(points, sweep_dir, rows)
    console.print(f"report: {report}")
    return 0
