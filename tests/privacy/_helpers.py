"""Servers with a privacy mechanism, for the privacy tests."""

from __future__ import annotations

import torch

from privfed.federated import LocalTraining, Server
from privfed.privacy import PrivacyConfig
from tests.conftest import make_server


def split(x: torch.Tensor, y: torch.Tensor, sizes: list[int]) -> list[tuple]:
    """Consecutive shards of the given sizes."""
    parts, start = [], 0
    for size in sizes:
        parts.append((x[start : start + size], y[start : start + size]))
        start += size
    return parts


def private_server(
    parts: list[tuple[torch.Tensor, torch.Tensor]],
    test: tuple[torch.Tensor, torch.Tensor],
    privacy: PrivacyConfig,
    *,
    rounds: int,
    training: LocalTraining | None = None,
    fraction: float = 1.0,
    poisson: bool = False,
    hidden: tuple[int, ...] = (8,),
    seed: int = 0,
) -> Server:
    """A Server whose clients and mechanism come from :func:`build_privacy`."""
    return make_server(parts, test, model_seed=seed, sampler_seed=seed, hidden=hidden,
                       training=training, fraction=fraction, poisson=poisson,
                       privacy=privacy, rounds=rounds)
