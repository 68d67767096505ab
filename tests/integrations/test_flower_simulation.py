"""privfed on Flower's simulation engine (Ray): the same models as in-process, any schedule,
compression with error feedback kept on the nodes, privacy ledgers on the nodes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("flwr")

from privfed.integrations.flower import run_flower_simulation  # noqa: E402
from tests.integrations.flower_helpers import config, in_process, masking_bound  # noqa: E402


@pytest.mark.slow
def test_simulation_engine_equals_in_process(tmp_path: Path) -> None:
    cfg = config(f"output_dir='{tmp_path}'")
    flower, history = run_flower_simulation(cfg, run_dir=tmp_path / "sim")
    server, expected = in_process(cfg)
    torch.testing.assert_close(flower.weights, server.weights, atol=1e-5, rtol=0)
    assert [r.clients for r in history.rounds] == [r.clients for r in expected.rounds]
    assert history.rounds[-1].test_accuracy == pytest.approx(expected.rounds[-1].test_accuracy)
    saved = torch.load(tmp_path / "sim" / "model.pt")["state_dict"]
    assert torch.equal(server.workspace.spec.flatten(saved), flower.weights)


@pytest.mark.slow
def test_simulation_keeps_the_privacy_ledger_across_rounds_with_secure_noise() -> None:
    """Local DP-SGD on the nodes: each client's ledger lives in its Context.state, so
    epsilon after 3 rounds equals the in-process run's (and exceeds round 1's); the noise
    comes from OS entropy on the Flower engines, so the model is not the seeded run's."""
    cfg = config("privacy.mechanism='local'", "privacy.noise_multiplier=1.0",
                 "secure.kind='masking'")
    flower, history = run_flower_simulation(cfg)
    server, expected = in_process(cfg)
    epsilons = [r.extra["epsilon"] for r in history.rounds]
    assert epsilons == pytest.approx([r.extra["epsilon"] for r in expected.rounds], rel=1e-9)
    assert epsilons[0] < epsilons[1] < epsilons[2]
    assert {r.extra["noise"] for r in history.rounds} == {"secure"}
    assert float((flower.weights - server.weights).abs().max()) > 1e-3


@pytest.mark.slow
def test_simulation_central_dp_with_adaptive_clipping_equals_in_process() -> None:
    """The server's moving clip norm reaches the clients every round (no noise, so the
    secure noise of the Flower engines draws nothing and both runs agree)."""
    cfg = config("privacy.mechanism='central'", "privacy.noise_multiplier=0.0",
                 "privacy.adaptive_clipping=true", "privacy.clip_norm=0.1",
                 "privacy.clipped_count_stddev=1.0")
    flower, history = run_flower_simulation(cfg)
    server, expected = in_process(cfg)
    clip_norms = [r.extra["clip_norm"] for r in history.rounds]
    assert clip_norms == pytest.approx([r.extra["clip_norm"] for r in expected.rounds])
    assert len(set(clip_norms)) > 1
    torch.testing.assert_close(flower.weights, server.weights, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_simulation_compression_with_error_feedback_equals_in_process() -> None:
    """Random-k with error feedback in front of masking: each node keeps its residual in
    its Context.state and restricts to the round's shared index set, so the model equals
    the in-process run's (within masking's fixed-point rounding)."""
    cfg = config("secure.kind='masking'", "compression.method='randomk'",
                 "compression.density=0.25", "compression.error_feedback=true",
                 "compression.rescale=false")
    flower, history = run_flower_simulation(cfg)
    server, expected = in_process(cfg)
    assert [r.bytes_up for r in history.rounds] == [r.bytes_up for r in expected.rounds]
    torch.testing.assert_close(flower.weights, server.weights,
                               atol=masking_bound(cfg, 3, server.weights), rtol=0)
    uncompensated, _ = in_process(config("secure.kind='masking'", "compression.method='randomk'",
                                         "compression.density=0.25", "compression.rescale=false"))
    assert float((uncompensated.weights - server.weights).abs().max()) > 1e-3


@pytest.mark.slow
def test_simulation_quantised_uploads_with_error_feedback_equal_in_process() -> None:
    """The plain protocol's payload codec (4-bit stochastic quantisation, the client's own
    randomness) and the residual on the node: the same bytes and model as in-process."""
    cfg = config("compression.method='quantize'", "compression.bits=4",
                 "compression.error_feedback=true")
    flower, history = run_flower_simulation(cfg)
    server, expected = in_process(cfg)
    assert [r.bytes_up for r in history.rounds] == [r.bytes_up for r in expected.rounds]
    torch.testing.assert_close(flower.weights, server.weights, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_simulation_fedbuff_equals_in_process() -> None:
    """FedBuff is a schedule: on the Flower engine the same jobs train from the same model
    versions in the same simulated-time order, with the same staleness weights."""
    cfg = config("federation.buffer_size=2", "federation.concurrency=3",
                 "federation.latency_spread=1.0", rounds=4)
    flower, history = run_flower_simulation(cfg)
    server, expected = in_process(cfg)
    assert [r.extra["sim_time"] for r in history.rounds] == [
        r.extra["sim_time"] for r in expected.rounds]
    assert [r.clients for r in history.rounds] == [r.clients for r in expected.rounds]
    assert max(r.extra["staleness_max"] for r in history.rounds) >= 1
    torch.testing.assert_close(flower.weights, server.weights, atol=1e-5, rtol=0)
