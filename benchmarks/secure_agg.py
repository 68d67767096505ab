"""Cost of secure aggregation versus the plain float32 baseline.

Usage::

    python benchmarks/secure_agg.py --quick      # small subset, ~1 minute
    python benchmarks/secure_agg.py              # 1e4/1e5/1e6 params x 10/50/100 clients
    python benchmarks/secure_agg.py --scaling    # masking full vs SecAgg+: 50..500 clients x 1e5

For HE, per-client cost does not depend on the number of clients, so at most
``--he-clients`` clients are run and the server time is extrapolated linearly to ``n``
(rows marked ``*``). Masking and plain always run all ``n`` clients.

``--scaling`` runs the complete graph and SecAgg+ side by side with the plain aggregator in
the same run; :func:`masking_scaling` returns its rows for other benchmarks to call.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from typing import Any

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one BLAS thread: these machines are shared and noisy

import numpy as np  # noqa: E402
from Crypto.Protocol.SecretSharing import Shamir  # noqa: E402

from privfed.secure import AggregationResult, MaskingAggregator, make_aggregator  # noqa: E402
from privfed.secure.masking.security import RoundParameters  # noqa: E402
from privfed.secure.masking.shamir import combine_secrets, split_secret  # noqa: E402


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


def pycryptodome_combine_seconds(owners: int, threshold: int, reference_owners: int) -> float:
    """Seconds pycryptodome's ``Shamir.combine`` (one 16-byte block at a time) takes to
    rebuild ``owners`` seeds from ``threshold`` shares each, measured on
    ``reference_owners`` of them and scaled linearly."""
    shares = dict(enumerate(split_secret(os.urandom(16), threshold, threshold), start=1))
    started = time.perf_counter()
    for _ in range(reference_owners):
        Shamir.combine(list(shares.items()))
    return (time.perf_counter() - started) * owners / reference_owners


def combine_seconds(owners: int, threshold: int) -> float:
    """Seconds :func:`combine_secrets` takes for ``owners`` seeds of ``threshold`` shares."""
    one = dict(enumerate(split_secret(os.urandom(16), threshold, threshold), start=1))
    collected = {c: one for c in range(owners)}
    started = time.perf_counter()
    combine_secrets(collected, threshold)
    return time.perf_counter() - started


GRAPHS = ("full", "secagg+")


def masking_scaling(clients: Sequence[int] = (50, 100, 200, 500),
                    dim: int = 100_000) -> list[dict[str, Any]]:
    """One masked round per client count and graph, beside the plain aggregator.

    The complete graph and SecAgg+ with the parameters the threat model's defaults give
    (10% corrupt, 10% dropouts, 2^-40 privacy, 2^-20 correctness), one round each with no
    dropout, and the plain float32 aggregator on the same vectors in the same run.

    Parameters
    ----------
    clients : sequence of int
        Cohort sizes ``n``.
    dim : int
        Parameters per client.

    Returns
    -------
    list of dict
        One row per ``(n, graph)``, ``graph`` in ``"none"`` (plain), ``"full"``,
        ``"secagg+"``: ``n``, ``graph``, ``k`` and ``t`` (None for plain), ``server_s``
        (the whole server side of the round), ``client_s`` (one client's mean time over all
        stages), ``up_bytes`` and ``down_bytes`` (mean per client), ``privacy_log2`` and
        ``correctness_log2`` (log2 of the failure probabilities; ``-inf`` for the complete
        graph).
    """
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    for n in clients:
        vectors = {c: rng.uniform(-1, 1, dim).astype(np.float32) for c in range(n)}
        weights = dict.fromkeys(range(n), 1.0)
        plain = make_aggregator("none")
        rows.append(_row(n, "none", None, plain.aggregate(1, vectors, weights)))
        for graph in GRAPHS:
            agg = MaskingAggregator(clip=1.0, neighbourhood=graph)
            rows.append(_row(n, graph, agg.round_params(n).planned(),
                             agg.aggregate(1, vectors, weights)))
    return rows


def _row(n: int, graph: str, plan: RoundParameters | None,
         result: AggregationResult) -> dict[str, Any]:
    return {
        "n": n, "graph": graph,
        "k": None if plan is None else plan.degree,
        "t": None if plan is None else plan.threshold,
        "server_s": result.seconds["aggregate"],
        "client_s": result.seconds["encode"] / n,
        "up_bytes": float(np.mean(list(result.bytes_up.values()))),
        "down_bytes": float(np.mean(list(result.bytes_down.values()))),
        "privacy_log2": None if plan is None else plan.privacy_log2,
        "correctness_log2": None if plan is None else plan.correctness_log2,
    }


def scaling(dim: int, counts: list[int], reference_up_to: int) -> None:
    """Print :func:`masking_scaling` side by side, then the Shamir combine comparison."""
    rows = masking_scaling(counts, dim)
    by = {(r["n"], r["graph"]): r for r in rows}
    head = (f"{'n':>4} {'plain srv s':>11} {'plain cl s':>10} | {'full k/t':>9} {'srv s':>7} "
            f"{'x':>5} {'cl s':>6} {'up kB':>7} {'down kB':>8} | {'secagg+ k/t':>11} "
            f"{'srv s':>7} {'x':>5} {'cl s':>6} {'up kB':>7} {'down kB':>8} {'log2 P':>7} | "
            f"{'full/s+ srv':>11} {'cl':>5}")
    print(head)
    print("-" * len(head))
    for n in counts:
        plain, full, sparse = (by[n, g] for g in ("none", *GRAPHS))
        cells = [f"{n:>4} {plain['server_s']:>11.4f} {plain['client_s']:>10.5f}"]
        for r, width in ((full, 9), (sparse, 11)):
            cells.append(
                f"{str(r['k']) + '/' + str(r['t']):>{width}} {r['server_s']:>7.3f} "
                f"{r['server_s'] / plain['server_s']:>5.0f} {r['client_s']:>6.3f} "
                f"{r['up_bytes'] / 1e3:>7.1f} {r['down_bytes'] / 1e3:>8.1f}"
                + (f" {r['privacy_log2']:>7.1f}" if r is sparse else "")
            )
        cells.append(f"{full['server_s'] / sparse['server_s']:>11.2f} "
                     f"{full['client_s'] / sparse['client_s']:>5.2f}")
        print(" | ".join(cells), flush=True)
    print(f"\n{dim} parameters per client, one round, no dropout; 'srv s' is the whole server "
          "side of the round, 'cl s' one client's time over all stages, 'x' the server time "
          "over the plain float32 aggregator's measured in the same run; 'up kB' is what one "
          "client uploads (its masked vector, key advert, shares, signatures), 'down kB' what "
          "it downloads (keys, shares, survivor set, signatures); 'log2 P' is "
          "SecAgg+'s privacy failure bound (the complete graph's is -inf); the last two "
          "columns are full over SecAgg+.\n")
    print(f"{'t':>4} {'n':>4} {'combine s':>10} {'pycryptodome s':>15} {'x':>7}")
    for n in counts:
        t = by[n, "full"]["t"]
        ours = combine_seconds(n, t)
        reference = (pycryptodome_combine_seconds(n, t, min(n, 10))
                     if n <= reference_up_to else float("nan"))
        print(f"{t:>4} {n:>4} {ours:>10.4f} {reference:>15.3f} {reference / ours:>7.0f}",
              flush=True)
    print("\n'combine s' rebuilds all n self-mask seeds of the complete graph (t shares each) "
          "with privfed's vectorised GF(2^128) Shamir, 'pycryptodome s' the same with "
          "pycryptodome's Shamir.combine (measured on 10 seeds, scaled to n), 'x' their "
          "ratio.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1e4/1e5 params x 10 clients")
    parser.add_argument("--params", type=float, nargs="*", default=None)
    parser.add_argument("--clients", type=int, nargs="*", default=None)
    parser.add_argument("--kinds", nargs="*", default=["he", "masking"])
    parser.add_argument("--he-clients", type=int, default=10,
                        help="max clients actually run for HE (rest extrapolated)")
    parser.add_argument("--scaling", action="store_true",
                        help="masking server cost against n (complete graph and SecAgg+)")
    parser.add_argument("--reference-up-to", type=int, default=200,
                        help="largest n at which pycryptodome's combine is measured")
    args = parser.parse_args()
    if args.scaling:
        scaling(int((args.params or [1e5])[0]), args.clients or [50, 100, 200, 500],
                args.reference_up_to)
        return
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
