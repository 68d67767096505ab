"""Memory: the peak resident memory of one round in which every client takes part.

The M-workload of scale.py with the whole population in the round (N = k = 1000 clients
of 60 MNIST training images each, MLP 784-128-10 of 101,770 parameters, 1 local epoch of
SGD, plain aggregation in process, one torch thread), one round, each path in a fresh
subprocess:

* ``stream``: the synchronous round as built: each chunk's updates go through the client
  halves into the protocol's running float64 sum as soon as they are trained;
* ``keep``: the same engine told no :class:`~privfed.federated.RoundPlan`, so it keeps
  every update until the protocol runs (the path of a round that cannot stream, and of
  every round before streaming).

Reported: the resident memory once the federation is built, the peak during the round
(the kernel's high-water mark, reset after building where ``/proc/self/clear_refs``
allows, else the process's peak so far), their difference, and the size of the cohort's
updates as float32 for scale.

Usage::

    python benchmarks/memory.py                      # N = k = 1000, plain
    python benchmarks/memory.py --clients 200 --mode dp
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from scale import build_server, load_images, population  # noqa: E402


class KeepsUpdates:
    """The engine told no plan: it keeps every update until the protocol runs."""

    def __init__(self, engine) -> None:
        self.engine = engine

    def __getattr__(self, name: str):
        return getattr(self.engine, name)

    def train(self, jobs, plan=None):
        return self.engine.train(jobs)


def _status_mib(field: str) -> float:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> bool:
    """Reset the kernel's resident high-water mark to the current resident size."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def run_one(spec: dict) -> dict:
    """Build the federation, run one round on ``spec["path"]``; the memory figures."""
    import torch

    torch.set_num_threads(1)
    train, test, source = load_images(spec["data_dir"])
    clients = population(spec["clients"], train)
    server = build_server(spec["mode"], clients, spec["clients"], test)
    if spec["path"] == "keep":
        server.engine = KeepsUpdates(server.engine)
    built = _status_mib("VmRSS")
    reset = _reset_peak()
    server.run_round()
    record = server.history.rounds[-1]
    return {**spec, "source": source, "built_mib": built, "peak_mib": _status_mib("VmHWM"),
            "peak_reset": reset, "clients_in_round": len(record.clients),
            "updates_mib": len(record.clients) * server.weights.numel() * 4 / 2**20,
            "seconds": record.seconds}


def in_subprocess(spec: dict) -> dict:
    """:func:`run_one` in a fresh interpreter with one thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)],
                          capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        raise RuntimeError(f"{spec} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000, help="N = k")
    parser.add_argument("--mode", choices=("plain", "dp"), default="plain")
    parser.add_argument("--data-dir", default=None, help="holds mnist/ (IDX files)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_one(json.loads(args.worker))))
        return
    print(f"{'path':8}{'clients':>8}{'built MiB':>10}{'peak MiB':>9}{'round +MiB':>11}"
          f"{'updates MiB':>12}{'s':>7}", flush=True)
    for path in ("stream", "keep"):
        out = in_subprocess({"path": path, "clients": args.clients, "mode": args.mode,
                             "data_dir": args.data_dir})
        print(f"{path:8}{out['clients_in_round']:>8}{out['built_mib']:>10.0f}"
              f"{out['peak_mib']:>9.0f}{out['peak_mib'] - out['built_mib']:>11.0f}"
              f"{out['updates_mib']:>12.0f}{out['seconds']:>7.1f}", flush=True)
    print(f"\n{args.mode}, data: {out['source']}; round +MiB: the round's peak over the "
          f"memory once built ({'high-water mark reset' if out['peak_reset'] else 'peak'} "
          "after building); updates MiB: the cohort's updates as float32.")


if __name__ == "__main__":
    main()
