"""CompressionConfig validation and the composition rules with secure aggregation and DP."""

from __future__ import annotations

import pytest

from privfed.compression import (
    CodecPayload,
    ErrorFeedbackStage,
    RandomK,
    RandomKStage,
    StochasticQuantizer,
    TopK,
    build_compression,
)
from privfed.config.compression import CompressionConfig, check_compatible


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"method": "gzip"}, r"compression\.method: unknown value 'gzip'; allowed: \['none'"),
        ({"bits": 3}, r"compression\.bits: unknown value 3; allowed: \[1, 2, 4, 8\]"),
        ({"bits": 16}, r"compression\.bits"),
        ({"block_size": 0}, r"compression\.block_size must be in \[1, inf\), got 0"),
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


def test_build_compression_builds_the_right_parts():
    quant = build_compression(CompressionConfig(method="quantize", bits=4), seed=1)
    assert quant.stages == () and isinstance(quant.payload_codec, CodecPayload)
    assert isinstance(quant.payload_codec.codec, StochasticQuantizer)
    assert quant.payload_codec.codec.bits == 4 and quant.payload_codec.seed == 1
    top = build_compression(CompressionConfig(method="topk", error_feedback=True), seed=1)
    (feedback,) = top.stages
    assert isinstance(feedback, ErrorFeedbackStage) and isinstance(top.payload_codec.codec, TopK)
    assert feedback.compressor is top.payload_codec  # the same randomness as the wire
    rand = build_compression(CompressionConfig(method="randomk"), seed=1)
    (stage,) = rand.stages
    assert isinstance(stage, RandomKStage) and rand.payload_codec is None
    assert isinstance(stage.codec, RandomK) and stage.codec.seed == 1 and stage.codec.rescale
    rand_ef = build_compression(
        CompressionConfig(method="randomk", rescale=False, error_feedback=True), seed=1)
    feedback, stage = rand_ef.stages  # error feedback before the compressor it compensates
    assert isinstance(stage, RandomKStage) and feedback.compressor is stage
    none = build_compression(CompressionConfig(), seed=1)
    assert none.stages == () and none.payload_codec is None
