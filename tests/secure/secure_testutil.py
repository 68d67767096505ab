"""Helpers shared by the privfed.secure tests."""

from __future__ import annotations

import numpy as np


def weighted_mean(vectors, weights, ids):
    """Plaintext weighted mean (float64) over ``ids``."""
    total = sum(weights[c] for c in ids)
    return sum(weights[c] * np.asarray(vectors[c], dtype=np.float64) for c in ids) / total


class BytesTransport:
    """A transport that is not LocalTransport: each message crosses as a fresh bytes copy.

    It records ``(direction, stage, client, length)`` for every message ("down": server to
    client, "up": client to server). ``drop``: stage -> clients that never answer it;
    ``garble``: stage -> clients whose answer is replaced by garbage; ``alter``: a function
    ``(stage, client, message) -> message`` applied to what the server sends; with
    ``catch=True`` a client that raises is a lost node (its error kept in ``failed``),
    otherwise its error propagates.
    """

    def __init__(self, endpoints, *, drop=None, garble=None, alter=None, catch=False):
        self.endpoints = endpoints
        self.drop = drop or {}
        self.garble = garble or {}
        self.alter = alter
        self.catch = catch
        self.log = []
        self.failed = []

    def exchange(self, stage, outbox):
        from privfed.secure import SecureAggregationError

        replies = {}
        for client, message in sorted(outbox.items()):
            message = bytes(bytearray(message))
            if self.alter is not None:
                message = self.alter(stage, client, message)
            self.log.append(("down", stage, client, len(message)))
            if client in self.drop.get(stage, ()):
                continue
            try:
                reply = bytes(bytearray(self.endpoints[client].respond(stage, message)))
            except SecureAggregationError as err:
                if not self.catch:
                    raise
                self.failed.append((stage, client, err))
                continue
            if client in self.garble.get(stage, ()):
                reply = b"garbage"
            self.log.append(("up", stage, client, len(reply)))
            replies[client] = reply
        return replies

    def total(self, direction, stages=None):
        """Bytes per client carried in ``direction`` (over ``stages``, default all)."""
        out = {}
        for d, stage, client, length in self.log:
            if d == direction and (stages is None or stage in stages):
                out[client] = out.get(client, 0) + length
        return out
