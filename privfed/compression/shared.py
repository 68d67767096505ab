"""Random-k with a shared index set in front of any aggregator (e.g. masking).

All clients of a round select the same coordinates (drawn from the round), so the inner
aggregator sums ``k``-coordinate vectors and the sum it releases is the restriction of the
full sum: masking still hides every individual update, and a distributed-DP sum restricted to
the index set is post-processing of the noised sum. A mechanism's control values (the last
``control_length`` coordinates) are always among the coordinates sent, and never rescaled.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping
from typing import Any

import numpy as np

from privfed.compression.control import check_control_length, split_control
from privfed.compression.feedback import ErrorFeedback
from privfed.compression.sparsify import RandomK
from privfed.secure.base import AggregationResult

__all__ = ["SharedIndexAggregator"]


class SharedIndexAggregator:
    """Send only the round's shared random-k coordinates through ``inner``.

    Implements the aggregator interface of :class:`privfed.secure.Aggregator`
    (:meth:`aggregate`); the bytes and timings are the inner aggregator's, counted on the
    ``k + control_length``-coordinate vectors that actually travel.

    Parameters
    ----------
    inner : aggregator
        Any aggregator, e.g. ``privfed.secure.make_aggregator("masking")``.
    codec : RandomK
        Density, shared seed and rescaling of the selection.
    error_feedback : bool, default False
        Clients keep the model coordinates not selected and add them to their next update.
    control_length : int, default 0
        The last ``control_length`` coordinates of every vector are a mechanism's control
        values: always sent, never rescaled nor touched by error feedback. The index set
        (``k`` of the ``d - control_length`` model coordinates) and the ``d / k`` gain are
        those of the model part.

    Raises
    ------
    privfed.secure.InvalidInputError
        (a ``ValueError``) if ``control_length`` is not an int >= 0; :meth:`aggregate` raises
        it if ``control_length`` is not less than the vectors' length.
    """

    def __init__(
        self,
        inner: Any,
        codec: RandomK,
        *,
        error_feedback: bool = False,
        control_length: int = 0,
    ) -> None:
        self.inner = inner
        self.codec = codec
        self.feedback = ErrorFeedback() if error_feedback else None
        self.control_length = check_control_length(control_length)

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

        Parameters and result as :meth:`privfed.secure.Aggregator.aggregate`; the mean's
        model part is zero outside the round's index set (and the kept values are
        multiplied by ``d / k`` when the codec rescales); its control values are the inner
        aggregator's mean of the clients' control values.
        """
        full = {c: np.asarray(v, dtype=np.float64).ravel() for c, v in vectors.items()}
        dim = next(iter(full.values())).size
        model_dim = dim - check_control_length(self.control_length, dim)
        if self.feedback is not None:
            full = {c: self._compensate(c, v) for c, v in full.items()}
        model_index = self.codec.indices(model_dim, round_id)
        index = np.concatenate([model_index, np.arange(model_dim, dim)])
        result = self.inner.aggregate(
            round_id, {c: v[index] for c, v in full.items()}, weights,
            on_server_message=on_server_message, dropouts=dropouts,
        )
        gain = self.codec.gain(model_dim)
        if self.feedback is not None:
            self._remember(result.included, full, model_index, gain, model_dim)
        mean = np.zeros(dim, dtype=np.float64)
        mean[index] = np.asarray(result.mean, dtype=np.float64)
        mean[model_index] *= gain
        return dataclasses.replace(result, mean=mean)

    def _compensate(self, client_id: int, vector: np.ndarray) -> np.ndarray:
        """``vector`` with the client's residual added to its model part."""
        model, control = split_control(vector, self.control_length)
        return np.concatenate([self.feedback.compensate(client_id, model), control])

    def _remember(
        self,
        included: Collection[int],
        full: Mapping[int, np.ndarray],
        model_index: np.ndarray,
        gain: float,
        model_dim: int,
    ) -> None:
        """Store each included client's residual: its model part minus what was sent."""
        for c in included:
            sent = np.zeros(model_dim)
            sent[model_index] = full[c][model_index] * gain
            self.feedback.remember(c, full[c][:model_dim], sent)
