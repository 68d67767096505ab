"""Random-k with a shared index set in front of any aggregator (e.g. masking).

All clients of a round select the same coordinates (drawn from the round), so the inner
aggregator sums ``k``-coordinate vectors and the sum it releases is the restriction of the
full sum: masking still hides every individual update, and a distributed-DP sum restricted to
the index set is post-processing of the noised sum.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping
from typing import Any

import numpy as np

from privfed.compression.feedback import ErrorFeedback
from privfed.compression.sparsify import RandomK
from privfed.secure.base import AggregationResult

__all__ = ["SharedIndexAggregator"]


class SharedIndexAggregator:
    """Send only the round's shared random-k coordinates through ``inner``.

    Implements the aggregator interface of :class:`privfed.secure.Aggregator`
    (:meth:`aggregate`); the bytes and timings are the inner aggregator's, counted on the
    ``k``-coordinate vectors that actually travel.

    Parameters
    ----------
    inner : aggregator
        Any aggregator, e.g. ``privfed.secure.make_aggregator("masking")``.
    codec : RandomK
        Density, shared seed and rescaling of the selection.
    error_feedback : bool, default False
        Clients keep the coordinates not selected and add them to their next update.
    """

    def __init__(self, inner: Any, codec: RandomK, *, error_feedback: bool = False) -> None:
        self.inner = inner
        self.codec = codec
        self.feedback = ErrorFeedback() if error_feedback else None

    def aggregate(
        self,
        round_id: int,
        vectors: Mapping[int, Any],
        weights: Mapping[int, float],
        *,
        on_server_message: Callable[[int, str, bytes], None] | None = None,
        dropouts: Mapping[str, Collection[int]] | None = None,
    ) -> AggregationResult:
        """Aggregate the shared coordinates with ``inner``; return the full-length mean.

        Parameters and result as :meth:`privfed.secure.Aggregator.aggregate`; the mean is
        zero outside the round's index set (and the kept values are multiplied by ``d / k``
        when the codec rescales).
        """
        full = {c: np.asarray(v, dtype=np.float64).ravel() for c, v in vectors.items()}
        if self.feedback is not None:
            full = {c: self.feedback.compensate(c, v) for c, v in full.items()}
        dim = next(iter(full.values())).size
        index = self.codec.indices(dim, round_id)
        result = self.inner.aggregate(
            round_id, {c: v[index] for c, v in full.items()}, weights,
            on_server_message=on_server_message, dropouts=dropouts,
        )
        if self.feedback is not None:
            for c in result.included:
                sent = np.zeros(dim)
                sent[index] = full[c][index] * self.codec.gain(dim)
                self.feedback.remember(c, full[c], sent)
        mean = np.zeros(dim, dtype=np.float64)
        mean[index] = np.asarray(result.mean, dtype=np.float64) * self.codec.gain(dim)
        return dataclasses.replace(result, mean=mean)
