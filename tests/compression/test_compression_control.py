"""Control coordinates (e.g. adaptive clipping's clip bit) travel exactly through every codec."""

from __future__ import annotations

import numpy as np
import pytest

from privfed.compression import (
    CompressedAggregator,
    CompressingClient,
    CompressionConfig,
    RandomK,
    SharedIndexAggregator,
    StochasticQuantizer,
    TopK,
    compress_aggregator,
)
from privfed.compression.aggregator import CompressedServer
from privfed.compression.sparsify import kept_count
from privfed.config import load_config
from privfed.experiment import build_simulation
from privfed.secure import make_aggregator
from privfed.secure.errors import MessageRejectedError
from privfed.secure.identity import ClientIdentity
from privfed.secure.wire import pack

MODEL_DIM = 600
CONTROL = 2
ROUNDS = (1, 2, 3)

CODECS = [
    *[(f"quantize-{b}-{block}", lambda b=b, block=block: StochasticQuantizer(b, block), ef)
      for b in (1, 2, 4, 8) for block in (None, 64) for ef in (False, True)],
    *[("topk", lambda: TopK(0.1), ef) for ef in (False, True)],
    ("randomk-rescaled", lambda: RandomK(0.1, seed=7), False),
    *[("randomk", lambda: RandomK(0.1, seed=7, rescale=False), ef) for ef in (False, True)],
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


@pytest.mark.parametrize(("name", "make_codec", "feedback"), CODECS,
                         ids=[f"{n}-ef" if ef else n for n, _, ef in CODECS])
def test_compressed_aggregator_sends_control_values_exactly_and_the_rest_through_the_codec(
        name, make_codec, feedback):
    ours = CompressedAggregator(make_codec(), error_feedback=feedback, seed=3,
                                control_length=CONTROL)
    model_only = CompressedAggregator(make_codec(), error_feedback=feedback, seed=3)
    for r in ROUNDS:
        vectors, weights = _round(r)
        res = ours.aggregate(r, vectors, weights)
        ref = model_only.aggregate(r, {c: v[:MODEL_DIM] for c, v in vectors.items()}, weights)
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
            np.testing.assert_array_equal(ours.feedback.residual(c),
                                          model_only.feedback.residual(c))


def _restricted_mean(vectors, weights, codec, round_id):
    """Expected mean: the model part on the round's index set of the model dimension, times
    the model part's gain; the control values unscaled."""
    mean = _mean(vectors, weights)
    expected = np.zeros_like(mean)
    index = codec.indices(MODEL_DIM, round_id)
    expected[index] = mean[index] * codec.gain(MODEL_DIM)
    expected[MODEL_DIM:] = mean[MODEL_DIM:]
    return expected


class _Recorder:
    """An aggregator that records the vectors it is given and delegates to ``inner``."""

    def __init__(self, inner):
        self.inner = inner
        self.lengths = []

    def aggregate(self, round_id, vectors, weights, **kwargs):
        self.lengths.append({v.size for v in vectors.values()})
        return self.inner.aggregate(round_id, vectors, weights, **kwargs)


@pytest.mark.parametrize(("kind", "atol"), [("masking", 1e-6), ("he", 1e-5)])
@pytest.mark.parametrize("rescale", [True, False])
def test_shared_index_aggregator_always_sends_the_control_values_unscaled(kind, atol, rescale):
    codec = RandomK(0.05, seed=2, rescale=rescale)
    inner = _Recorder(make_aggregator(kind))
    shared = SharedIndexAggregator(inner, codec, control_length=CONTROL)
    k = kept_count(0.05, MODEL_DIM)
    for r in (1, 2) if kind == "he" else ROUNDS:
        vectors, weights = _round(r, n=3)
        res = shared.aggregate(r, vectors, weights)
        # masking's fixed point / CKKS precision is the only error
        np.testing.assert_allclose(res.mean, _restricted_mean(vectors, weights, codec, r),
                                   rtol=0, atol=atol)
        np.testing.assert_allclose(res.mean[MODEL_DIM:], _mean(vectors, weights)[MODEL_DIM:],
                                   rtol=0, atol=atol)
    assert inner.lengths[-1] == {k + CONTROL}  # k of the model coordinates, plus the controls


def test_shared_index_error_feedback_keeps_the_control_values_out_of_the_residual():
    codec = RandomK(0.1, seed=4, rescale=False)
    shared = SharedIndexAggregator(make_aggregator("masking"), codec, error_feedback=True,
                                   control_length=CONTROL)
    reference = SharedIndexAggregator(make_aggregator("masking"), codec, error_feedback=True)
    for r in ROUNDS:
        vectors, weights = _round(r, n=3)
        res = shared.aggregate(r, vectors, weights)
        ref = reference.aggregate(r, {c: v[:MODEL_DIM] for c, v in vectors.items()}, weights)
        np.testing.assert_allclose(res.mean[MODEL_DIM:], _mean(vectors, weights)[MODEL_DIM:],
                                   rtol=0, atol=1e-6)
        np.testing.assert_allclose(res.mean[:MODEL_DIM], ref.mean, rtol=0, atol=1e-6)
    for c in range(3):
        assert shared.feedback.residual(c).shape == (MODEL_DIM,)
        np.testing.assert_array_equal(shared.feedback.residual(c), reference.feedback.residual(c))


@pytest.mark.parametrize(
    ("fields", "secure", "expected"),
    [
        ({"method": "quantize", "bits": 2}, "none", CompressedAggregator),
        ({"method": "topk"}, "none", CompressedAggregator),
        ({"method": "randomk", "rescale": False}, "masking", SharedIndexAggregator),
    ],
)
def test_compress_aggregator_passes_the_control_length_on(fields, secure, expected):
    vectors, weights = _round(5, n=3)
    agg = compress_aggregator(CompressionConfig(**fields), make_aggregator(secure),
                              secure_kind=secure, seed=1, control_length=CONTROL)
    assert isinstance(agg, expected) and agg.control_length == CONTROL
    res = agg.aggregate(5, vectors, weights)
    np.testing.assert_allclose(res.mean[MODEL_DIM:], _mean(vectors, weights)[MODEL_DIM:],
                               rtol=0, atol=1e-6)


@pytest.mark.parametrize("bad", [-1, 1.0, True, "1", None])
def test_control_length_must_be_a_non_negative_int(bad):
    match = r"control_length must be an int >= 0"
    plain = make_aggregator("none")
    for method in ("none", "quantize"):
        with pytest.raises(ValueError, match=match):
            compress_aggregator(CompressionConfig(method=method), plain, secure_kind="none",
                                seed=0, control_length=bad)
    with pytest.raises(ValueError, match=match):
        CompressedAggregator(TopK(0.5), control_length=bad)
    with pytest.raises(ValueError, match=match):
        SharedIndexAggregator(make_aggregator("masking"), RandomK(0.5, 0), control_length=bad)
    with pytest.raises(ValueError, match=match):
        CompressingClient(ClientIdentity(0), TopK(0.5), feedback=None, seed=0,
                          control_length=bad)


@pytest.mark.parametrize("control_length", [3, 4])
def test_control_length_must_leave_a_model_coordinate(control_length):
    vectors = {0: np.ones(3), 1: np.zeros(3)}
    weights = {0: 1.0, 1: 1.0}
    match = rf"control_length={control_length} must be less than the vector length 3"
    aggregators = [
        CompressedAggregator(StochasticQuantizer(4), control_length=control_length),
        SharedIndexAggregator(make_aggregator("masking"), RandomK(0.5, 0),
                              control_length=control_length),
    ]
    for agg in aggregators:
        with pytest.raises(ValueError, match=match):
            agg.aggregate(1, vectors, weights)
    client = CompressingClient(ClientIdentity(0), TopK(0.5), feedback=None, seed=0,
                               control_length=control_length)
    with pytest.raises(ValueError, match=match):
        client.encode(1, vectors[0], 1.0, 2.0)


def test_server_rejects_an_upload_too_short_for_its_control_values():
    server = CompressedServer(1, {0: 1.0}, make_aggregator("none").registry, 10,
                              codec=RandomK(0.5, 0), control_length=CONTROL)
    client = CompressingClient(ClientIdentity(0), RandomK(0.5, 0), feedback=None, seed=0,
                               control_length=CONTROL)
    good = client.encode(1, np.arange(10.0), 1.0, 1.0)
    short = pack("compressed", "upload", 1, 0, b"\0" * 4)  # fewer bytes than two float32
    truncated = pack("compressed", "upload", 1, 0, good[-4 * (kept_count(0.5, 8) + 1):])
    for message in (short, truncated):
        with pytest.raises(MessageRejectedError):
            server.receive(message)
    assert server.receive(good) == 0


def _clip_norms(*overrides: str) -> list[float]:
    """Clip norm S after each round of a small central-DP federation with adaptive clipping
    and no noise."""
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
