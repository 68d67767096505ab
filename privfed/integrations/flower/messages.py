"""What privfed's ServerApp and ClientApp say to each other over Flower messages.

Every message carries one :class:`~flwr.app.ConfigRecord` under :data:`RECORD` (round,
weights, protocol bytes, reports) and, where the model travels, an
:class:`~flwr.app.ArrayRecord` under :data:`MODEL`. Secure-aggregation payloads are the
exact bytes privfed's in-process parties exchange (:mod:`privfed.secure`), so the SuperLink
relays ciphertexts, masked vectors and sealed shares, never a plaintext update (except with
``secure.kind = "none"``, the unprotected baseline).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict

RECORD = "privfed"
MODEL = "privfed.model"

# Message types: "<category>.<action>", routed by the ClientApp.
REGISTER = "query.register"
TRAIN = "train.fit"
EVALUATE = "evaluate.counts"


def stage_type(stage: str) -> str:
    """The message type of protocol stage ``stage`` (one of
    :data:`privfed.secure.CLIENT_STAGES`)."""
    return f"query.{stage}"


def content(model: np.ndarray | None = None, **fields: Any) -> RecordDict:
    """A message body: ``fields`` as the config record, ``model`` (flat float32) if given.

    ``None`` values are left out; dicts are sent as JSON bytes.
    """
    record = ConfigRecord({
        key: json.dumps(value).encode() if isinstance(value, dict) else value
        for key, value in fields.items() if value is not None
    })
    records: dict[str, Any] = {RECORD: record}
    if model is not None:
        records[MODEL] = ArrayRecord(numpy_ndarrays=[np.ascontiguousarray(model, np.float32)])
    return RecordDict(records)


def fields(message: Message) -> ConfigRecord:
    """The config record of a privfed message."""
    return message.content[RECORD]


def json_field(record: ConfigRecord, key: str) -> dict[str, Any]:
    """A dict sent by :func:`content` (empty when absent)."""
    return json.loads(bytes(record[key]).decode()) if key in record else {}


def model(message: Message) -> np.ndarray:
    """The flat float32 model a message carries."""
    (array,) = message.content[MODEL].to_numpy_ndarrays()
    return array
