"""Flower messages as a transport for privfed's protocol drivers.

:class:`FlowerTransport` sends a stage's messages to the SuperNodes of the addressed clients
and returns their replies; a node that fails, or does not answer within the stage timeout,
is missing from the replies (a dropout of the round). The message type of a protocol stage
is ``query.<stage>``; its content is the round, the stage name and the party's bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from . import messages
from .registry import NodeDirectory

__all__ = ["FlowerTransport"]

logger = logging.getLogger(__name__)


class FlowerTransport:
    """Stage messages over a Flower Grid (see the module docstring).

    Parameters
    ----------
    grid : flwr.serverapp.Grid
    directory : NodeDirectory
        Which node is which client.
    stage_timeout : float
        Seconds to wait for the replies of one message round.

    Attributes
    ----------
    round_id : int
        The round the next :meth:`exchange` belongs to (the Flower message group).
    client_seconds : float
        Client time the nodes reported for their stage answers since the last reset.
    """

    def __init__(self, grid: Grid, directory: NodeDirectory, stage_timeout: float) -> None:
        self.grid = grid
        self.directory = directory
        self.stage_timeout = stage_timeout
        self.round_id = 0
        self.client_seconds = 0.0

    def exchange(self, stage: str, outbox: Mapping[int, bytes]) -> dict[int, bytes]:
        """Send each client its message of ``stage``; return the replies that came back."""
        bodies = {c: messages.content(round=self.round_id, stage=stage, payload=bytes(data))
                  for c, data in outbox.items()}
        replies = self.ask(messages.stage_type(stage), bodies, self.round_id)
        self.client_seconds += sum(float(r["seconds_encode"]) for r in replies.values())
        return {c: bytes(r["payload"]) for c, r in replies.items()}

    def ask(
        self, message_type: str, bodies: Mapping[int, RecordDict], group: int
    ) -> dict[int, ConfigRecord]:
        """Send ``bodies`` (by client id); return the replies that came without error."""
        node_of = self.directory.node_of
        replies = self.ask_nodes(message_type, {node_of[c]: b for c, b in bodies.items()},
                                 group)
        cid_of = self.directory.cid_of
        answered = {cid_of[node]: record for node, record in replies.items()}
        silent = sorted(set(bodies) - set(answered))
        if silent:
            logger.warning("round %d, %s: no usable reply from client(s) %s; treated as "
                           "dropped", group, message_type, silent)
        return answered

    def ask_nodes(
        self, message_type: str, bodies: Mapping[int, RecordDict], group: int
    ) -> dict[int, ConfigRecord]:
        """Send ``bodies`` (by node id) and wait up to the stage timeout for the replies."""
        outgoing = [
            Message(body, dst_node_id=node, message_type=message_type, group_id=str(group))
            for node, body in bodies.items()
        ]
        replies: dict[int, ConfigRecord] = {}
        for reply in self.grid.send_and_receive(outgoing, timeout=self.stage_timeout):
            if reply.has_error():
                logger.warning("round %d, %s: a node failed: %s", group, message_type,
                               reply.error.reason)
            else:
                replies[reply.metadata.src_node_id] = messages.fields(reply)
        return replies
