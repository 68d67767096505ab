"""The CLI's torch thread choice against torch's default, idle and under a competing load.

Runs each job in a fresh ``python -m privfed`` process, once with the CLI's automatic choice
(:mod:`privfed.threads`, ``PRIVFED_THREADS`` unset) and once with ``--threads D``, D being
torch's default in a fresh process (its count of cores), first with nothing else started by
the benchmark ("idle") and then with one busy-loop process per core competing ("loaded").
Prints each time, the 1-minute load average before each run, and default/chosen as a ratio.

Jobs: ``digits.toml`` (one federation, the MLP) and the main job (``privfed compare``: six
configurations trained and audited). ``--main-rounds R --quick`` runs a smaller main job
(R rounds, the quick audit) where the full one is too slow with torch's default threads.

``--steps`` also times one training step of the CNN (a batch of 50 28x28 images) and of the
MLP (a batch of 16 digits) with 1 thread against torch's default, interleaved in one process.

A run that takes longer than ``--timeout`` seconds is stopped and shown as ``>T``.

Run by hand: ``python benchmarks/threads.py [--jobs digits main] [--main-rounds 5] [--quick]
[--timeout 600]``.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def torch_default_threads() -> int:
    """torch's intra-op threads in a fresh process (nothing set)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                         env=env, capture_output=True, text=True, check=True)
    return int(out.stdout)


@contextmanager
def competing_load(processes: int) -> Iterator[None]:
    """``processes`` CPU-bound busy loops, killed on exit."""
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
             for _ in range(processes)]
    try:
        time.sleep(2.0)
        yield
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()


def timed(command: list[str], threads: int | None, timeout: float) -> float:
    """Seconds ``privfed COMMAND`` takes in a fresh process (``--threads`` when given);
    infinity when it takes longer than ``timeout`` (it is then stopped)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PRIVFED_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PYTHONPATH"] = str(ROOT)
    extra = [] if threads is None else ["--threads", str(threads)]
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        try:
            subprocess.run([sys.executable, "-m", "privfed", *command, "--output-dir", out,
                            "-q", *extra], env=env, cwd=ROOT, check=True,
                           stdout=subprocess.DEVNULL, timeout=timeout)
        except subprocess.TimeoutExpired:
            return math.inf
        return time.perf_counter() - started


def step_ratios(default: int, repeats: int = 5, steps: int = 20) -> None:
    """Print the median time of ``steps`` training steps with ``default`` threads over that
    with one, for the CNN and the MLP (interleaved, in this process)."""
    import torch
    import torch.nn.functional as F

    from privfed.models import build_model

    for name, shape, batch in (("cnn", (1, 28, 28), 50), ("mlp", (64,), 16)):
        model = build_model(name, shape, 10, seed=0)
        x, y = torch.randn(batch, *shape), torch.randint(0, 10, (batch,))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        times: dict[int, list[float]] = {1: [], default: []}
        for _ in range(repeats):
            for threads in times:
                torch.set_num_threads(threads)
                started = time.perf_counter()
                for _ in range(steps):
                    optimizer.zero_grad()
                    F.cross_entropy(model(x), y).backward()
                    optimizer.step()
                times[threads].append(time.perf_counter() - started)
        one, many = statistics.median(times[1]), statistics.median(times[default])
        print(f"  {name} step, batch {batch}: 1 thread {one / steps * 1e3:.1f} ms, {default} "
              f"threads {many / steps * 1e3:.1f} ms, ratio {many / one:.2f}", flush=True)


def jobs(args: argparse.Namespace) -> dict[str, list[str]]:
    """The jobs measured: name -> ``privfed`` arguments (without --output-dir, --threads)."""
    main = ["compare"]
    name = "main job"
    if args.main_rounds:
        main += ["--set", f"federation.rounds={args.main_rounds}"]
        name += f" ({args.main_rounds} rounds"
        name += ", quick audit)" if args.quick else ")"
    if args.quick:
        main.append("--quick")
    chosen = {"digits": ("digits.toml", ["run", "experiments/configs/digits.toml"]),
              "main": (name, main)}
    return dict(chosen[job] for job in args.jobs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--main-rounds", type=int, default=0,
                        help="the main job's rounds (default: its own, 30)")
    parser.add_argument("--quick", action="store_true", help="the main job's quick audit")
    parser.add_argument("--jobs", nargs="+", choices=("digits", "main"),
                        default=["digits", "main"], help="the jobs measured")
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="stop a run after this many seconds (shown as >T)")
    parser.add_argument("--steps", action="store_true",
                        help="also time one training step of the CNN and the MLP")
    args = parser.parse_args()
    default, cores = torch_default_threads(), os.cpu_count() or 1
    print(f"{cores} cores; torch default {default} threads; chosen: privfed's automatic rule")
    if args.steps:
        step_ratios(default)
    rows = []
    for load in ("idle", "loaded"):
        context = competing_load(cores) if load == "loaded" else _nothing()
        with context:
            for name, command in jobs(args).items():
                before = os.getloadavg()[0]
                chosen = timed(command, None, args.timeout)
                torch_default = timed(command, default, args.timeout)
                rows.append((name, load, before, chosen, torch_default))
                print(f"  {name}, {load}: chosen {_seconds(chosen, args.timeout)} s, default "
                      f"{_seconds(torch_default, args.timeout)} s", flush=True)
    print(f"\n| job | load | load avg before | chosen (s) | torch default, {default} threads "
          "(s) | default / chosen |\n|---|---|---|---|---|---|")
    for name, load, before, chosen, torch_default in rows:
        ratio = _seconds(torch_default / chosen, args.timeout / chosen)
        print(f"| {name} | {load} | {before:.1f} | {_seconds(chosen, args.timeout)} | "
              f"{_seconds(torch_default, args.timeout)} | {ratio}x |")


def _seconds(value: float, bound: float) -> str:
    """``value`` to one decimal, or ``>bound`` when it is infinite (a stopped run)."""
    return f">{bound:.1f}" if math.isinf(value) else f"{value:.1f}"


@contextmanager
def _nothing() -> Iterator[None]:
    yield


if __name__ == "__main__":
    main()
