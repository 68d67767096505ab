"""Masked secure aggregation (Bonawitz et al. 2017, with the malicious-server consistency round)
with optional SecAgg+ neighbourhoods (Bell et al. 2020) derived from a threat model."""

from .aggregator import MaskingAggregator
from .client import MaskingClientParty
from .driver import run_masking
from .endpoint import MaskingEndpoint
from .params import (
    FULL_GRAPH_MAX_COHORT,
    SERVER_MODELS,
    MaskingParams,
    default_neighbourhood,
    default_threshold,
    neighbours,
)
from .quantize import Ring
from .security import RoundParameters, ThreatModel, min_threshold, round_parameters
from .server import MaskingServerParty, decode_masking

__all__ = [
    "FULL_GRAPH_MAX_COHORT",
    "MaskingAggregator",
    "MaskingClientParty",
    "MaskingEndpoint",
    "MaskingParams",
    "MaskingServerParty",
    "SERVER_MODELS",
    "Ring",
    "RoundParameters",
    "ThreatModel",
    "decode_masking",
    "default_neighbourhood",
    "default_threshold",
    "min_threshold",
    "neighbours",
    "round_parameters",
    "run_masking",
]
