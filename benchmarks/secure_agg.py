"""Cost of secure aggregation versus the plain float32 baseline.

Usage::

    python benchmarks/secure_agg.py --quick      # small subset, ~1 minute
    python benchmarks/secure_agg.py              # 1e4/1e5/1e6 params x 10/50/100 clients

For HE, per-client cost does not depend on the number of clients, so at most
``--he-clients`` clients are run and the server time is extrapolated linearly to ``n``
(rows marked ``*``). Masking and plain always run all ``n`` clients.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from privfed.secure import AggregationResult, make_aggregator


def run(kind: str, agg, dim: int, clients: int, measured: int, rng) -> dict[str, float]:
    vectors = {c: rng.uniform(-1, 1, dim).astype(np.float32) for c in range(measured)}
    weights = {c: float(rng.integers(100, 1000)) for c in range(measured)}
    result: AggregationResult = agg.aggregate(int(time.time()), vectors, weights)
    scale = clients / measured
    return {
        "encode": result.seconds["encode"] / measured,
        "aggregate": result.seconds["aggregate"] * scale,
        "decode": result.seconds["decode"],
        "up": float(np.mean(list(result.bytes_up.values()))),
        "down": float(np.mean(list(result.bytes_down.values()))),
        "extrapolated": measured < clients,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1e4/1e5 params x 10 clients")
    parser.add_argument("--params", type=float, nargs="*", default=None)
    parser.add_argument("--clients", type=int, nargs="*", default=None)
    parser.add_argument("--kinds", nargs="*", default=["he", "masking"])
    parser.add_argument("--he-clients", type=int, default=10,
                        help="max clients actually run for HE (rest extrapolated)")
    args = parser.parse_args()
    dims = [int(p) for p in (args.params or ([1e4, 1e5] if args.quick else [1e4, 1e5, 1e6]))]
    counts = args.clients or ([10] if args.quick else [10, 50, 100])
    rng = np.random.default_rng(0)
    aggs = {"none": make_aggregator("none"), "he": make_aggregator("he"),
            "masking": make_aggregator("masking")}
    for agg in aggs.values():  # warm-up: first-call overheads are not part of the cost
        agg.aggregate(0, {0: np.zeros(5000), 1: np.zeros(5000)}, {0: 1.0, 1: 1.0})
    head = (f"{'kind':8} {'params':>8} {'n':>4} {'enc s/cl':>9} {'x':>6} {'agg s':>8} {'x':>6} "
            f"{'dec s':>7} {'up B/cl':>11} {'B/param':>8} {'x':>5} {'down B/cl':>11}")
    print(head)
    print("-" * len(head))
    notes = []
    for dim in dims:
        for n in counts:
            base = run("none", aggs["none"], dim, n, n, rng)
            rows = [("none", base)]
            for kind in args.kinds:
                measured = min(n, args.he_clients) if kind == "he" else n
                rows.append((kind, run(kind, aggs[kind], dim, n, measured, rng)))
            for kind, r in rows:
                star = "*" if r["extrapolated"] else " "
                print(
                    f"{kind:8} {dim:>8} {n:>4}{star}{r['encode']:>9.4f} "
                    f"{r['encode'] / base['encode']:>6.1f} {r['aggregate']:>8.3f} "
                    f"{r['aggregate'] / base['aggregate']:>6.1f} {r['decode']:>7.4f} "
                    f"{r['up']:>11.0f} {r['up'] / dim:>8.2f} {r['up'] / base['up']:>5.2f} "
                    f"{r['down']:>11.0f}",
                    flush=True,
                )
                if kind == "he":
                    notes.append(f"HE d={dim} n={n}: {r['up'] / dim:.2f} B/param, "
                                 f"encrypt {dim / r['encode']:.3g} params/s per client")
                if kind == "masking":
                    key_material = r["up"] - 4 * dim
                    notes.append(f"masking d={dim} n={n}: client {r['encode']:.3f} s, upload "
                                 f"{r['up'] / (4 * dim):.3f}x 32-bit plaintext "
                                 f"({key_material} B headers/keys/shares)")
    print("\nratios 'x' are versus the plain float32 aggregator measured in the same run;")
    print("'*': HE run with fewer clients, server time extrapolated linearly to n.")
    print("\n".join(notes))


if __name__ == "__main__":
    main()
