"""privfed against Apple's pfl 0.6.0 and Flower on the same FedAvg workloads, in one run.

Workloads (../shared/benchmarks/WORKLOADS.md): W1 and W2 (digits, 30 rounds) and the MNIST
populations M1000-k10, M1000-k50 and M10000-k10 (20 rounds; skipped with a message when
``--mnist-dir`` holds no MNIST files). For each workload this driver writes one ``.npz``
file (features, labels, client shards, the cohort schedule ``sorted(default_rng(1).choice(N,
k))`` per round, and the initial weights of ``torch.manual_seed(0)`` + the MLP), then runs
each framework on it in a fresh process of its own:

* ``privfed_side.py`` with this interpreter (privfed's public API, in-process engine);
* ``pfl_side.py`` with pfl's interpreter (``--pfl-python`` or env ``PFL_PYTHON``):
  ``SimulatedBackend``, ``FederatedAveraging`` weighted by data points, central
  ``SGD(lr=1)``.

Both train each client on the same samples in the same batch order, so the accuracies must be
equal (a mismatch is a bug in this benchmark and is flagged). Columns: CPU seconds per round
(``time.process_time``, median of rounds 2..R-1: round 1 carries first-call warm-up and pfl's
evaluation at iteration 0, round R privfed's test evaluation), their ratio privfed/pfl, both
accuracies and each process's peak resident memory (``resource.getrusage``). One torch thread
per process (``BENCH_TORCH_THREADS``). With ``--flower``, W1 also runs Flower 1.42's own
FedAvg in its simulation engine through ``benchmarks/engines.py`` (wall seconds per round,
median of rounds 2..R; Flower's rounds wait on 0.1 s polling loops, so CPU time says little).

pfl lives in a venv of its own and is deliberately not a dependency of privfed, not even an
optional extra: pfl 0.6.0 pins an older ``dp-accounting`` than the one privfed's privacy
accounting and tests need, so the two cannot share an environment. Install it with::

    python3 -m venv /work/pflvenv
    /work/pflvenv/bin/pip install torch==2.13.0
    /work/pflvenv/bin/pip install "pfl[pytorch]==0.6.0"

Run by hand: ``python benchmarks/peers/peers.py [--pfl-python /work/pflvenv/bin/python]
[--workloads W1 W2 M1000-k10 ...] [--flower]``. Machines are noisy: compare the ratios of
one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from privfed.data import load_dataset, make_partitioner

HERE = Path(__file__).resolve().parent
MNIST_DIR = next((p / "shared" / "data" / "mnist" for p in HERE.parents[2:]
                  if (p / "shared" / "data" / "mnist").is_dir()), HERE.parents[2] / "shared")
"""The nearest ``shared/data/mnist`` above the repository (``../shared`` of a checkout)."""
WORKLOADS = {  # name: (dataset, clients, cohort, rounds)
    "W1": ("digits", 10, 10, 30),
    "W2": ("digits", 100, 10, 30),
    "M1000-k10": ("mnist", 1000, 10, 20),
    "M1000-k50": ("mnist", 1000, 50, 20),
    "M10000-k10": ("mnist", 10000, 10, 20),
}
MNIST_SHARD = 60
INSTALL = ("python3 -m venv /work/pflvenv && /work/pflvenv/bin/pip install torch==2.13.0 && "
           "/work/pflvenv/bin/pip install 'pfl[pytorch]==0.6.0', then --pfl-python "
           "/work/pflvenv/bin/python")


def write_workload(name: str, mnist_dir: Path, path: Path) -> None:
    """Write workload ``name``'s arrays to ``path`` (an ``.npz`` both sides read)."""
    dataset, clients, cohort, rounds = WORKLOADS[name]
    if dataset == "digits":
        data = load_dataset("digits", scaling="unit")  # X / 16, stratified 80/20, seed 0
        shards = make_partitioner("iid").split(data.y_train, clients, 0)
    else:
        data = load_dataset("mnist", data_dir=mnist_dir, scaling="unit", download=False)
        # N x 60 samples: consecutive slices of a permutation of the (tiled) 60 000 images.
        perm = np.random.default_rng(0).permutation(clients * MNIST_SHARD) % len(data.y_train)
        shards = np.split(perm, clients)
    x, x_test = (a.reshape(len(a), -1).astype(np.float32) for a in (data.x_train, data.x_test))
    rng = np.random.default_rng(1)
    schedule = np.array([sorted(rng.choice(clients, size=cohort, replace=False))
                         if cohort < clients else list(range(clients)) for _ in range(rounds)])
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(x.shape[1], 128), nn.ReLU(), nn.Linear(128, 10))
    weights = {f"w{i}": p.detach().numpy() for i, p in enumerate(mlp.parameters())}
    np.savez(path, x=x, y=data.y_train.astype(np.int64), x_test=x_test,
             y_test=data.y_test.astype(np.int64), shard_index=np.concatenate(shards),
             shard_offsets=np.cumsum([0, *map(len, shards)]), schedule=schedule, **weights)


def side(python: str, script: str, workload: Path) -> dict:
    """Run one side in a fresh process; its JSON result."""
    env = {**os.environ, "BENCH_TORCH_THREADS": os.environ.get("BENCH_TORCH_THREADS", "1"),
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parents[1])}
    done = subprocess.run([python, str(HERE / script), str(workload)], env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{script} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def per_round(result: dict) -> float:
    """Median CPU seconds of rounds 2..R-1 (all rounds if fewer than 3)."""
    seconds = result["round_cpu_s"]
    return statistics.median(seconds[1:-1] if len(seconds) > 2 else seconds)


def pfl_python(given: str | None) -> str | None:
    """The interpreter to run pfl with, or None when pfl is not importable there."""
    python = given or os.environ.get("PFL_PYTHON")
    if not python:
        return None
    probe = subprocess.run([python, "-c", "import pfl.algorithm, torch"], capture_output=True,
                           check=False)
    return python if probe.returncode == 0 else None


def flower_w1_row(rounds: int) -> dict:
    """Flower's own FedAvg on W1 in its simulation engine, through ``engines.py``."""
    sys.path.insert(0, str(HERE.parent))
    import engines  # benchmarks/engines.py: one row per fresh process

    args = argparse.Namespace(rounds=rounds, deploy_rounds=1, ray_cpus=2, verbose=False)
    with tempfile.TemporaryDirectory(prefix="bench-peers-flower-") as tmp:
        result = engines.run_row("flower-sim", args, Path(tmp))
    return {"s_round": engines.summarize(result)[0], "accuracy": result["accuracy"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="*", default=list(WORKLOADS), choices=WORKLOADS)
    parser.add_argument("--pfl-python", default=None,
                        help="interpreter of pfl's venv (default: env PFL_PYTHON)")
    parser.add_argument("--mnist-dir", type=Path, default=MNIST_DIR)
    parser.add_argument("--flower", action="store_true",
                        help="also Flower's FedAvg on W1 in its simulation engine")
    args = parser.parse_args()
    pfl = pfl_python(args.pfl_python)
    has_mnist = (args.mnist_dir / "train-images-idx3-ubyte.gz").exists()
    print("CPU s/round: median of rounds 2..R-1, one torch thread; peak = max RSS of the "
          "side's process")
    head = (f"{'workload':<12}{'privfed s/r':>12}{'pfl s/r':>10}{'ratio':>7}{'privfed acc':>12}"
            f"{'pfl acc':>9}{'privfed MiB':>12}{'pfl MiB':>9}")
    print(head)
    print("-" * len(head))
    mismatches = []
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        for name in args.workloads:
            if WORKLOADS[name][0] == "mnist" and not has_mnist:
                print(f"{name:<12}skipped: no MNIST files in {args.mnist_dir}")
                continue
            path = Path(tmp) / f"{name}.npz"
            write_workload(name, args.mnist_dir, path)
            ours = side(sys.executable, "privfed_side.py", path)
            cells = f"{name:<12}{per_round(ours):>12.4f}"
            if pfl is None:
                print(f"{cells}  skipped: pfl not installed (install: {INSTALL})", flush=True)
                continue
            theirs = side(pfl, "pfl_side.py", path)
            if round(ours["accuracy"], 4) != round(theirs["accuracy"], 4):
                mismatches.append(name)
            print(f"{cells}{per_round(theirs):>10.4f}{per_round(ours) / per_round(theirs):>7.2f}"
                  f"{ours['accuracy']:>12.4f}{theirs['accuracy']:>9.4f}"
                  f"{ours['peak_mib']:>12.0f}{theirs['peak_mib']:>9.0f}", flush=True)
            path.unlink()
    if args.flower and "W1" in args.workloads:
        flower = flower_w1_row(WORKLOADS["W1"][3])
        print(f"\nFlower 1.42 FedAvg, simulation engine, W1: {flower['s_round']:.4f} wall s/round "
              f"(median of rounds 2..R), accuracy {flower['accuracy']:.4f}")
    if mismatches:
        print(f"\nACCURACY MISMATCH on {', '.join(mismatches)}: the two sides did not compute "
              "the same training (a bug in this benchmark)")


if __name__ == "__main__":
    main()
