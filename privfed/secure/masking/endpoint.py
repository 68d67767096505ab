"""The masking client's endpoint: one :class:`MaskingClientParty` answering each stage's message."""

from __future__ import annotations

import numpy as np

from privfed.secure.errors import MessageRejectedError
from privfed.secure.payloads import RoundRequest

from .client import MaskingClientParty
from .messages import KIND
from .state import STAGES as _STATE_STAGES

STAGES = _STATE_STAGES[:-1]
"""The clients' reply stages, in protocol order (``"consistency"``: malicious server model)."""


class MaskingEndpoint:
    """Client endpoint of the masking protocol.

    The party carries the round's state; between two stages it may be saved
    (:meth:`MaskingClientParty.to_bytes`) and a new endpoint built on the restored party
    (:meth:`MaskingClientParty.from_bytes`), e.g. on a node that runs each message in a new
    process.

    Parameters
    ----------
    party : MaskingClientParty
        The client's party for the round, at the stage the next message is for.
    vector : np.ndarray
        The client's flat float update (used at stage ``"masked"``).
    """

    def __init__(self, party: MaskingClientParty, vector: np.ndarray) -> None:
        self.party = party
        self.vector = vector

    def respond(self, stage: str, message: bytes) -> bytes:
        """Answer the server's message of ``stage``.

        ``"advertise"`` answers a :class:`~privfed.secure.RoundRequest` (its weight and
        length are advertised); ``"share"``, ``"masked"``, ``"consistency"`` and ``"unmask"``
        answer the server's keys, forward, survivors and unmask-request messages through
        :meth:`MaskingClientParty.share_keys`, :meth:`~MaskingClientParty.masked_input`,
        :meth:`~MaskingClientParty.consistency` and :meth:`~MaskingClientParty.unmask`.

        Raises
        ------
        MessageRejectedError
            An unknown stage, a stage out of order, a request for another round or vector
            length; and whatever the party raises (see :class:`MaskingClientParty`).
        """
        party = self.party
        if stage == "advertise":
            request = RoundRequest.from_bytes(message, KIND)
            if request.round_id != party.round_id:
                raise MessageRejectedError(
                    f"client {party.id}: request for round {request.round_id}, this party "
                    f"serves round {party.round_id}"
                )
            if request.dim != np.asarray(self.vector).size:
                raise MessageRejectedError(
                    f"client {party.id}: the server expects {request.dim} values, this client "
                    f"has {np.asarray(self.vector).size}"
                )
            return party.advertise(request.weight, request.dim)
        if stage == "share":
            return party.share_keys(message)
        if stage == "masked":
            return party.masked_input(message, self.vector)
        if stage == "consistency":
            return party.consistency(message)
        if stage == "unmask":
            return party.unmask(message)
        raise MessageRejectedError(f"masking client: no stage {stage!r}; stages: {STAGES}")
