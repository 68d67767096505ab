"""Masked secure aggregation (Bonawitz et al. 2017) with optional SecAgg+ neighbourhoods."""

from .aggregator import MaskingAggregator
from .client import MaskingClient
from .params import MaskingParams, default_threshold, neighbours
from .quantize import Ring
from .server import MaskingServer, decode_masking

__all__ = [
    "MaskingAggregator",
    "MaskingClient",
    "MaskingParams",
    "MaskingServer",
    "Ring",
    "decode_masking",
    "default_threshold",
    "neighbours",
]
