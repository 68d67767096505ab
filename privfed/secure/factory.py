"""``make_aggregator``: build an aggregator from a kind name and keyword parameters."""

from __future__ import annotations

import inspect
from typing import Any

from .base import SecureAggregator
from .errors import InvalidInputError
from .he import HEAggregator
from .masking import MaskingAggregator
from .plain import PlainAggregator

AGGREGATORS: dict[str, type[SecureAggregator]] = {
    "none": PlainAggregator,
    "he": HEAggregator,
    "masking": MaskingAggregator,
}


def make_aggregator(kind: str, **params: Any) -> SecureAggregator:
    """Create the aggregator of ``kind``.

    Parameters
    ----------
    kind : {"none", "he", "masking"}
        Plain baseline, CKKS homomorphic encryption, or pairwise masking.
    **params
        Keyword parameters of :class:`PlainAggregator`, :class:`HEAggregator` or
        :class:`MaskingAggregator`.

    Raises
    ------
    InvalidInputError
        (a ``ValueError``) for an unknown kind or parameter, naming the allowed ones.
    """
    if kind not in AGGREGATORS:
        raise InvalidInputError(f"secure aggregation kind {kind!r}; allowed: {tuple(AGGREGATORS)}")
    cls = AGGREGATORS[kind]
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise InvalidInputError(
            f"unknown parameter(s) {unknown} for kind {kind!r}; allowed: {allowed}"
        )
    return cls(**params)
