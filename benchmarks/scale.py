"""Scale: time per round and peak memory against the population and the cohort.

The M-workloads of ../shared/benchmarks/WORKLOADS.md: N clients of 60 MNIST training
images each (consecutive slices of ``default_rng(0).permutation`` of the training set,
tiled for N > 1000: a client holds row indices into the one 60 000-image array), MLP
784-128-10, 1 local epoch of SGD (lr 0.05, batch 32), a cohort of k clients per round
(``ClientSampler(N, k / N, seed=1)``), evaluation after the last round only, one torch
thread. Built as a user would, with privfed's Server on the in-process engine; "plain" is
FedAvg with plain aggregation, "dp" local DP-SGD (noise multiplier 1, clip 1, its sample
rate and accounting from ``build_privacy``). Each configuration runs in a fresh
subprocess, so that its peak memory (``ru_maxrss``) is its own.

Usage::

    python benchmarks/scale.py               # N in 10..10000, k in 10/50/100, 20 rounds
    python benchmarks/scale.py --quick       # a few configurations, 5 rounds
    python benchmarks/scale.py --long        # growth: rounds 50 vs 1000 at N = 10000, k = 10
    python benchmarks/scale.py --wire        # plain without vs with messages, N 1000, k 50
    python benchmarks/scale.py --masking     # masking server and client time, 50..500

MNIST is read from ``--data-dir`` (default ``../shared/data`` or ``../../shared/data``
from the repository); without its files the images are random (labelled "synthetic").
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's privfed, not an installed one
SAMPLES, BATCH, LR, HIDDEN = 60, 32, 0.05, 128
POPULATIONS, COHORTS = (10, 100, 1000, 10_000), (10, 50, 100)


# --- one configuration, in its own process ----------------------------------------------

def load_images(data_dir: str | None):
    """MNIST (images / 255) as tensors, or random images of its shape; and the source."""
    import numpy as np
    import torch

    candidates = [Path(data_dir)] if data_dir else [ROOT.parent / "shared" / "data",
                                                    ROOT.parents[1] / "shared" / "data"]
    for root in candidates:
        if (root / "mnist" / "train-images-idx3-ubyte.gz").exists():
            from privfed.data import load_dataset

            data = load_dataset("mnist", data_dir=str(root), scaling="unit")
            return ((torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)),
                    (torch.from_numpy(data.x_test), torch.from_numpy(data.y_test)), "mnist")
    rng = np.random.default_rng(0)

    def synthetic(n: int):
        x = rng.random((n, 1, 28, 28), dtype=np.float32)
        return torch.from_numpy(x), torch.from_numpy(rng.integers(0, 10, n))

    return synthetic(60_000), synthetic(10_000), "synthetic"


def population(num_clients: int, train):
    """``num_clients`` clients of 60 rows each of the shared training arrays."""
    import numpy as np
    import torch

    from privfed.federated import Client

    x, y = train
    tiles = math.ceil(num_clients * SAMPLES / len(y))
    order = np.random.default_rng(0).permutation(tiles * len(y)) % len(y)
    return [Client.from_rows(c, x, y, torch.from_numpy(order[c * SAMPLES:(c + 1) * SAMPLES]))
            for c in range(num_clients)]


def build_server(mode: str, clients, cohort: int, test, *, wire: bool = False):
    """The federation of one configuration, through privfed's public API."""
    from privfed.aggregation import SecureAggregation
    from privfed.config.privacy import PrivacyConfig
    from privfed.federated import (
        ClientSampler,
        FedAvg,
        InProcessEngine,
        LocalTraining,
        Server,
        bind_flat_parameters,
    )
    from privfed.models import build_model
    from privfed.privacy import NoisePolicy, build_privacy
    from privfed.secure import PlainAggregator

    workspace = bind_flat_parameters(build_model("mlp", (1, 28, 28), 10, seed=0,
                                                 hidden=(HIDDEN,)))
    sampler = ClientSampler(len(clients), cohort / len(clients), seed=1)
    training = LocalTraining(epochs=1, batch_size=BATCH, lr=LR)
    privacy = (PrivacyConfig(mechanism="local", noise_multiplier=1.0, max_grad_norm=1.0)
               if mode == "dp" else PrivacyConfig())
    parts = build_privacy(privacy, num_clients=len(clients), sample_rate=sampler.rate,
                          poisson=False, num_params=workspace.spec.numel, rounds=20,
                          training=training, noise=NoisePolicy(False, 0),
                          reference_size=SAMPLES, module=workspace.module)
    engine = InProcessEngine(workspace, clients, trainer=parts.trainer,
                             aggregation=SecureAggregation(PlainAggregator(wire=wire)),
                             weighting=parts.weighting, policy=parts.policy)
    return Server(workspace, engine, sampler=sampler, optimizer=FedAvg(lr=1.0),
                  test_data=test, batch_seed=lambda r, c: 100_000 * r + c,
                  policy=parts.policy, weighting=parts.weighting, eval_every=10**9)


def peak_mib() -> float:
    """This process's peak resident memory so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(spec: dict) -> dict:
    """Train one configuration; per-round wall times and the peak memory."""
    import torch

    torch.set_num_threads(1)
    train, test, source = load_images(spec["data_dir"])
    clients = population(spec["clients"], train)
    server = build_server(spec["mode"], clients, spec["cohort"], test)
    built_mib = peak_mib()
    cpu = [time.process_time()]
    server.fit(spec["rounds"], on_round=lambda _: cpu.append(time.process_time()))
    seconds = [r.seconds for r in server.history.rounds]
    return {**spec, "source": source, "seconds": seconds,
            "cpu": [b - a for a, b in zip(cpu, cpu[1:], strict=False)],
            "accuracy": server.history.final_accuracy, "built_mib": built_mib,
            "peak_mib": peak_mib()}


def run_wire(spec: dict) -> dict:
    """Plain rounds with and without messages, interleaved round by round."""
    import torch

    torch.set_num_threads(1)
    train, test, source = load_images(spec["data_dir"])
    clients = population(spec["clients"], train)
    servers = {wire: build_server("plain", clients, spec["cohort"], test, wire=wire)
               for wire in (False, True)}
    for _ in range(spec["rounds"]):
        for server in servers.values():
            server.run_round()
    same = torch.equal(servers[False].weights, servers[True].weights)
    up = {w: [r.bytes_up for r in s.history.rounds] for w, s in servers.items()}
    return {**spec, "source": source, "identical": same, "bytes_equal": up[False] == up[True],
            "seconds": {str(w): [r.seconds for r in s.history.rounds]
                        for w, s in servers.items()}}


# --- the driver ----------------------------------------------------------------------------

def in_subprocess(kind: str, spec: dict) -> dict:
    """Run ``kind`` ("one" or "wire") on ``spec`` in a fresh interpreter."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, __file__, "--worker", kind, json.dumps(spec)],
                          capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        raise RuntimeError(f"{kind} {spec} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def steady_ms(seconds: list[float]) -> float:
    """Median round time in ms, the first round (warm-up) left out where there are more."""
    return 1000 * statistics.median(seconds[1:] or seconds)


def table(args: argparse.Namespace) -> None:
    populations = (10, 1000, 10_000) if args.quick else POPULATIONS
    cohorts = (10,) if args.quick else COHORTS
    rounds = 5 if args.quick else args.rounds
    print(f"{'mode':6}{'N':>7}{'k':>5}{'ms/round':>10}{'cpu ms':>8}{'ms/client':>10}"
          f"{'setup MiB':>10}{'peak MiB':>9}{'accuracy':>9}", flush=True)
    rows = []
    for mode in ("plain", "dp"):
        for n in populations:
            for k in (c for c in cohorts if c <= n):
                out = in_subprocess("one", {"mode": mode, "clients": n, "cohort": k,
                                            "rounds": rounds, "data_dir": args.data_dir})
                ms = steady_ms(out["seconds"])
                cpu = 1000 * statistics.median(out["cpu"][1:-1] or out["cpu"])
                rows.append((mode, n, k, cpu, out["peak_mib"]))
                print(f"{mode:6}{n:>7}{k:>5}{ms:>10.1f}{cpu:>8.1f}{ms / k:>10.2f}"
                      f"{out['built_mib']:>10.0f}{out['peak_mib']:>9.0f}"
                      f"{out['accuracy']:>9.3f}", flush=True)
    print(f"\n{rounds} rounds, data: {out['source']}; ms/round: median wall time of a round "
          "(evaluation excluded, round 1 left out); cpu ms: median process time; setup MiB: "
          "peak after building the federation; peak MiB: peak resident memory.")
    growth(rows)


def growth(rows: list[tuple]) -> None:
    """State how the round's CPU time and the memory grow, from the measured rows (CPU
    time: the wall time of a shared machine also counts the other users)."""
    for mode in ("plain", "dp"):
        mine = [r for r in rows if r[0] == mode]
        by_k = [(k, ms) for m, n, k, ms, _ in mine if n == max(r[1] for r in mine)]
        at_k = sorted((n, ms, mib) for _, n, k, ms, mib in mine if k == min(r[2] for r in mine))
        if len(by_k) > 1:
            (k0, t0), (k1, t1) = by_k[0], by_k[-1]
            print(f"{mode}: per round ~{(t1 - t0) / (k1 - k0):.2f} cpu ms per cohort client "
                  f"(k {k0}->{k1}); ", end="")
        if len(at_k) > 1:
            (n0, t0, m0), (n1, t1, m1) = at_k[0], at_k[-1]
            print(f"N {n0}->{n1} at k {min(r[2] for r in mine)}: cpu time x{t1 / t0:.2f}, "
                  f"peak memory {m1 - m0:+.0f} MiB ({(m1 - m0) * 1024 / (n1 - n0):+.2f} KiB "
                  "per client)")


def long_run(args: argparse.Namespace) -> None:
    """Median round time around round 50 (rounds 26-75) against the last 50 of 1000
    rounds, at N = 10000, k = 10."""
    print(f"{'mode':6}{'rounds 26-75 ms':>16}{'rounds 951-1000 ms':>20}{'growth':>8}"
          f"{'peak MiB':>9}", flush=True)
    for mode in args.long_modes:
        out = in_subprocess("one", {"mode": mode, "clients": 10_000, "cohort": 10,
                                    "rounds": 1000, "data_dir": args.data_dir})
        early = 1000 * statistics.median(out["seconds"][25:75])
        late = 1000 * statistics.median(out["seconds"][950:1000])
        print(f"{mode:6}{early:>16.1f}{late:>20.1f}{late / early - 1:>+8.1%}"
              f"{out['peak_mib']:>9.0f}", flush=True)


def wire_ratio(args: argparse.Namespace) -> None:
    """Round time of plain aggregation without messages over with them, N 1000, k 50."""
    out = in_subprocess("wire", {"clients": 1000, "cohort": 50, "rounds": args.wire_rounds,
                                 "data_dir": args.data_dir})
    fast, wire = (steady_ms(out["seconds"][key]) for key in ("False", "True"))
    print(f"plain N=1000 k=50, {args.wire_rounds} interleaved rounds: without messages "
          f"{fast:.1f} ms, over the wire {wire:.1f} ms, ratio {fast / wire:.2f}; same "
          f"model: {out['identical']}, same bytes_up: {out['bytes_equal']}")


def masking(args: argparse.Namespace) -> None:
    """Masking's server and client time at 50/100/200/500 clients: secure_agg.py's
    ``--scaling`` (its owner keeps it; this only calls it)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from secure_agg import scaling

    scaling(101_770, [50, 100, 200, 500], reference_up_to=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N 10/1000/10000, k 10, 5 rounds")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--long", action="store_true", help="rounds 50 vs 1000, N 10000")
    parser.add_argument("--long-modes", nargs="*", default=["plain", "dp"])
    parser.add_argument("--wire", action="store_true", help="plain without/with messages")
    parser.add_argument("--wire-rounds", type=int, default=30)
    parser.add_argument("--masking", action="store_true", help="secure_agg.py --scaling")
    parser.add_argument("--data-dir", default=None, help="holds mnist/ (IDX files)")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, spec = args.worker
        print(json.dumps((run_one if kind == "one" else run_wire)(json.loads(spec))))
        return
    sections = [s for s, on in ((long_run, args.long), (wire_ratio, args.wire),
                                (masking, args.masking)) if on] or [table, wire_ratio]
    for section in sections:
        section(args)
        print()


if __name__ == "__main__":
    main()
