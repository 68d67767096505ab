"""Servers with a privacy mechanism, for the privacy tests."""

from __future__ import annotations

import torch

from privfed.federated import (
    Client,
    ClientSampler,
    FedAvg,
    LocalTraining,
    Server,
    bind_flat_parameters,
)
from privfed.models import build_model
from privfed.privacy import PrivacyConfig, build_privacy
from privfed.secure import make_aggregator


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
    training = training or LocalTraining()
    model = build_model("mlp", tuple(test[0].shape[1:]), int(test[1].max()) + 1,
                        seed=seed, hidden=hidden)
    workspace = bind_flat_parameters(model)
    sampler = ClientSampler(len(parts), fraction, seed, poisson=poisson)
    clients, mechanism = build_privacy(
        privacy,
        clients=[Client(i, x, y) for i, (x, y) in enumerate(parts)],
        sampler=sampler,
        workspace=workspace,
        rounds=rounds,
        training=training,
        seed=seed,
    )
    return Server(
        workspace,
        clients,
        training=training,
        sampler=sampler,
        optimizer=FedAvg(),
        aggregator=make_aggregator("none"),
        test_data=test,
        batch_seed=lambda r, cid: 100_000 * r + cid,
        mechanism=mechanism,
    )
