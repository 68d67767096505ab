"""Cost of the default leakage audit (``privfed audit``), split by attack.

Usage::

    python benchmarks/attack_cost.py                 # the default audit of the digits config
    python benchmarks/attack_cost.py --quick         # the smoke-test audit (audit.quick=true)
    python benchmarks/attack_cost.py --set secure.kind=he --threads 2

The default audit is LiRA with 16 reference models, inversion of 8 single updates (plus a
multi-step update and the aggregate of 10 clients) and one canary audit with 200 canaries;
the target is 5 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from attacks.report import format_table
from attacks.runner import run_audit
from privfed.config import load_config

BUDGET_SECONDS = 300.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="TOML config (default: the defaults)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--quick", action="store_true", help="--set audit.quick=true")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(args.config, [*args.set, *(["audit.quick=true"] if args.quick else [])])
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        report = run_audit(config, Path(out) / "audit")  # its checkpoints stay inside
    total = time.perf_counter() - started
    print(format_table(report))
    print()
    print(f"{'attack':<28}{'seconds':>10}{'share':>8}")
    for name, seconds in report["seconds"].items():
        print(f"{name:<28}{seconds:>10.1f}{seconds / total:>8.0%}")
    print(f"{'total (incl. data, plots)':<28}{total:>10.1f}")
    verdict = "within" if total <= BUDGET_SECONDS else "OVER"
    print(f"{verdict} the {BUDGET_SECONDS:.0f} s budget on {args.threads} threads")


if __name__ == "__main__":
    main()
