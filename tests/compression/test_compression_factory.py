"""compress_aggregator wraps the configured secure aggregator in the configured codec."""

from __future__ import annotations

from privfed.compression import (
    CompressedAggregator,
    CompressionConfig,
    RandomK,
    SharedIndexAggregator,
    StochasticQuantizer,
    compress_aggregator,
)
from privfed.secure import make_aggregator


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
