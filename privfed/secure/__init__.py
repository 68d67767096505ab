"""Secure aggregation for federated learning, usable on its own.

The server learns only the weighted mean of the clients' flat vectors. Three aggregators
share one interface (:meth:`SecureAggregator.aggregate`), and each is built from party objects
that exchange only ``bytes`` so they can run over a real network:

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

Each protocol has one driver that runs its server party over any :class:`Transport`
(:func:`run_plain`, :func:`run_he` with :func:`set_up_he`, :func:`run_masking`); the clients
answer each stage through their endpoints (:class:`OneShotEndpoint`,
:class:`MaskingEndpoint`, :class:`KeyHolderEndpoint`, :class:`HEKeygenEndpoint`,
:class:`HEPublicEndpoint`). The aggregators run the same drivers over a
:class:`LocalTransport`.

This package imports nothing from the rest of privfed.
"""

from .base import AggregationResult, DecodedAggregate, RoundMeter, SecureAggregator
from .errors import (
    AuthenticationError,
    ConsistencyError,
    InvalidInputError,
    MessageRejectedError,
    SecureAggregationError,
    ThresholdError,
)
from .factory import AGGREGATORS, make_aggregator
from .he import (
    HEAggregator,
    HEClientParty,
    HEKeygenEndpoint,
    HEKeyHolder,
    HEParams,
    HEPublicContext,
    HEPublicEndpoint,
    HEServerParty,
    KeyHolderEndpoint,
    run_he,
    set_up_he,
)
from .he.endpoints import DECRYPT_STAGE, KEYGEN_STAGE, PUBLIC_STAGE
from .identity import ClientIdentity, IdentityRegistry, pack_registry, unpack_registry
from .masking import (
    MaskingAggregator,
    MaskingClientParty,
    MaskingEndpoint,
    MaskingParams,
    MaskingServerParty,
    run_masking,
)
from .masking.endpoint import STAGES as MASKING_STAGES
from .oneshot import UPLOAD_STAGE, OneShotEndpoint
from .payloads import RoundRequest, pack_decoded, unpack_decoded
from .plain import (
    PayloadCodec,
    PlainAggregator,
    PlainClientParty,
    PlainServerParty,
    decode_plain,
    run_plain,
)
from .transport import ClientEndpoint, LocalTransport, StageRouter, Transport

CLIENT_STAGES = (UPLOAD_STAGE, *MASKING_STAGES, KEYGEN_STAGE, PUBLIC_STAGE, DECRYPT_STAGE)
"""Every stage a client endpoint answers, for a transport that routes by stage."""
INPUT_STAGES = (UPLOAD_STAGE, MASKING_STAGES[0])
"""The stages at which a client hands its update to its protocol's party."""

__all__ = [
    "AGGREGATORS",
    "CLIENT_STAGES",
    "INPUT_STAGES",
    "AggregationResult",
    "AuthenticationError",
    "ClientEndpoint",
    "ClientIdentity",
    "ConsistencyError",
    "DecodedAggregate",
    "HEAggregator",
    "HEClientParty",
    "HEKeyHolder",
    "HEKeygenEndpoint",
    "HEParams",
    "HEPublicContext",
    "HEPublicEndpoint",
    "HEServerParty",
    "IdentityRegistry",
    "InvalidInputError",
    "KeyHolderEndpoint",
    "LocalTransport",
    "MaskingAggregator",
    "MaskingClientParty",
    "MaskingEndpoint",
    "MaskingParams",
    "MaskingServerParty",
    "MessageRejectedError",
    "OneShotEndpoint",
    "PayloadCodec",
    "PlainAggregator",
    "PlainClientParty",
    "PlainServerParty",
    "RoundMeter",
    "RoundRequest",
    "SecureAggregationError",
    "SecureAggregator",
    "StageRouter",
    "ThresholdError",
    "Transport",
    "decode_plain",
    "make_aggregator",
    "pack_decoded",
    "pack_registry",
    "run_he",
    "run_masking",
    "run_plain",
    "set_up_he",
    "unpack_decoded",
    "unpack_registry",
]
