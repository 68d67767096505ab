"""build_compression: the stages and payload codec a [compression] section describes (its
field checks and composition rules are tested with the config, tests/test_config_*.py)."""

from __future__ import annotations

from privfed.compression import (
    CodecPayload,
    ErrorFeedbackStage,
    RandomK,
    RandomKStage,
    StochasticQuantizer,
    TopK,
    build_compression,
)
from privfed.config.compression import CompressionConfig


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
