"""The shape of one round: the core stands alone, stages run in order, few package crossings."""

from __future__ import annotations

import collections
import subprocess
import sys
import textwrap

import torch

from privfed.config import load_config
from privfed.experiment import build_simulation
from privfed.federated import (
    LocalTraining,
    Observer,
    Pipeline,
    ServerAggregate,
    UpdateStage,
)
from tests.conftest import make_server

PLUG_INS = ("tenseal", "cryptography", "Crypto", "opacus", "privfed.secure", "privfed.privacy",
            "privfed.compression", "privfed.aggregation", "privfed.integrations", "attacks")


def test_the_core_imports_no_protocol_mechanism_or_crypto_package() -> None:
    code = textwrap.dedent(f"""
        import sys
        import privfed.federated
        loaded = [m for m in {PLUG_INS!r} if any(k == m or k.startswith(m + ".")
                                                 for k in sys.modules)]
        print(",".join(loaded))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == ""


def test_secure_imports_nothing_else_from_privfed() -> None:
    code = ("import sys, privfed.secure; print(sorted({k.split('.')[1] for k in sys.modules "
            "if k.startswith('privfed.') and not k.startswith('privfed.secure')}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


class _Types(Observer):
    def __init__(self) -> None:
        self.seen: list[tuple[str, torch.dtype]] = []

    def aggregate_released(self, round_id, mean_update):
        assert isinstance(mean_update, torch.Tensor)
        self.seen.append(("aggregate", mean_update.dtype))

    def model_released(self, round_id, weights, spec):
        assert isinstance(weights, torch.Tensor)
        self.seen.append(("model", weights.dtype))


def test_observers_receive_float32_tensors(blobs) -> None:
    x, y = blobs
    types = _Types()
    server = make_server([(x[:60], y[:60]), (x[60:], y[60:])], (x, y), observers=[types])
    server.fit(2)
    assert types.seen == [("aggregate", torch.float32), ("model", torch.float32)] * 2


class _Recorder(UpdateStage):
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def client(self, round_id, client_id, vector):
        self.log.append(f"client {self.name}")
        return vector * 2.0

    def server(self, round_id, aggregate):
        self.log.append(f"server {self.name}")
        return aggregate.with_sum(aggregate.sum / 2.0)  # undo the client half


def test_pipeline_runs_client_halves_in_order_and_server_halves_in_reverse() -> None:
    log: list[str] = []
    pipeline = Pipeline([_Recorder("a", log), _Recorder("b", log)])
    out = pipeline.client(1, 0, torch.ones(3))
    released = pipeline.server(1, ServerAggregate(out, 1.0, (0,)))
    assert log == ["client a", "client b", "server b", "server a"]
    assert torch.equal(out, torch.full((3,), 4.0))
    assert torch.equal(released.sum, torch.ones(3))


def test_a_stage_runs_its_client_half_on_every_client_and_its_server_half_once(blobs) -> None:
    """Through a whole round: each of 3 clients runs the client half (x2) once, the server
    half runs once on the weighted sum and undoes it, so the model is plain FedAvg's."""
    x, y = blobs
    log: list[str] = []
    parts = [(x[i::3], y[i::3]) for i in range(3)]
    plain = make_server(parts, (x, y), training=LocalTraining(lr=0.1))
    staged = make_server(parts, (x, y), training=LocalTraining(lr=0.1))
    staged.pipeline = staged.engine.pipeline = Pipeline([_Recorder("a", log)])
    plain.fit(1)
    staged.fit(1)
    assert log == ["client a"] * 3 + ["server a"]
    torch.testing.assert_close(staged.weights, plain.weights, atol=1e-5, rtol=0)


def _package(frame) -> str | None:
    parts = frame.f_globals.get("__name__", "").split(".")
    if parts[0] != "privfed":
        return None
    return ".".join(parts[:2])


def count_crossings(run) -> collections.Counter:
    """Calls from a function of one privfed package into another's, while ``run()`` runs
    (the caller is the nearest privfed frame below the callee)."""
    edges: collections.Counter = collections.Counter()

    def profile(frame, event, arg):
        if event != "call" or (callee := _package(frame)) is None:
            return
        caller = frame.f_back
        while caller is not None and _package(caller) is None:
            caller = caller.f_back
        if caller is not None and _package(caller) != callee:
            edges[(_package(caller), callee, frame.f_code.co_name)] += 1

    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(None)
    return edges


def test_one_round_with_central_dp_and_random_k_crosses_few_package_boundaries() -> None:
    """The path of one 3-client round crossed package boundaries 40 times (55 by the
    issue's count) before the pipeline; it must stay at most half of that."""
    cfg = load_config(None, [
        "data.num_clients=3", "federation.rounds=1", "model.hidden=[32]",
        "privacy.mechanism='central'", "privacy.noise_multiplier=1.0",
        "compression.method='randomk'", "compression.density=0.1",
        "compression.rescale=false",
    ])
    server = build_simulation(cfg).server
    edges = count_crossings(lambda: server.run_round(evaluate_now=False))
    # 20 with every update kept until the protocol runs; streaming the round into a running
    # sum (privfed.aggregation.PlainRunningSum) adds 4: start it, add a chunk, finish it
    # (core -> adapter -> privfed.secure) in place of one aggregate call; the central noise
    # stage's per-round diagnostics (noise std, SNR estimate) add its metrics call: 25.
    assert sum(edges.values()) <= 25, edges  # 25 now
