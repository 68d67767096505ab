"""One round of the compression parts in tests: client halves, a protocol, server halves.

A payload codec travels through a local stand-in of the plain protocol's use of it (the
client frames ``codec.encode`` with the plain header, the server sums ``codec.decode``
weighted in float64); without one, the stages' outputs go through a real
``privfed.secure`` aggregator. The released sum stays float64 here (the engine hands the
stages float32) so that tests can compare exactly.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from privfed.compression import CompressionParts
from privfed.federated.stages import Pipeline, ServerAggregate
from privfed.secure import make_aggregator
from privfed.secure.wire import HEADER_SIZE


@dataclass(frozen=True)
class Round:
    """What a round released and cost."""

    mean: np.ndarray
    bytes_up: dict[int, int]
    included: tuple[int, ...]
    total_weight: float
    lengths: frozenset[int]  # lengths of the vectors handed to the protocol


def plain_with_codec(
    codec: Any, round_id: int, vectors: Mapping[int, np.ndarray], weights: Mapping[int, float]
) -> tuple[np.ndarray, dict[int, int]]:
    """The plain protocol with ``codec=``: the weighted float64 sum and each upload's bytes."""
    dim = next(iter(vectors.values())).size
    total = np.zeros(dim)
    bytes_up = {}
    for c, v in vectors.items():
        payload = codec.encode(np.asarray(v, dtype=np.float64), round_id, c)
        bytes_up[c] = HEADER_SIZE + len(payload)
        total += weights[c] * codec.decode(payload, dim, round_id)
    return total, bytes_up


def run_round(
    parts: CompressionParts,
    round_id: int,
    vectors: Mapping[int, np.ndarray],
    weights: Mapping[int, float],
    *,
    aggregator: Any = None,
    dropouts: Mapping[str, Collection[int]] | None = None,
) -> Round:
    """Run ``parts`` for one round; ``aggregator`` (default plain) when there is no codec."""
    pipeline = Pipeline(parts.stages)
    length = next(iter(vectors.values())).size
    pipeline.output_length(length)  # what the server does to size the protocol
    sent = {c: pipeline.client(round_id, c, torch.as_tensor(v, dtype=torch.float32)).numpy()
            for c, v in vectors.items()}
    if parts.payload_codec is not None:
        total, bytes_up = plain_with_codec(parts.payload_codec, round_id, sent, weights)
        included, total_weight = tuple(sorted(sent)), float(sum(weights.values()))
    else:
        res = (aggregator or make_aggregator("none")).aggregate(round_id, sent, weights,
                                                                dropouts=dropouts)
        total = np.asarray(res.mean, dtype=np.float64) * res.total_weight
        bytes_up, included, total_weight = res.bytes_up, res.included, res.total_weight
    released = pipeline.server(round_id, ServerAggregate(torch.from_numpy(total), 1.0,
                                                         included))
    return Round(released.sum.numpy() / total_weight, bytes_up, included, total_weight,
                 frozenset(v.size for v in sent.values()))


def residual(parts: CompressionParts, client_id: int) -> np.ndarray:
    """Client ``client_id``'s error-feedback residual, read through the state dict."""
    state = Pipeline(parts.stages).state_dict(client_id)
    return np.asarray(state["error_feedback"]["residual"])
