"""Servers with a privacy mechanism, and user-level DP parts driven by hand."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch

from privfed.config.privacy import PrivacyConfig
from privfed.federated import LocalTraining
from privfed.federated.stages import Pipeline, ServerAggregate
from privfed.federated.weighting import UniformWeighting
from privfed.privacy import (
    AdaptiveClipping,
    CentralNoiseStage,
    ClipStage,
    DistributedNoiseStage,
    DistributedPolicy,
    NoisePolicy,
    UserLevelPolicy,
)
from tests.conftest import make_server

if TYPE_CHECKING:
    from privfed.federated import Server

SEEDED = NoisePolicy(secure=False, seed=1)
COMMON = dict(noise_multiplier=1.3, clip_norm=0.7, sample_rate=0.5, num_clients=16, delta=1e-5)
"""The user-level parameters of the direct tests (qK = 8)."""


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
    """A Server whose trainer, stages, policy and weighting come from :func:`build_privacy`."""
    return make_server(parts, test, model_seed=seed, sampler_seed=seed, hidden=hidden,
                       training=training, fraction=fraction, poisson=poisson,
                       privacy=privacy, rounds=rounds)


def central(
    noise: NoisePolicy = SEEDED, adaptive: AdaptiveClipping | None = None, **overrides: float
) -> tuple[Pipeline, UserLevelPolicy]:
    """Central DP's pipeline (clip, central noise) and policy, as :func:`build_privacy`
    wires them, with :data:`COMMON` parameters unless overridden."""
    p = {**COMMON, **overrides}
    clip = ClipStage(p["clip_norm"], p["sample_rate"] * p["num_clients"], adaptive)
    pipeline = Pipeline([clip, CentralNoiseStage(clip, p["noise_multiplier"], noise)])
    policy = UserLevelPolicy(noise_multiplier=p["noise_multiplier"],
                             sample_rate=p["sample_rate"], num_clients=int(p["num_clients"]),
                             delta=p["delta"], noise=noise)
    return pipeline, policy


def distributed(
    min_surviving: int, dim: int, noise: NoisePolicy = SEEDED, *, noise_kind: str = "gaussian",
    quantization_step: float | None = None, adaptive: AdaptiveClipping | None = None,
    **overrides: float,
) -> tuple[Pipeline, DistributedPolicy]:
    """Distributed DP's pipeline (clip, noise share) and policy, as :func:`build_privacy`
    wires them."""
    p = {**COMMON, **overrides}
    clip = ClipStage(p["clip_norm"], p["sample_rate"] * p["num_clients"], adaptive)
    shares = DistributedNoiseStage(clip, p["noise_multiplier"], min_surviving, noise,
                                   noise_kind=noise_kind, quantization_step=quantization_step)
    policy = DistributedPolicy(
        min_surviving_clients=min_surviving, clip_norm=p["clip_norm"], dim=dim,
        noise_kind=noise_kind, quantization_step=shares.quantization_step,
        noise_multiplier=p["noise_multiplier"], sample_rate=p["sample_rate"],
        num_clients=int(p["num_clients"]), delta=p["delta"], noise=noise)
    return Pipeline([clip, shares]), policy


def release(
    pipeline: Pipeline, denominator: float, round_id: int, updates: Mapping[int, torch.Tensor],
    length: int | None = None,
) -> torch.Tensor:
    """What the server steps by in ``round_id``: each client's update through the client
    halves, their sum (weights 1), the server halves, then the weighting (divided by
    ``denominator``, qK); ``length`` is the model's, for a round without clients."""
    vectors = [pipeline.client(round_id, client_id, delta) for client_id, delta in updates.items()]
    total = (torch.stack(vectors).sum(0) if vectors
             else torch.zeros(pipeline.output_length(length or 0)))
    released = pipeline.server(round_id, ServerAggregate(total, 1.0, tuple(updates)))
    return UniformWeighting(denominator).step(released, float(len(vectors)))
