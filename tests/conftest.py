"""Shared fixtures: small synthetic problems that need no dataset files."""

from __future__ import annotations

import pytest
import torch

from tests.site_helpers import site_files  # noqa: F401 - three hospitals' CSV files

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
    schedule=None,
):
    """A Server on the in-process engine over explicit client shards, with the W1
    batch-order convention.

    With ``privacy`` (a PrivacyConfig), trainer, stages, policy and weighting come from
    ``build_privacy`` (noise calibrated for ``rounds`` rounds, noise streams seeded with
    ``model_seed`` unless ``privacy.secure_mode``; the reference client size is the mean
    shard size).
    """
    from privfed.aggregation import SecureAggregation
    from privfed.federated import (
        Client,
        ClientSampler,
        FedAvg,
        InProcessEngine,
        LocalTraining,
        Pipeline,
        Server,
        SGDTrainer,
        bind_flat_parameters,
    )
    from privfed.models import build_model
    from privfed.privacy import NoisePolicy, build_privacy
    from privfed.privacy.ledger import planned_participations
    from privfed.secure import make_aggregator

    training = training or LocalTraining()
    model = build_model("mlp", tuple(test[0].shape[1:]), int(test[1].max()) + 1,
                        seed=model_seed, hidden=hidden)
    workspace = bind_flat_parameters(model)
    sampler = ClientSampler(len(parts), fraction, sampler_seed, poisson=poisson)
    clients = [Client(i, x, y) for i, (x, y) in enumerate(parts)]
    trainer, pipeline, policy, weighting = SGDTrainer(training), Pipeline(), None, None
    if privacy is not None:
        built = build_privacy(
            privacy, num_clients=len(parts), sample_rate=sampler.rate, poisson=poisson,
            num_params=workspace.spec.numel, rounds=rounds, training=training,
            noise=NoisePolicy(privacy.secure_mode, model_seed),
            reference_size=sum(len(y) for _, y in parts) // len(parts),
            participations=planned_participations(rounds, sampler.rate),
            module=workspace.module,
        )
        trainer, pipeline = built.trainer, Pipeline(built.stages)
        policy, weighting = built.policy, built.weighting
    engine = InProcessEngine(workspace, clients, trainer=trainer,
                             aggregation=SecureAggregation(aggregator or make_aggregator("none")),
                             pipeline=pipeline, weighting=weighting, policy=policy)
    return Server(
        workspace,
        engine,
        sampler=sampler,
        optimizer=optimizer or FedAvg(),
        test_data=test,
        batch_seed=lambda r, client_id: 100_000 * r + client_id,
        schedule=schedule,
        pipeline=pipeline,
        weighting=weighting,
        policy=policy,
        observers=observers,
    )


@pytest.fixture
def figures(monkeypatch):
    """The figures saved through ``save_figure`` (privfed's and the attacks'), by file
    name; they are still written."""
    import attacks.plots as attack_plots
    import privfed.plots as core_plots

    saved = {}
    save = core_plots.save_figure

    def keep(fig, path, *, dpi):
        saved[path.name] = fig
        return save(fig, path, dpi=dpi)

    monkeypatch.setattr(core_plots, "save_figure", keep)
    monkeypatch.setattr(attack_plots, "save_figure", keep)
    return saved
