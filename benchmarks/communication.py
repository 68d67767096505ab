"""Accuracy against bytes sent up, per update-compression method.

Usage::

    python benchmarks/communication.py                   # digits, then MNIST if present
    python benchmarks/communication.py --rounds 30 --dataset digits
    python benchmarks/communication.py --set model.hidden=[200,200]

Per dataset (digits embedded; MNIST only when its files are already in the data directory:
nothing is downloaded) and method, trains the configured federation (10 IID clients, MLP,
``--rounds`` rounds) with the updates compressed by the clients and decoded by the server,
and prints the final accuracy, the megabytes sent up in total and until the run first reached
the target (the uncompressed run's final accuracy minus one point), and each total as a
ratio of the uncompressed run's. Bytes are the serialised upload messages (History's
``bytes_up``).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from privfed.config import load_config
from privfed.config.compression import CompressionConfig
from privfed.data.locate import resolve_data_dir
from privfed.experiment import build_simulation
from privfed.federated import History

METHODS: dict[str, CompressionConfig] = {
    "float32": CompressionConfig(),
    "quantize b=8": CompressionConfig(method="quantize", bits=8),
    "quantize b=4": CompressionConfig(method="quantize", bits=4),
    "quantize b=2 (blocks 256)": CompressionConfig(method="quantize", bits=2, block_size=256),
    "quantize b=1 (blocks 256)": CompressionConfig(method="quantize", bits=1, block_size=256),
    "top-k 10%": CompressionConfig(method="topk", density=0.1),
    "top-k 10% + EF": CompressionConfig(method="topk", density=0.1, error_feedback=True),
    "top-k 1% + EF": CompressionConfig(method="topk", density=0.01, error_feedback=True),
    "random-k 10% (d/k)": CompressionConfig(method="randomk", density=0.1),
    "random-k 10% + EF": CompressionConfig(method="randomk", density=0.1, rescale=False,
                                           error_feedback=True),
}


def run(overrides: list[str], compression: CompressionConfig) -> tuple[History, float]:
    """Train one federation with ``compression``; return its history and wall seconds."""
    config = dataclasses.replace(load_config(overrides=overrides), compression=compression)
    simulation = build_simulation(config)
    started = time.perf_counter()
    history = simulation.run()
    return history, time.perf_counter() - started


def bytes_to_reach(history: History, target: float) -> float | None:
    """Bytes sent up until the first evaluation at or above ``target`` (None: never)."""
    sent = 0
    for record in history.rounds:
        sent += record.bytes_up
        if record.test_accuracy is not None and record.test_accuracy >= target:
            return sent
    return None


def benchmark(dataset: str, overrides: list[str]) -> None:
    """Print the table of one dataset."""
    overrides = [f"data.dataset={dataset}", *overrides]
    base, _ = run(overrides, METHODS["float32"])
    target = base.final_accuracy - 0.01
    base_total, base_reach = base.total("bytes_up"), bytes_to_reach(base, target)
    print(f"\n{dataset}: target accuracy {target:.3f} (float32 final minus 1 point)")
    print(f"{'method':28s} {'acc':>6s} {'MB up':>8s} {'ratio':>7s} {'MB@target':>10s} "
          f"{'ratio':>7s} {'sec':>6s}")
    for name, compression in METHODS.items():
        history, seconds = (base, 0.0) if name == "float32" else run(overrides, compression)
        total, reach = history.total("bytes_up"), bytes_to_reach(history, target)
        reach_text = (f"{reach / 1e6:10.3f} {reach / base_reach:7.3f}" if reach is not None
                      else f"{'never':>10s} {'-':>7s}")
        print(f"{name:28s} {history.final_accuracy:6.3f} {total / 1e6:8.3f} "
              f"{total / base_total:7.3f} {reach_text} {seconds:6.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", action="append", default=None,
                        help="digits and/or mnist (default: both, mnist when present)")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    overrides = [f"federation.rounds={args.rounds}", *args.set]
    datasets = args.dataset or ["digits", "mnist"]
    for dataset in datasets:
        if dataset == "mnist" and not (resolve_data_dir() / "mnist").is_dir():
            print(f"\nmnist: skipped, no {resolve_data_dir() / 'mnist'} (nothing is downloaded)")
            continue
        benchmark(dataset, overrides)


if __name__ == "__main__":
    main()
