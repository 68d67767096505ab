"""Control coordinates: values a privacy mechanism appends to an update, carried exactly.

A mechanism may append control values to each client's vector (user-level DP with adaptive
clipping appends the centred clip bit; ``UpdateMechanism.transformed_length`` counts them).
The server reads them back from the decoded mean, so no codec may drop, rescale or round
them: compression applies to the model part, the first ``len(vector) - control_length``
coordinates. The last ``control_length`` values travel as float32 after a codec's payload
(``4 * control_length`` bytes, :class:`~privfed.compression.payload.CodecPayload`), or among
the coordinates random-k always keeps (:class:`~privfed.compression.randomk.RandomKStage`),
and error feedback never touches them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from privfed.compression.codec import MalformedPayloadError

__all__ = ["CONTROL_DTYPE", "check_control_length", "pack_control", "split_control",
           "unpack_control"]

CONTROL_DTYPE = np.dtype("<f4")
"""Wire type of a control value."""


def check_control_length(control_length: Any, dim: int | None = None) -> int:
    """Return ``control_length`` if it is an int >= 0 (and < ``dim`` when given).

    Parameters
    ----------
    control_length : int
        Number of control values at the end of each client vector.
    dim : int or None
        Length of the round's vectors; at least one coordinate must be left for the model.

    Raises
    ------
    ValueError
        Naming ``control_length``.
    """
    if isinstance(control_length, bool) or not isinstance(control_length, int | np.integer):
        raise ValueError(f"control_length must be an int >= 0, got {control_length!r}")
    if control_length < 0:
        raise ValueError(f"control_length must be an int >= 0, got {control_length!r}")
    if dim is not None and control_length >= dim:
        raise ValueError(
            f"control_length={control_length} must be less than the vector length {dim} "
            "(at least one model coordinate)"
        )
    return int(control_length)


def split_control(vector: np.ndarray, control_length: int) -> tuple[np.ndarray, np.ndarray]:
    """The model part and the last ``control_length`` values of a flat vector (views)."""
    cut = vector.size - control_length
    return vector[:cut], vector[cut:]


def pack_control(control: np.ndarray) -> bytes:
    """The control values as little-endian float32."""
    return np.asarray(control, dtype=CONTROL_DTYPE).tobytes()


def unpack_control(payload: bytes, control_length: int) -> tuple[bytes, np.ndarray]:
    """Split an upload payload into the codec's payload and the (float64) control values.

    Raises
    ------
    MalformedPayloadError
        If ``payload`` is too short to carry ``control_length`` values.
    """
    size = control_length * CONTROL_DTYPE.itemsize
    if len(payload) < size:
        raise MalformedPayloadError(
            f"payload of {len(payload)} bytes cannot carry {control_length} control values"
        )
    cut = len(payload) - size
    return payload[:cut], np.frombuffer(payload[cut:], dtype=CONTROL_DTYPE).astype(np.float64)
