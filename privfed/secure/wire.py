"""Byte-level message framing shared by all aggregators.

Every message starts with a fixed header ``magic | version | kind | stage | round | sender``.
Client messages of the protecting aggregators (HE, masking) are followed by an Ed25519
signature over header and payload, so the round id, stage and sender are authenticated: a
replay from another round, a message relabelled as another client's, or a tampered payload is
rejected. The unprotected plain baseline sends the header alone (replays, unknown and
duplicate senders are still rejected; integrity is left to the transport, e.g. TLS).
"""

from __future__ import annotations

import struct
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import MessageRejectedError
from .identity import SIGNATURE_SIZE, ClientIdentity, IdentityRegistry

MAGIC = b"PFSA"
VERSION = 1
SERVER_ID = 0xFFFFFFFF
MAX_CLIENT_ID = SERVER_ID - 1
_HEADER = struct.Struct("<4sBBBQI")
HEADER_SIZE = _HEADER.size

KINDS = {"none": 1, "he": 2, "masking": 3}
"""Protocol kinds (``"none"`` is the unprotected plain baseline)."""
STAGES = {
    "upload": 1,
    "aggregate": 2,
    "advertise": 3,
    "keys": 4,
    "share": 5,
    "forward": 6,
    "masked": 7,
    "unmask_request": 8,
    "unmask": 9,
    "survivors": 10,
    "consistency": 11,
    "request": 12,
    "decrypt": 13,
}
SERVER_MODELS = ("malicious", "honest-but-curious")
"""The server a protocol is run against: ``"malicious"`` (the parties check what the server
says against what the clients signed) or ``"honest-but-curious"`` (they trust its framing)."""
_KIND_NAMES = {v: k for k, v in KINDS.items()}
_STAGE_NAMES = {v: k for k, v in STAGES.items()}
_LEN = struct.Struct("<I")


@dataclass(frozen=True)
class Envelope:
    """A parsed message.

    Attributes
    ----------
    kind, stage : str
        Aggregator kind and protocol stage names.
    round_id : int
        Round the message belongs to.
    sender : int
        Client id, or ``SERVER_ID`` for server messages.
    payload : bytes
        Stage-specific body.
    """

    kind: str
    stage: str
    round_id: int
    sender: int
    payload: bytes


def pack(kind: str, stage: str, round_id: int, sender: int, payload: bytes) -> bytes:
    """Frame ``payload`` with a header (unsigned; used for server messages)."""
    return _HEADER.pack(MAGIC, VERSION, KINDS[kind], STAGES[stage], round_id, sender) + payload


def seal(identity: ClientIdentity, kind: str, stage: str, round_id: int, payload: bytes) -> bytes:
    """Frame ``payload`` as a message from ``identity`` and append its signature."""
    body = pack(kind, stage, round_id, identity.client_id, payload)
    return body + identity.sign(body)


def as_bytes(data: object) -> bytes:
    """``data`` as ``bytes`` if it is a bytes-like message (bytes, bytearray, memoryview).

    Raises
    ------
    MessageRejectedError
        Naming the type of anything else (a str, a number, None): a message is bytes.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MessageRejectedError(f"message must be bytes, got {type(data).__name__}")
    return bytes(data)


def unpack(data: bytes) -> Envelope:
    """Parse an unsigned message.

    Raises
    ------
    MessageRejectedError
        If the header is malformed.
    """
    data = as_bytes(data)
    if len(data) < HEADER_SIZE:
        raise MessageRejectedError(f"message too short: {len(data)} bytes < header {HEADER_SIZE}")
    magic, version, kind, stage, round_id, sender = _HEADER.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise MessageRejectedError(f"not a privfed.secure v{VERSION} message (magic={magic!r})")
    if kind not in _KIND_NAMES or stage not in _STAGE_NAMES:
        raise MessageRejectedError(f"unknown kind code {kind} or stage code {stage}")
    return Envelope(_KIND_NAMES[kind], _STAGE_NAMES[stage], round_id, sender, data[HEADER_SIZE:])


def sender_of(data: bytes) -> int:
    """The sender named in a message's header, read without parsing the rest.

    Unauthenticated: a driver uses it to check that a transport's client speaks for itself
    before the message reaches a party (which authenticates it).

    Raises
    ------
    MessageRejectedError
        If the message is not bytes or is shorter than a header.
    """
    data = as_bytes(data)
    if len(data) < HEADER_SIZE:
        raise MessageRejectedError(f"message too short: {len(data)} bytes < header {HEADER_SIZE}")
    return _HEADER.unpack_from(data)[5]


def expect(env: Envelope, *, kind: str, stage: str, round_id: int) -> None:
    """Check that ``env`` has the expected kind, stage and round.

    Raises
    ------
    MessageRejectedError
        Naming the mismatching field; a wrong round is reported as a replay.
    """
    if env.kind != kind:
        raise MessageRejectedError(f"message kind {env.kind!r}, expected {kind!r}")
    if env.round_id != round_id:
        raise MessageRejectedError(
            f"message from round {env.round_id} rejected in round {round_id} (replay?)"
        )
    if env.stage != stage:
        raise MessageRejectedError(f"message for stage {env.stage!r}, expected stage {stage!r}")


def open_signed(
    data: bytes,
    registry: IdentityRegistry,
    *,
    kind: str,
    stage: str,
    round_id: int,
    allowed: Collection[int],
) -> Envelope:
    """Parse and authenticate a signed client message.

    Parameters
    ----------
    data : bytes
        The message as received.
    registry : IdentityRegistry
        Verification keys of the registered clients.
    kind, stage : str
        Expected aggregator kind and stage.
    round_id : int
        Current round; a message signed for another round is rejected.
    allowed : Collection[int]
        Clients allowed to send this message now.

    Returns
    -------
    Envelope
        The authenticated message without its signature.

    Raises
    ------
    MessageRejectedError
        Malformed, wrong kind/stage/round, or sender not allowed.
    AuthenticationError
        Bad signature.
    """
    data = as_bytes(data)
    if len(data) < HEADER_SIZE + SIGNATURE_SIZE:
        raise MessageRejectedError(f"signed message too short: {len(data)} bytes")
    body, signature = data[:-SIGNATURE_SIZE], data[-SIGNATURE_SIZE:]
    env = open_unsigned(body, kind=kind, stage=stage, round_id=round_id, allowed=allowed)
    registry.verify(env.sender, signature, body)
    return env


def open_unsigned(
    data: bytes, *, kind: str, stage: str, round_id: int, allowed: Collection[int]
) -> Envelope:
    """Parse a client message framed by :func:`pack` and check its header.

    The header's kind, stage, round and sender are checked (so a replay from another round,
    an unknown sender or a message for another stage is rejected), but nothing proves who
    sent it or that the payload is intact: use :func:`open_signed` for that.

    Raises
    ------
    MessageRejectedError
        Malformed, wrong kind/stage/round, or sender not allowed.
    """
    env = unpack(data)
    expect(env, kind=kind, stage=stage, round_id=round_id)
    if env.sender not in allowed:
        raise MessageRejectedError(
            f"message from client {env.sender}, which is unknown or not a participant at "
            f"stage {stage!r} of round {round_id}"
        )
    return env


def pack_fields(fields: Sequence[bytes]) -> bytes:
    """Concatenate byte strings with 4-byte length prefixes."""
    out = [_LEN.pack(len(fields))]
    for f in fields:
        out.append(_LEN.pack(len(f)))
        out.append(bytes(f))
    return b"".join(out)


def unpack_fields(data: bytes, count: int | None = None) -> list[bytes]:
    """Inverse of :func:`pack_fields`.

    Raises
    ------
    MessageRejectedError
        If the data is truncated, has trailing bytes, or not ``count`` fields.
    """
    try:
        (n,) = _LEN.unpack_from(data, 0)
        pos, out = _LEN.size, []
        for _ in range(n):
            (size,) = _LEN.unpack_from(data, pos)
            pos += _LEN.size
            if pos + size > len(data):
                raise struct.error("field overruns message")
            out.append(bytes(data[pos : pos + size]))
            pos += size
    except struct.error as exc:
        raise MessageRejectedError(f"malformed payload: {exc}") from None
    if pos != len(data):
        raise MessageRejectedError(f"malformed payload: {len(data) - pos} trailing bytes")
    if count is not None and n != count:
        raise MessageRejectedError(f"payload has {n} fields, expected {count}")
    return out


def pack_ids(ids: tuple[int, ...]) -> bytes:
    """Encode client ids as little-endian uint32."""
    return np.asarray(ids, dtype="<u4").tobytes()


def unpack_ids(data: bytes) -> tuple[int, ...]:
    """Inverse of :func:`pack_ids`."""
    if len(data) % 4:
        raise MessageRejectedError(f"id list of {len(data)} bytes is not a multiple of 4")
    return tuple(int(i) for i in np.frombuffer(data, dtype="<u4"))
