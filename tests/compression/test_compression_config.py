"""CompressionConfig validation and the composition rules with secure aggregation and DP."""

from __future__ import annotations

import pytest

from privfed.compression import (
    CompressedAggregator,
    CompressionConfig,
    RandomK,
    SharedIndexAggregator,
    StochasticQuantizer,
    check_compatible,
    compress_aggregator,
)
from privfed.secure import make_aggregator


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"method": "gzip"}, r"compression\.method: unknown value 'gzip'; allowed: \['none'"),
        ({"bits": 3}, r"compression\.bits must be one of \[1, 2, 4, 8\], got 3"),
        ({"bits": 16}, r"compression\.bits"),
        ({"block_size": 0}, r"compression\.block_size must be >= 1"),
        ({"density": 0.0}, r"compression\.density must be in \(0, 1\]"),
        ({"error_feedback": True}, r"compression\.error_feedback needs a lossy"),
        ({"method": "randomk", "error_feedback": True}, r"compression\.rescale = false"),
    ],
)
def test_invalid_fields_name_the_field_and_allowed_values(fields, message):
    with pytest.raises(ValueError, match=message):
        CompressionConfig(**fields)


@pytest.mark.parametrize(
    ("method", "secure", "privacy", "message"),
    [
        ("topk", "masking", "none", r"'topk' cannot be combined with secure\.kind 'masking'.*"
                                    r"supported with masking: compression\.method 'randomk'"),
        ("quantize", "masking", "none", r"lower secure\.ring_bits"),
        ("quantize", "he", "none", r"secure\.kind 'he'"),
        ("quantize", "none", "central", r"longer than privacy\.clip_norm"),
        ("randomk", "none", "central", r"rescale = false"),
        ("topk", "none", "distributed", r"privacy\.mechanism 'distributed'"),
    ],
)
def test_incompatible_combinations_are_rejected(method, secure, privacy, message):
    with pytest.raises(ValueError, match=message):
        check_compatible(CompressionConfig(method=method), secure, privacy)


@pytest.mark.parametrize(
    ("fields", "secure", "privacy"),
    [
        ({"method": "quantize", "bits": 1, "error_feedback": True}, "none", "local"),
        ({"method": "topk", "error_feedback": True}, "none", "none"),
        ({"method": "topk"}, "none", "central"),
        ({"method": "randomk", "rescale": False}, "masking", "central"),
        ({"method": "randomk"}, "masking", "distributed"),
        ({"method": "none"}, "he", "central"),
    ],
)
def test_supported_combinations_pass(fields, secure, privacy):
    check_compatible(CompressionConfig(**fields), secure, privacy)


def test_compress_aggregator_builds_the_right_wrapper():
    plain = make_aggregator("none", clip=5.0)
    quant = compress_aggregator(CompressionConfig(method="quantize", bits=4), plain,
                                secure_kind="none", seed=1)
    assert isinstance(quant, CompressedAggregator) and quant.clip == 5.0
    assert isinstance(quant.codec, StochasticQuantizer) and quant.codec.bits == 4
    masking = make_aggregator("masking")
    shared = compress_aggregator(CompressionConfig(method="randomk"), masking,
                                 secure_kind="masking", seed=1)
    assert isinstance(shared, SharedIndexAggregator) and shared.inner is masking
    assert isinstance(shared.codec, RandomK)
    assert compress_aggregator(CompressionConfig(), plain, secure_kind="none", seed=1) is plain
