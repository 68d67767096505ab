"""Error feedback: each client remembers what compression dropped and sends it later."""

from __future__ import annotations

import numpy as np

__all__ = ["ErrorFeedback"]


class ErrorFeedback:
    """Per-client residual memory (Seide et al. 2014; Karimireddy et al. 2019).

    Before encoding, a client adds its residual to its update; after encoding, the residual
    becomes what the server will not see: ``residual = (update + residual) - decoded``. The
    residuals live on the clients; this object holds them for the simulation.
    """

    def __init__(self) -> None:
        self._residual: dict[int, np.ndarray] = {}

    def compensate(self, client_id: int, vector: np.ndarray) -> np.ndarray:
        """Return ``vector`` plus the client's residual (float64; a new array)."""
        out = np.asarray(vector, dtype=np.float64).copy()
        residual = self._residual.get(client_id)
        if residual is not None:
            if residual.shape != out.shape:
                raise ValueError(f"client {client_id}: update of shape {out.shape} but residual "
                                 f"of shape {residual.shape}")
            out += residual
        return out

    def remember(self, client_id: int, intended: np.ndarray, sent: np.ndarray) -> None:
        """Store ``intended - sent`` (both float64) as the client's residual."""
        self._residual[client_id] = intended - sent

    def residual(self, client_id: int) -> np.ndarray | None:
        """The client's current residual, or None before its first compressed update."""
        return self._residual.get(client_id)
