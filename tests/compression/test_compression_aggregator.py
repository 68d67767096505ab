"""Compression parts on a round: decoded means, bytes on the wire, error feedback."""

from __future__ import annotations

import json

import numpy as np
import pytest

from privfed.compression import (
    CodecPayload,
    CompressionParts,
    ErrorFeedbackStage,
    RandomK,
    RandomKStage,
    build_compression,
)
from privfed.config.compression import CompressionConfig
from privfed.federated.stages import Pipeline
from privfed.secure import make_aggregator
from privfed.secure.wire import HEADER_SIZE
from tests.compression.rounds import residual, run_round

DIM = 40_000
NONE = CompressionParts()


def _round(seed=0, n=5):
    rng = np.random.default_rng(seed)
    vectors = {c: rng.normal(size=DIM).astype(np.float32) for c in range(n)}
    weights = {c: float(c + 1) for c in range(n)}
    return vectors, weights


def _mean(vectors, weights):
    total = sum(weights.values())
    return sum(weights[c] * vectors[c].astype(np.float64) for c in vectors) / total


def _parts(**fields):
    return build_compression(CompressionConfig(**fields), seed=3)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_quantised_bytes_fall_by_32_over_bits(bits):
    vectors, weights = _round()
    plain = run_round(NONE, 1, vectors, weights)
    comp = run_round(_parts(method="quantize", bits=bits), 1, vectors, weights)
    for c in vectors:  # header + one float32 scale + dim * bits / 8
        assert comp.bytes_up[c] == HEADER_SIZE + 4 + DIM * bits // 8
        assert plain.bytes_up[c] / comp.bytes_up[c] == pytest.approx(32 / bits, rel=0.01)
    # The mean's error: each coordinate's rounding noise has std <= spacing / 2 per client.
    spacing = max(2 * np.abs(v).max() / (2**bits - 1) for v in vectors.values())
    bound = spacing / 2 * np.sqrt(sum(w**2 for w in weights.values())) / sum(weights.values())
    assert np.sqrt(np.mean((comp.mean - plain.mean) ** 2)) < 1.2 * bound


@pytest.mark.parametrize("density", [0.01, 0.1])
def test_sparsified_bytes_fall_by_density_plus_index_cost(density):
    vectors, weights = _round()
    plain = run_round(NONE, 1, vectors, weights)
    top = run_round(_parts(method="topk", density=density), 1, vectors, weights)
    rand = run_round(_parts(method="randomk", density=density), 1, vectors, weights)
    k = int(np.ceil(density * DIM))
    assert rand.lengths == {k}  # the plain protocol uploads k float32 values
    for c in vectors:
        index_bytes = min(DIM // 8, 2 * k)  # uint16 indices or a bitmap
        assert top.bytes_up[c] == HEADER_SIZE + 1 + index_bytes + 4 * k
        assert rand.bytes_up[c] == HEADER_SIZE + 4 * k  # indices regenerated from the seed
        assert plain.bytes_up[c] / rand.bytes_up[c] == pytest.approx(1 / density, rel=0.05)


def test_lossless_settings_reproduce_the_plain_mean():
    vectors, weights = _round(1)
    plain = run_round(NONE, 2, vectors, weights)
    for fields in ({"method": "topk", "density": 1.0}, {"method": "randomk", "density": 1.0}):
        res = run_round(_parts(**fields), 2, vectors, weights)
        np.testing.assert_allclose(res.mean, plain.mean, rtol=0, atol=1e-12)
        assert res.included == plain.included and res.total_weight == plain.total_weight


def test_random_k_leaves_dropouts_to_the_protocol():
    vectors, weights = _round(2)
    parts = _parts(method="randomk", density=1.0)
    res = run_round(parts, 3, vectors, weights, dropouts={"upload": [1]})
    assert res.included == (0, 2, 3, 4) and res.bytes_up[1] == 0
    kept = {c: vectors[c] for c in res.included}
    np.testing.assert_allclose(res.mean, _mean(kept, {c: weights[c] for c in kept}),
                               rtol=0, atol=1e-12)


def test_error_feedback_sends_what_was_dropped_later():
    # A constant update: with error feedback the running sum of what was sent tracks
    # t * x (the residual stays bounded); without it, small coordinates are never sent.
    # In steady state the 10 coordinates sent per round carry the inflow sum |x| = 75, so a
    # residual is sent once it reaches about 7.5 (plus at most one update, 1).
    x = (np.linspace(0.5, 1, 100) * np.tile([1, -1], 50)).astype(np.float32)
    ef = _parts(method="topk", density=0.1, error_feedback=True)
    no = _parts(method="topk", density=0.1)
    sent_ef, sent_no = np.zeros(100), np.zeros(100)
    for r in range(1, 41):
        sent_ef += run_round(ef, r, {0: x}, {0: 1.0}).mean
        sent_no += run_round(no, r, {0: x}, {0: 1.0}).mean
    res = residual(ef, 0)
    np.testing.assert_allclose(sent_ef + res, 40 * x.astype(np.float64), atol=1e-9)
    assert np.abs(res).max() < 7.5 + 1 + 1  # bounded: a coordinate is sent once it grows large
    assert np.count_nonzero(sent_ef) == 100 and np.count_nonzero(sent_no) == 10


def _reference_residuals(decode_encode, rounds, n):
    """Error feedback as it always was: residual = (x + residual) - decode(encode(x + residual))."""
    memory = {}
    for r, vectors in rounds:
        for c in range(n):
            intended = vectors[c].astype(np.float64) + memory.get(c, 0.0)
            memory[c] = intended - decode_encode(intended, r, c)
    return memory


@pytest.mark.parametrize("fields", [
    {"method": "quantize", "bits": 2, "block_size": 64},
    {"method": "topk", "density": 0.05},
    {"method": "randomk", "density": 0.05, "rescale": False},
])
def test_error_feedback_residual_is_intended_minus_decoded(fields):
    parts = build_compression(CompressionConfig(**fields, error_feedback=True), seed=5)
    codec = build_compression(CompressionConfig(**fields), seed=5).payload_codec
    if codec is None:  # random-k: the server scatters the float32 values of the index set
        codec = CodecPayload(RandomK(0.05, seed=5, rescale=False), seed=5)

    def decode_encode(x, r, c):
        return codec.decode(codec.encode(x, r, c), x.size, r)

    rounds = [(r, _round(r, n=3)[0]) for r in (1, 2, 3)]
    for r, vectors in rounds:
        run_round(parts, r, {c: v[:2000] for c, v in vectors.items()}, dict.fromkeys(range(3), 1.0))
    expected = _reference_residuals(
        decode_encode, [(r, {c: v[:2000] for c, v in vs.items()}) for r, vs in rounds], 3)
    for c in range(3):
        np.testing.assert_array_equal(residual(parts, c), expected[c])


@pytest.mark.parametrize("fields", [
    {"method": "quantize", "bits": 4},
    {"method": "randomk", "density": 0.1, "rescale": False},
])
def test_a_stage_rebuilt_from_its_state_dict_continues_identically(fields):
    """What a Flower node does: the residual goes into the node's state (JSON) and a fresh
    pipeline picks it up in the next round."""
    config = CompressionConfig(**fields, error_feedback=True)
    running = build_compression(config, seed=2, control_length=1)
    vectors, weights = _round(3, n=3)
    vectors = {c: v[:3001] for c, v in vectors.items()}
    for r in (1, 2):
        run_round(running, r, vectors, weights)
    rebuilt = build_compression(config, seed=2, control_length=1)
    for c in vectors:
        state = json.loads(json.dumps(Pipeline(running.stages).state_dict(c),
                                      default=lambda tensor: tensor.tolist()))
        Pipeline(rebuilt.stages).load_state_dict(c, state)
    for r in (3, 4):
        a = run_round(running, r, vectors, weights)
        b = run_round(rebuilt, r, vectors, weights)
        np.testing.assert_array_equal(a.mean, b.mean)
        for c in vectors:
            np.testing.assert_array_equal(residual(running, c), residual(rebuilt, c))


def test_error_feedback_state_is_empty_before_the_first_update_and_checked_on_load():
    stage = ErrorFeedbackStage(RandomKStage(RandomK(0.5, 0, rescale=False)))
    assert stage.state_dict(0) == {}
    with pytest.raises(ValueError, match="has no 'residual'"):
        stage.load_state_dict(0, {})
    with pytest.raises(ValueError, match="flat list of finite numbers"):
        stage.load_state_dict(0, {"residual": [[1.0]]})


def test_shared_random_k_through_masking_matches_the_restricted_sum():
    rng = np.random.default_rng(4)
    vectors = {c: rng.uniform(-1, 1, size=3000) for c in range(4)}
    weights = dict.fromkeys(range(4), 1.0)
    codec = RandomK(0.1, seed=5, rescale=False)
    parts = CompressionParts((RandomKStage(codec),))
    res = run_round(parts, 1, vectors, weights, aggregator=make_aggregator("masking"))
    idx = codec.indices(3000, 1)
    expected = np.zeros(3000)
    expected[idx] = _mean(vectors, weights)[idx]
    np.testing.assert_allclose(res.mean, expected, atol=1e-6)  # masking's fixed-point error
    full = make_aggregator("masking").aggregate(1, vectors, weights)
    assert sum(res.bytes_up.values()) < 0.2 * sum(full.bytes_up.values())


def test_random_k_with_error_feedback_through_masking_gives_the_same_mean_as_before():
    """The residual moved from the server-side wrapper to the clients; the released means
    are those of compensate -> restrict -> masked mean -> scatter, remember the rest."""
    codec = RandomK(0.1, seed=5, rescale=False)
    parts = build_compression(
        CompressionConfig(method="randomk", density=0.1, rescale=False, error_feedback=True),
        seed=5)
    masking = make_aggregator("masking")
    rng = np.random.default_rng(6)
    memory = {c: np.zeros(3000) for c in range(4)}
    weights = {c: float(c + 1) for c in range(4)}
    for r in (1, 2, 3):
        vectors = {c: rng.uniform(-1, 1, size=3000).astype(np.float32) for c in range(4)}
        res = run_round(parts, r, vectors, weights, aggregator=masking)
        idx = codec.indices(3000, r)
        full = {c: vectors[c] + memory[c] for c in vectors}
        expected = np.zeros(3000)
        expected[idx] = _mean(full, weights)[idx]
        for c in vectors:
            memory[c] = full[c].copy()
            memory[c][idx] = 0.0
        np.testing.assert_allclose(res.mean, expected, rtol=0, atol=1e-6)
        for c in vectors:  # up to the float32 rounding of the values sent
            np.testing.assert_allclose(residual(parts, c), memory[c], rtol=0, atol=1e-6)
