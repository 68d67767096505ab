"""The in-process engine's aggregation through a :mod:`privfed.secure` aggregator.

The core (:mod:`privfed.federated`) does not import :mod:`privfed.secure` (it stands alone,
without TenSEAL or the crypto packages), and :mod:`privfed.secure` imports nothing from the
rest of privfed; this adapter joins them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from privfed.federated.engine import Aggregate, RoundSkipped, ServerHook
from privfed.secure import AggregationResult, PlainAggregator, SecureAggregator, ThresholdError
from privfed.secure.plain_sum import PlainSum

__all__ = ["EVALUATION_COUNT_BOUND", "PlainRunningSum", "SecureAggregation", "evaluation_scale",
           "to_aggregate"]

EVALUATION_COUNT_BOUND = 2**16
"""Under a secure aggregator, the most held-out examples a client may evaluate on: each count
is sent divided by it (times the aggregator's input bound, where that is below 1)."""


def to_aggregate(result: AggregationResult) -> Aggregate:
    """A secure aggregator's result as the core's :class:`Aggregate` (float32 torch)."""
    return Aggregate(
        mean=torch.from_numpy(np.asarray(result.mean, dtype=np.float32)),
        total_weight=result.total_weight,
        included=tuple(result.included),
        dropped=tuple(result.dropped),
        bytes_up=dict(result.bytes_up),
        bytes_down=dict(result.bytes_down),
        seconds=dict(result.seconds),
    )


class SecureAggregation:
    """A :mod:`privfed.secure` aggregator as the in-process engine's aggregation protocol.

    Parameters
    ----------
    aggregator : privfed.secure.SecureAggregator
        E.g. ``privfed.secure.make_aggregator("masking")``; its parties exchange only bytes.
    """

    def __init__(self, aggregator: SecureAggregator) -> None:
        self.aggregator = aggregator

    def aggregate(
        self, round_id: int, vectors: Mapping[int, torch.Tensor], weights: Mapping[int, float],
        on_server_message: ServerHook | None = None,
    ) -> Aggregate:
        """Run one round of the protocol; see :class:`privfed.federated.AggregationProtocol`.

        Raises
        ------
        RoundSkipped
            The protocol's :class:`privfed.secure.ThresholdError` (too few clients).
        """
        arrays = {c: v.numpy() for c, v in vectors.items()}
        try:
            result = self.aggregator.aggregate(round_id, arrays, weights,
                                               on_server_message=on_server_message)
        except ThresholdError as err:
            raise RoundSkipped(str(err)) from None
        return to_aggregate(result)

    def running(
        self, round_id: int, on_server_message: ServerHook | None = None
    ) -> PlainRunningSum | None:
        """A running sum of round ``round_id`` where :meth:`aggregate` would add the vectors
        in the clear without messages (a :class:`~privfed.secure.PlainAggregator` with
        neither ``wire`` nor a payload codec, and nobody reading the server's inbox: the
        condition of its :meth:`~privfed.secure.PlainAggregator.aggregate`); else None.
        See :class:`privfed.federated.StreamingAggregation`."""
        plain = self.aggregator
        if (not isinstance(plain, PlainAggregator) or plain.wire or plain.codec is not None
                or on_server_message is not None):
            return None
        return PlainRunningSum(PlainSum(round_id, clip=plain.clip,
                                        out_of_range=plain.out_of_range))


class PlainRunningSum:
    """A plain round's :class:`~privfed.secure.plain_sum.PlainSum` as the core's
    :class:`privfed.federated.RunningAggregate`.

    Parameters
    ----------
    running : privfed.secure.plain_sum.PlainSum
    """

    def __init__(self, running: PlainSum) -> None:
        self.running = running

    def add(self, vectors: Mapping[int, torch.Tensor], weights: Mapping[int, float]) -> None:
        """Add the clients' flat float32 CPU ``vectors`` with their ``weights`` (the
        vectors are not kept)."""
        self.running.add({c: v.numpy() for c, v in vectors.items()}, weights)

    def result(self) -> Aggregate:
        """The round's aggregate, as :meth:`SecureAggregation.aggregate` gives it.

        Raises
        ------
        RoundSkipped
            No vector was accepted.
        InvalidInputError
            An invalid vector or weight, as the batch round raises it.
        """
        try:
            return to_aggregate(self.running.result())
        except ThresholdError as err:
            raise RoundSkipped(str(err)) from None


def evaluation_scale(kind: str, clip: float | None) -> float:
    """The factor federated evaluation's counts are sent with
    (:meth:`privfed.federated.metrics.EvaluationCounts.encode`).

    Parameters
    ----------
    kind : {"none", "he", "masking"}
        ``secure.kind``.
    clip : float or None
        ``secure.clip``, the largest value the protocol accepts (None: its default, at
        least 1).

    Returns
    -------
    float
        1 in the clear (the counts go as they are); under HE or masking
        ``min(1, clip) / EVALUATION_COUNT_BOUND``, so that every encoded entry of a client
        with at most :data:`EVALUATION_COUNT_BOUND` examples lies in ``[0, min(1, clip)]``.
    """
    if kind == "none":
        return 1.0
    bound = clip if clip is not None else 1.0
    return min(1.0, bound) / EVALUATION_COUNT_BOUND
