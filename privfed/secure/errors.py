"""Exception hierarchy of :mod:`privfed.secure`.

Every error raised on bad input or a bad message derives from :class:`SecureAggregationError`.
Rejecting a message never changes the state of the party that rejected it, so the same
party keeps serving the other clients.
"""

from __future__ import annotations


class SecureAggregationError(Exception):
    """Base class of every error raised by :mod:`privfed.secure`."""


class InvalidInputError(SecureAggregationError, ValueError):
    """A local input (vector, weight, parameter) is malformed or out of range."""


class MessageRejectedError(SecureAggregationError):
    """A received message was rejected: malformed, wrong round/stage, unknown or duplicate sender.

    The receiving party's state is unchanged.
    """


class AuthenticationError(MessageRejectedError):
    """A signature or authenticated-encryption tag did not verify (tampering or wrong key)."""


class ThresholdError(SecureAggregationError):
    """Too few clients remain to continue the protocol; nothing about any input is revealed."""


class ConsistencyError(MessageRejectedError):
    """The server's messages contradict each other or what the signed inputs allow.

    Raised by the party that detects a lying server: survivor sets that fewer than ``t``
    clients signed, a key that differs from the pinned one, an aggregate that is not the
    sum of the round's signed uploads. The detecting party reveals nothing and its state
    is unchanged.
    """
