"""Shared by the Flower tests: small configs, the in-process reference run, masking's bound."""

from __future__ import annotations

import torch

from privfed.config import ExperimentConfig, load_config
from privfed.experiment import build_simulation
from privfed.secure.masking import Ring

BASE = ["data.num_clients=3", "federation.rounds=3", "model.hidden=[32]"]


def config(*overrides: str, rounds: int = 3) -> ExperimentConfig:
    return load_config(None, [*BASE, f"federation.rounds={rounds}", *overrides])


def in_process(cfg: ExperimentConfig):
    simulation = build_simulation(cfg)
    history = simulation.run()
    return simulation.server, history


def masking_bound(cfg: ExperimentConfig, rounds: int, weights: torch.Tensor) -> float:
    """Max weight difference between two masking runs: each round's mean is off by at most
    n fixed-point steps per coordinate (stochastic rounding, up to one step per client), and
    that can flip the float32 rounding of the updated weight by one ulp."""
    n = cfg.data.num_clients
    ring = Ring(cfg.secure.ring_bits, cfg.secure.clip or 10.0, n)
    ulp = torch.finfo(torch.float32).eps * float(weights.abs().max())
    return rounds * (n * ring.step + ulp)
