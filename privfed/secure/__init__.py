"""Secure aggregation for federated learning, usable on its own.

The server learns only the weighted mean of the clients' flat vectors. Three aggregators
share one interface (:meth:`Aggregator.aggregate`), and each is built from party objects that
exchange only ``bytes`` so they can run over a real network:

* ``"none"``: :class:`PlainAggregator` (no protection; baseline),
* ``"he"``: :class:`HEAggregator` (TenSEAL CKKS; server adds ciphertexts, the key holder
  decrypts only the verified sum of the round's signed uploads),
* ``"masking"``: :class:`MaskingAggregator` (Bonawitz et al. 2017 with dropout recovery and
  the malicious-server consistency round, optional SecAgg+ neighbourhoods derived from a
  threat model).

Both protecting aggregators hold against a server that lies (``server_model="malicious"``,
the default); a party detects the lie with a :class:`ConsistencyError`,
:class:`ThresholdError` or :class:`AuthenticationError` before it reveals anything. The
clients' verification keys are relayed by the server unless pinned
(:meth:`IdentityRegistry.from_file`). docs/secure.md has the threat model per aggregator.

This package imports nothing from the rest of privfed.
"""

from .base import AggregationResult, Aggregator, DecodedAggregate
from .errors import (
    AuthenticationError,
    ConsistencyError,
    InvalidInputError,
    MessageRejectedError,
    SecureAggregationError,
    ThresholdError,
)
from .factory import AGGREGATORS, make_aggregator
from .he import HEAggregator, HEClient, HEKeyHolder, HEParams, HEPublicContext, HEServer
from .identity import ClientIdentity, IdentityRegistry
from .masking import MaskingAggregator, MaskingClient, MaskingParams, MaskingServer
from .plain import PlainAggregator, PlainClient, PlainServer, decode_plain

__all__ = [
    "AGGREGATORS",
    "AggregationResult",
    "Aggregator",
    "AuthenticationError",
    "ClientIdentity",
    "ConsistencyError",
    "DecodedAggregate",
    "HEAggregator",
    "HEClient",
    "HEKeyHolder",
    "HEParams",
    "HEPublicContext",
    "HEServer",
    "IdentityRegistry",
    "InvalidInputError",
    "MaskingAggregator",
    "MaskingClient",
    "MaskingParams",
    "MaskingServer",
    "MessageRejectedError",
    "PlainAggregator",
    "PlainClient",
    "PlainServer",
    "SecureAggregationError",
    "ThresholdError",
    "decode_plain",
    "make_aggregator",
]
