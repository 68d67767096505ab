"""Random-k with a shared index set as an update stage, in front of any aggregation protocol.

All clients of a round keep the same coordinates (drawn from the shared seed and the round),
so the protocol (plain, masking, HE) sums ``k``-coordinate vectors and the sum it releases is
the restriction of the full sum: masking still hides every individual update, and a
distributed-DP sum restricted to the index set is post-processing of the noised sum. A
mechanism's control values (the last ``control_length`` coordinates) are always among the
coordinates sent, and never rescaled.
"""

from __future__ import annotations

import numpy as np
import torch

from privfed.compression.control import check_control_length
from privfed.compression.sparsify import RandomK, kept_count
from privfed.federated.stages import ServerAggregate, UpdateStage

__all__ = ["RandomKStage"]


class RandomKStage(UpdateStage):
    """Send only the round's shared random-k coordinates of the model part.

    Client half: the ``k = ceil(density * m)`` coordinates of the round's index set of the
    model part (``m = d - control_length`` coordinates), followed by all ``control_length``
    control values (``output_length(d) = k + control_length``). Server half: scatter the
    released sum back to ``d`` coordinates (zero outside the index set) and multiply the
    kept model coordinates by the codec's gain (``m / k`` when it rescales, else 1).

    Parameters
    ----------
    codec : RandomK
        Density, shared seed and rescaling of the selection.
    control_length : int, default 0
        Number of control values at the end of every vector: always sent, never rescaled.

    Raises
    ------
    ValueError
        If ``control_length`` is not an int >= 0.

    Notes
    -----
    The server half scatters back to the input length last given to :meth:`output_length`;
    the server calls it (through ``Pipeline.output_length``) to size the protocol before it
    aggregates. The client half needs no such call: it reads the length off the vector.
    """

    name = "randomk"

    def __init__(self, codec: RandomK, *, control_length: int = 0) -> None:
        self.codec = codec
        self.control_length = check_control_length(control_length)
        self._input_length: int | None = None

    def _model_length(self, length: int) -> int:
        """Coordinates of the model part of a vector of ``length`` (checks control_length)."""
        return length - check_control_length(self.control_length, length)

    def output_length(self, length: int) -> int:
        """``k + control_length`` for vectors of ``length`` coordinates (remembers ``length``).

        Raises
        ------
        ValueError
            If ``control_length`` leaves no model coordinate.
        """
        model_length = self._model_length(length)
        self._input_length = length
        return kept_count(self.codec.density, model_length) + self.control_length

    def _index(self, length: int, round_id: int) -> np.ndarray:
        """The kept model coordinates of round ``round_id``, then every control coordinate."""
        model_length = self._model_length(length)
        return np.concatenate([self.codec.indices(model_length, round_id),
                               np.arange(model_length, length)])

    def client(self, round_id: int, client_id: int, vector: torch.Tensor) -> torch.Tensor:
        """The round's shared coordinates of ``vector`` and its control values."""
        return vector[torch.from_numpy(self._index(vector.numel(), round_id))]

    def server(self, round_id: int, aggregate: ServerAggregate) -> ServerAggregate:
        """Scatter the sum back to full length; rescale the kept model coordinates.

        Raises
        ------
        RuntimeError
            If :meth:`output_length` was never called.
        ValueError
            If the sum's length is not :meth:`output_length` of the input length.
        """
        return aggregate.with_sum(self._scatter(round_id, aggregate.sum))

    def reconstruct(self, round_id: int, vector: torch.Tensor) -> torch.Tensor:
        """One client's ``k + control_length`` values scattered back like the sum."""
        return self._scatter(round_id, vector)

    def _scatter(self, round_id: int, values: torch.Tensor) -> torch.Tensor:
        if self._input_length is None:
            raise RuntimeError("RandomKStage.output_length must be called before the server half")
        length = self._input_length
        index = torch.from_numpy(self._index(length, round_id))
        if values.numel() != index.numel():
            raise ValueError(f"random-k: {values.numel()} coordinates released, expected "
                             f"{index.numel()} for vectors of length {length}")
        full = torch.zeros(length, dtype=values.dtype)
        full[index] = values
        kept = index[: index.numel() - self.control_length]
        full[kept] *= self.codec.gain(self._model_length(length))
        return full

    def sent(self, round_id: int, client_id: int, model: np.ndarray) -> np.ndarray:
        """What the server makes of a client's model part ``model``: its float32 values on
        the round's index set, times the gain, zero elsewhere (float64; exact up to the
        protocol's own precision, e.g. masking's fixed point)."""
        index = self.codec.indices(model.size, round_id)
        out = np.zeros(model.size, dtype=np.float64)
        out[index] = model[index].astype(np.float32) * self.codec.gain(model.size)
        return out
