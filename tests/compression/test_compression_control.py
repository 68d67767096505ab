"""Control coordinates (e.g. adaptive clipping's clip bit) travel exactly through every codec."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from privfed.compression import (
    CodecPayload,
    CompressionParts,
    ErrorFeedbackStage,
    MalformedPayloadError,
    RandomK,
    RandomKStage,
    StochasticQuantizer,
    TopK,
    build_compression,
)
from privfed.compression.sparsify import kept_count
from privfed.config import load_config
from privfed.config.compression import CompressionConfig
from privfed.federated.stages import ServerAggregate
from privfed.secure import make_aggregator
from tests.compression.rounds import residual, run_round

MODEL_DIM = 600
CONTROL = 2
ROUNDS = (1, 2, 3)

CONFIGS = [
    *[(f"quantize-{b}-{block}", {"method": "quantize", "bits": b, "block_size": block}, ef)
      for b in (1, 2, 4, 8) for block in (None, 64) for ef in (False, True)],
    *[("topk", {"method": "topk", "density": 0.1}, ef) for ef in (False, True)],
    ("randomk-rescaled", {"method": "randomk", "density": 0.1}, False),
    *[("randomk", {"method": "randomk", "density": 0.1, "rescale": False}, ef)
      for ef in (False, True)],
]


def _round(round_id: int, n: int = 4, model_dim: int = MODEL_DIM):
    """Model parts of std 1 (larger than the control values, so a codec would distort them)
    and control values like a clip bit plus a noise share."""
    rng = np.random.default_rng(round_id)
    vectors = {}
    for c in range(n):
        model = rng.normal(size=model_dim)
        control = rng.choice([-0.5, 0.5], size=CONTROL) + 0.01 * rng.normal(size=CONTROL)
        vectors[c] = np.concatenate([model, control])
    weights = {c: float(c + 1) for c in range(n)}
    return vectors, weights


def _mean(vectors, weights, dtype=np.float64):
    total = sum(weights.values())
    return sum(weights[c] * vectors[c].astype(dtype).astype(np.float64) for c in vectors) / total


@pytest.mark.parametrize(("name", "fields", "feedback"), CONFIGS,
                         ids=[f"{n}-ef" if ef else n for n, _, ef in CONFIGS])
def test_every_codec_sends_control_values_exactly_and_the_rest_through_the_codec(
        name, fields, feedback):
    config = CompressionConfig(**fields, error_feedback=feedback)
    ours = build_compression(config, seed=3, control_length=CONTROL)
    model_only = build_compression(config, seed=3)
    for r in ROUNDS:
        vectors, weights = _round(r)
        res = run_round(ours, r, vectors, weights)
        ref = run_round(model_only, r, {c: v[:MODEL_DIM] for c, v in vectors.items()}, weights)
        # The control values are the weighted mean of the float32 values sent...
        float32_mean = _mean(vectors, weights, np.float32)[MODEL_DIM:]
        np.testing.assert_allclose(res.mean[MODEL_DIM:], float32_mean, rtol=0, atol=1e-12)
        np.testing.assert_allclose(res.mean[MODEL_DIM:], _mean(vectors, weights)[MODEL_DIM:],
                                   rtol=1e-6)
        # ... the model part is exactly what the codec makes of the model part alone (same
        # index sets, gains, rounding coins and residuals), and the bytes add 4 per value.
        np.testing.assert_array_equal(res.mean[:MODEL_DIM], ref.mean)
        assert res.bytes_up == {c: b + 4 * CONTROL for c, b in ref.bytes_up.items()}
    if feedback:
        for c in vectors:  # the residual covers the model part only
            np.testing.assert_array_equal(residual(ours, c), residual(model_only, c))


def _restricted_mean(vectors, weights, codec, round_id):
    """Expected mean: the model part on the round's index set of the model dimension, times
    the model part's gain; the control values unscaled (of the float32 values sent)."""
    mean = _mean(vectors, weights, np.float32)
    expected = np.zeros_like(mean)
    index = codec.indices(MODEL_DIM, round_id)
    expected[index] = mean[index] * codec.gain(MODEL_DIM)
    expected[MODEL_DIM:] = mean[MODEL_DIM:]
    return expected


@pytest.mark.parametrize(("kind", "atol"), [("masking", 1e-6), ("he", 1e-5)])
@pytest.mark.parametrize("rescale", [True, False])
def test_random_k_stage_always_sends_the_control_values_unscaled(kind, atol, rescale):
    codec = RandomK(0.05, seed=2, rescale=rescale)
    parts = CompressionParts((RandomKStage(codec, control_length=CONTROL),))
    inner = make_aggregator(kind)
    k = kept_count(0.05, MODEL_DIM)
    for r in (1, 2) if kind == "he" else ROUNDS:
        vectors, weights = _round(r, n=3)
        res = run_round(parts, r, vectors, weights, aggregator=inner)
        # masking's fixed point / CKKS precision is the only error
        np.testing.assert_allclose(res.mean, _restricted_mean(vectors, weights, codec, r),
                                   rtol=0, atol=atol)
        np.testing.assert_allclose(res.mean[MODEL_DIM:], _mean(vectors, weights)[MODEL_DIM:],
                                   rtol=0, atol=atol)
        assert res.lengths == {k + CONTROL}  # k of the model coordinates, plus the controls
    assert parts.stages[0].output_length(MODEL_DIM + CONTROL) == k + CONTROL


def test_random_k_error_feedback_keeps_the_control_values_out_of_the_residual():
    config = CompressionConfig(method="randomk", density=0.1, rescale=False,
                               error_feedback=True)
    ours = build_compression(config, seed=4, control_length=CONTROL)
    reference = build_compression(config, seed=4)
    masking = make_aggregator("masking")
    for r in ROUNDS:
        vectors, weights = _round(r, n=3)
        res = run_round(ours, r, vectors, weights, aggregator=masking)
        ref = run_round(reference, r, {c: v[:MODEL_DIM] for c, v in vectors.items()}, weights,
                        aggregator=masking)
        np.testing.assert_allclose(res.mean[MODEL_DIM:], _mean(vectors, weights)[MODEL_DIM:],
                                   rtol=0, atol=1e-6)
        np.testing.assert_allclose(res.mean[:MODEL_DIM], ref.mean, rtol=0, atol=1e-6)
    for c in range(3):
        assert residual(ours, c).shape == (MODEL_DIM,)
        np.testing.assert_array_equal(residual(ours, c), residual(reference, c))


@pytest.mark.parametrize(
    ("fields", "secure"),
    [
        ({"method": "quantize", "bits": 2, "error_feedback": True}, "none"),
        ({"method": "topk"}, "none"),
        ({"method": "randomk", "rescale": False, "error_feedback": True}, "masking"),
    ],
)
def test_build_compression_passes_the_control_length_on(fields, secure):
    vectors, weights = _round(5, n=3)
    parts = build_compression(CompressionConfig(**fields), seed=1, control_length=CONTROL)
    carriers = [*parts.stages, *([parts.payload_codec] if parts.payload_codec else [])]
    assert carriers and all(p.control_length == CONTROL for p in carriers)
    res = run_round(parts, 5, vectors, weights, aggregator=make_aggregator(secure))
    np.testing.assert_allclose(res.mean[MODEL_DIM:], _mean(vectors, weights)[MODEL_DIM:],
                               rtol=0, atol=1e-6)


@pytest.mark.parametrize("bad", [-1, 1.0, True, "1", None])
def test_control_length_must_be_a_non_negative_int(bad):
    match = r"control_length must be an int >= 0"
    for method in ("none", "quantize"):
        with pytest.raises(ValueError, match=match):
            build_compression(CompressionConfig(method=method), seed=0, control_length=bad)
    makers = [
        lambda: CodecPayload(TopK(0.5), seed=0, control_length=bad),
        lambda: RandomKStage(RandomK(0.5, 0), control_length=bad),
        lambda: ErrorFeedbackStage(CodecPayload(TopK(0.5), seed=0), control_length=bad),
    ]
    for make in makers:
        with pytest.raises(ValueError, match=match):
            make()


@pytest.mark.parametrize("control_length", [3, 4])
def test_control_length_must_leave_a_model_coordinate(control_length):
    match = rf"control_length={control_length} must be less than the vector length 3"
    payload = CodecPayload(StochasticQuantizer(4), seed=0, control_length=control_length)
    stage = RandomKStage(RandomK(0.5, 0), control_length=control_length)
    feedback = ErrorFeedbackStage(stage, control_length=control_length)
    calls = [
        lambda: payload.encode(np.ones(3), 1, 0),
        lambda: payload.decode(b"\0" * 64, 3, 1),
        lambda: stage.output_length(3),
        lambda: stage.client(1, 0, torch.ones(3)),
        lambda: feedback.client(1, 0, torch.ones(3)),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=match):
            call()


def test_server_rejects_an_upload_too_short_for_its_control_values():
    codec = CodecPayload(RandomK(0.5, 0), seed=0, control_length=CONTROL)
    good = codec.encode(np.arange(10.0), 1, 0)
    short = b"\0" * 4  # fewer bytes than two float32
    truncated = good[-4 * (kept_count(0.5, 8) + 1):]
    for payload in (short, truncated):
        with pytest.raises(MalformedPayloadError):
            codec.decode(payload, 10, 1)
    assert issubclass(MalformedPayloadError, ValueError)
    np.testing.assert_array_equal(codec.decode(good, 10, 1)[8:], [8.0, 9.0])


def test_server_rejects_a_payload_that_decodes_to_nan():
    codec = CodecPayload(TopK(1.0), seed=0, control_length=1)
    data = codec.encode(np.ones(4), 1, 0)[:-4] + np.float32(np.nan).tobytes()
    with pytest.raises(MalformedPayloadError, match="NaN/Inf"):
        codec.decode(data, 4, 1)


def test_random_k_server_half_needs_the_input_length():
    stage = RandomKStage(RandomK(0.5, 0))
    aggregate = ServerAggregate(torch.zeros(2), 1.0, (0,))
    with pytest.raises(RuntimeError, match="output_length must be called"):
        stage.server(1, aggregate)
    stage.output_length(10)
    with pytest.raises(ValueError, match="2 coordinates released, expected 5"):
        stage.server(1, aggregate)


def _clip_norms(*overrides: str) -> list[float]:
    """Clip norm S after each round of a small central-DP federation with adaptive clipping
    and no noise."""
    from privfed.experiment import build_simulation

    config = load_config(overrides=[
        "model.hidden=[16]", "data.num_clients=4", "federation.rounds=6",
        "privacy.mechanism=central", "privacy.noise_multiplier=0", "privacy.adaptive_clipping=true",
        *overrides,
    ])
    return [r.extra["clip_norm"] for r in build_simulation(config).run().rounds]


RANDOM_K = ["compression.method=randomk", "compression.rescale=false", "compression.density=0.1"]


@pytest.mark.parametrize("clip_norm", [1e-3, 1e3])
def test_adaptive_clip_norm_is_the_same_with_random_k(clip_norm):
    """S far below (above) every update's norm: every clip bit is -1/2 (+1/2) whatever the
    model, so S must move by exp(+-clip_lr / 2) per round with or without compression. Before
    control coordinates, random-k dropped the bit in most rounds (S stood still) and the
    shared index aggregator did not keep it either."""
    base = [f"privacy.clip_norm={clip_norm}"]
    plain = _clip_norms(*base)
    factor = np.exp(0.1 if clip_norm < 1 else -0.1)  # clip_lr 0.2, target quantile 0.5
    np.testing.assert_allclose(plain, clip_norm * factor ** np.arange(1, 7), rtol=1e-12)
    assert _clip_norms(*base, *RANDOM_K) == plain
    # Masking's fixed point (step 10 / 2**31 for clip 10) moves the mean bit by at most 4
    # steps a round, so S by a relative 0.2 * 4 * 4.7e-9 a round at most.
    masked = ["secure.kind=masking", "secure.clip=10"]
    np.testing.assert_allclose(_clip_norms(*base, *masked, *RANDOM_K), plain, rtol=3e-8)
    np.testing.assert_allclose(_clip_norms(*base, *masked), plain, rtol=3e-8)
