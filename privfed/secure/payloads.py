"""Messages the drivers add around the parties' own: the round request and the decoded mean.

* :class:`RoundRequest` opens a round for one client: the server's message of the first stage
  (``"upload"`` of the one-shot protocols, ``"advertise"`` of masking), carrying what the
  client party needs from the server (round id, its public weight, the announced total
  weight, the vector length) as bytes, so that a remote client receives everything as bytes.
* :func:`pack_decoded` / :func:`unpack_decoded`: a key holder's answer, the decoded weighted
  mean, on its way back to the server.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

from .base import DecodedAggregate
from .errors import MessageRejectedError
from .validation import check_round_id
from .wire import SERVER_ID, pack, pack_fields, pack_ids, unpack, unpack_fields, unpack_ids

_REQUEST = struct.Struct("<ddQ")  # weight | announced total weight | vector length
_F64 = struct.Struct("<d")


@dataclass(frozen=True)
class RoundRequest:
    """The server's request that opens a round for one client.

    Attributes
    ----------
    round_id : int
        The round.
    weight : float
        The client's public weight (> 0).
    total_weight : float
        The announced total weight of the invited clients (> 0). The one-shot clients scale
        by ``weight / total_weight`` and sign both; masking clients take the total of the
        signed adverts instead.
    dim : int
        Length of the vector the server expects (>= 1).
    """

    round_id: int
    weight: float
    total_weight: float
    dim: int

    def to_bytes(self, kind: str) -> bytes:
        """The request as a server message of protocol ``kind`` (stage ``"request"``)."""
        payload = _REQUEST.pack(self.weight, self.total_weight, self.dim)
        return pack(kind, "request", check_round_id(self.round_id), SERVER_ID, payload)

    @classmethod
    def from_bytes(cls, message: bytes, kind: str) -> RoundRequest:
        """Parse a request of protocol ``kind`` (its round is the header's).

        Raises
        ------
        MessageRejectedError
            Malformed, another kind or stage, a weight or total that is not finite and > 0,
            or a length of 0.
        """
        env = unpack(message)
        if env.kind != kind or env.stage != "request" or env.sender != SERVER_ID:
            raise MessageRejectedError(
                f"expected a {kind!r} round request from the server, got a {env.kind!r} "
                f"{env.stage!r} message"
            )
        if len(env.payload) != _REQUEST.size:
            raise MessageRejectedError(
                f"round request of {len(env.payload)} bytes, expected {_REQUEST.size}"
            )
        weight, total, dim = _REQUEST.unpack(env.payload)
        if not (math.isfinite(weight) and math.isfinite(total) and weight > 0 and total > 0):
            raise MessageRejectedError(
                f"round request with weight {weight!r} and total {total!r}; need finite > 0"
            )
        if dim < 1:
            raise MessageRejectedError("round request for an empty vector")
        return cls(env.round_id, weight, total, dim)


def pack_decoded(decoded: DecodedAggregate) -> bytes:
    """Serialize a decoded aggregate: included ids, total weight, mean as float64."""
    mean = np.ascontiguousarray(decoded.mean, dtype="<f8")
    return pack_fields(
        [pack_ids(decoded.included), _F64.pack(decoded.total_weight), mean.tobytes()]
    )


def unpack_decoded(data: bytes) -> DecodedAggregate:
    """Inverse of :func:`pack_decoded`.

    Raises
    ------
    MessageRejectedError
        Malformed, no or repeated client ids, a total weight that is not finite and > 0,
        an empty mean or one with NaN/Inf.
    """
    ids, total, mean = unpack_fields(data, 3)
    included = unpack_ids(ids)
    if not included or len(set(included)) != len(included):
        raise MessageRejectedError("decoded aggregate with no or repeated client ids")
    if len(total) != _F64.size or len(mean) % 8 or not mean:
        raise MessageRejectedError("malformed decoded aggregate")
    (total_weight,) = _F64.unpack(total)
    if not (math.isfinite(total_weight) and total_weight > 0):
        raise MessageRejectedError(f"decoded aggregate with total weight {total_weight!r}")
    values = np.frombuffer(mean, dtype="<f8").astype(np.float64)
    if not np.isfinite(values).all():
        raise MessageRejectedError("decoded mean has NaN/Inf")
    return DecodedAggregate(values, total_weight, included)
