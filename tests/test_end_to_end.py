"""Whole runs on the embedded datasets: reproducibility and the accuracy the README reports."""

import pytest
import torch

from privfed.config import load_config
from privfed.experiment import build_simulation


def _train(*overrides):
    simulation = build_simulation(load_config(overrides=list(overrides)))
    history = simulation.run()
    return simulation.server.weights.clone(), history


def test_same_seed_same_weights_different_seed_different_weights():
    small = ["federation.rounds=2", "model.hidden=[16]", "federation.fraction=0.5"]
    a, _ = _train(*small, "seed=3")
    b, _ = _train(*small, "seed=3")
    c, _ = _train(*small, "seed=4")
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.slow
def test_digits_10_iid_clients_mlp_30_rounds_reaches_95_percent():
    _, history = _train()
    assert history.final_accuracy >= 0.95


@pytest.mark.slow
def test_breast_cancer_5_clients_logistic_reaches_95_percent():
    _, history = _train("data.dataset=breast_cancer", "data.num_clients=5", "model.name=logistic")
    assert history.final_accuracy >= 0.95
