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
from privfed.secure import AggregationResult, SecureAggregator, ThresholdError

__all__ = ["SecureAggregation", "to_aggregate"]


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
