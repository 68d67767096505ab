"""The ``privfed audit`` command, registered as a plug-in of the ``privfed`` CLI.

``privfed audit [CONFIG_OR_RUN_DIR]``: a TOML file, or a run directory holding the
``config.toml`` that ``privfed run`` wrote (default: the built-in config). The federation is
retrained for the audit (its target trains on half the data so that the other half can
serve as non-members). The audit's sizes are the config's ``[audit]`` section; ``--quick``
is ``--set audit.quick=true``. Run again after a kill, the audit resumes from its finished
units of work; run again once complete, it prints the report it wrote.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console

from attacks.report import format_table
from attacks.runner import STAGE_MESSAGES, audit_units, run_audit
from privfed.cli import add_config_arguments, add_quick_argument, resolve_config
from privfed.progress import steps
from privfed.rundir import run_dir_for
from privfed.threads import add_threads_argument, cli_threads

__all__ = ["register", "main"]


def register(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``audit`` sub-command to the ``privfed`` argument parser."""
    text = "measure what an attacker could learn from a configuration (writes leakage.json)"
    parser = commands.add_parser("audit", help=text, description=text)
    add_config_arguments(parser)
    parser.add_argument("--out", default=None,
                        help="output directory (default: <run dir>/audit)")
    add_quick_argument(parser)
    add_threads_argument(parser)
    parser.set_defaults(handler=main)
    return parser


def main(args: argparse.Namespace) -> int:
    """Run the audit described by parsed ``args``; print the table; return the exit code.

    Returns 2 when the canary audit flags a likely DP bug, else 0.
    """
    config = resolve_config(args)
    cli_threads(args, [config.model.name])
    given = Path(args.config) if args.config else None
    out = Path(args.out) if args.out else (
        (given if given is not None and given.is_dir() else run_dir_for(config)) / "audit")
    with steps(Console(), audit_units(config)) as display:
        report = run_audit(config, out, progress=lambda message: display.update(
            message, advance=message not in STAGE_MESSAGES, keep=True))
    print(format_table(report))
    split = {k: round(v, 1) for k, v in report["seconds"].items()}
    print(f"seconds by attack: {json.dumps(split)}")
    print(f"leakage report: {out / 'leakage.json'}")
    return 2 if report["epsilon_audit"]["violation"] else 0
