"""Shared fixtures: small synthetic problems that need no dataset files."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def blobs() -> tuple[torch.Tensor, torch.Tensor]:
    """120 examples of 6 features in 3 linearly separable-ish classes."""
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 6, generator=g) * 3
    y = torch.arange(120) % 3
    x = centers[y] + torch.randn(120, 6, generator=g)
    return x, y


def make_server(
    parts: list[tuple[torch.Tensor, torch.Tensor]],
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    model_seed: int = 0,
    hidden: tuple[int, ...] = (8,),
    training=None,
    optimizer=None,
    fraction: float = 1.0,
    sampler_seed: int = 0,
    poisson: bool = False,
    observers=(),
    aggregator=None,
    privacy=None,
    rounds: int = 1,
):
    """A Server over explicit client shards, with the W1 batch-order convention.

    With ``privacy`` (a PrivacyConfig), clients and mechanism come from ``build_privacy``
    (noise calibrated for ``rounds`` rounds, noise streams seeded with ``model_seed`` unless
    ``privacy.secure_mode``; the reference client size is the mean shard size).
    """
    from privfed.federated import (
        Client,
        ClientSampler,
        FedAvg,
        LocalTraining,
        Server,
        bind_flat_parameters,
    )
    from privfed.models import build_model
    from privfed.privacy import NoisePolicy, build_privacy
    from privfed.secure import make_aggregator

    training = training or LocalTraining()
    model = build_model("mlp", tuple(test[0].shape[1:]), int(test[1].max()) + 1,
                        seed=model_seed, hidden=hidden)
    workspace = bind_flat_parameters(model)
    sampler = ClientSampler(len(parts), fraction, sampler_seed, poisson=poisson)
    clients = [Client(i, x, y) for i, (x, y) in enumerate(parts)]
    mechanism = None
    if privacy is not None:
        clients, mechanism = build_privacy(
            privacy, clients=clients, sampler=sampler, workspace=workspace, rounds=rounds,
            training=training, noise=NoisePolicy(privacy.secure_mode, model_seed),
            reference_size=sum(len(y) for _, y in parts) // len(parts),
        )
    return Server(
        workspace,
        clients,
        training=training,
        sampler=sampler,
        optimizer=optimizer or FedAvg(),
        aggregator=aggregator or make_aggregator("none"),
        test_data=test,
        batch_seed=lambda r, cid: 100_000 * r + cid,
        observers=observers,
        mechanism=mechanism,
    )
