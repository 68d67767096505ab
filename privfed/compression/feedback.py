"""Error feedback: each client remembers what compression dropped and sends it later."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import torch

from privfed.compression.control import check_control_length
from privfed.federated.stages import UpdateStage

__all__ = ["ErrorFeedbackStage", "SentEstimate"]


class SentEstimate(Protocol):
    """A compressor that can tell a client what the server will make of its model part.

    Implemented by :class:`~privfed.compression.randomk.RandomKStage` and
    :class:`~privfed.compression.payload.CodecPayload`.
    """

    def sent(self, round_id: int, client_id: int, model: np.ndarray) -> np.ndarray:
        """The float64 model part the server reconstructs from this client's ``model``."""


class ErrorFeedbackStage(UpdateStage):
    """Per-client residual memory (Seide et al. 2014; Karimireddy et al. 2019).

    Client half, for client ``c`` in round ``r``: ``intended = model + residual_c`` (float64),
    hand on ``float32(intended)`` (with the control values unchanged), and remember
    ``residual_c = intended - sent``, where ``sent = compressor.sent(r, c,
    float32(intended))`` is what the server will reconstruct from this client's
    contribution. Put the stage right before the compressor it compensates (the random-k
    stage; or last, before a payload codec, which must be the very ``compressor`` object so
    that both encode with the same randomness). The server half changes nothing.

    The residual is the client's state: :meth:`state_dict` / :meth:`load_state_dict` move it
    (e.g. into a Flower node's state), so a stage rebuilt from it continues identically.
    The control values (the last ``control_length`` coordinates) are never compensated.

    Parameters
    ----------
    compressor : SentEstimate
        The random-k stage or payload codec that follows.
    control_length : int, default 0
        Number of control values at the end of every vector.

    Raises
    ------
    ValueError
        If ``control_length`` is not an int >= 0.
    """

    name = "error_feedback"

    def __init__(self, compressor: SentEstimate, *, control_length: int = 0) -> None:
        self.compressor = compressor
        self.control_length = check_control_length(control_length)
        self._residual: dict[int, np.ndarray] = {}

    def client(self, round_id: int, client_id: int, vector: torch.Tensor) -> torch.Tensor:
        """``vector`` with the client's residual added to its model part (float32).

        Raises
        ------
        ValueError
            If ``control_length`` leaves no model coordinate, or the model part's length is
            not the residual's.
        """
        x = vector.detach().cpu().numpy().astype(np.float64).ravel()
        model_length = x.size - check_control_length(self.control_length, x.size)
        intended = x[:model_length]
        residual = self._residual.get(client_id)
        if residual is not None:
            if residual.shape != intended.shape:
                raise ValueError(f"client {client_id}: model part of {intended.size} coordinates "
                                 f"but residual of {residual.size}")
            intended = intended + residual
        handed = intended.astype(np.float32)
        sent = self.compressor.sent(round_id, client_id, handed)
        self._residual[client_id] = intended - sent
        out = np.concatenate([handed, x[model_length:].astype(np.float32)])
        return torch.from_numpy(out)

    def state_dict(self, client_id: int) -> dict[str, Any]:
        """``{"residual": float64 tensor (d,)}`` (a copy; exact through JSON as a list of
        floats), or ``{}`` before the client's first update."""
        residual = self._residual.get(client_id)
        return {} if residual is None else {"residual": torch.from_numpy(residual.copy())}

    def load_state_dict(self, client_id: int, state: Mapping[str, Any]) -> None:
        """Restore client ``client_id``'s residual from :meth:`state_dict`'s output.

        Raises
        ------
        ValueError
            If ``state`` has no ``"residual"`` or it is not a flat list (or tensor) of
            finite numbers.
        """
        if "residual" not in state:
            raise ValueError(f"error_feedback state of client {client_id} has no 'residual'")
        given = state["residual"]
        if isinstance(given, torch.Tensor):
            given = given.numpy()
        residual = np.array(given, dtype=np.float64)
        if residual.ndim != 1 or not np.isfinite(residual).all():
            raise ValueError(f"error_feedback state of client {client_id}: the residual must "
                             "be a flat list of finite numbers")
        self._residual[client_id] = residual
