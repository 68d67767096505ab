"""Noise that no other party can regenerate (fault 1 of the privacy issue).

The attacks hold what the issue names: the run's config (saved in every run directory, and
the same on every Flower node) and what the party sees (the released model for central DP,
the decoded masked sum for distributed DP). With seeded noise they regenerate the noise and
subtract it; with ``privacy.secure_mode = true`` the same subtraction leaves an error of the
order of the noise itself.
"""

import math

import numpy as np
import pytest
import torch

from privfed.federated import Observer, derive_seed
from privfed.models import build_model
from privfed.privacy import NoisePolicy, SecureNoise, SeededNoise
from privfed.privacy.central import _CENTRAL_NOISE_STREAM
from privfed.privacy.distributed import _CLIENT_NOISE_STREAM
from tests.privacy._helpers import central, distributed, release

BASE = ["data.num_clients=3", "model.hidden=[16]", "federation.rounds=1",
        "privacy.noise_multiplier=1.0", "privacy.clip_norm=0.5"]


class _Aggregates(Observer):
    def __init__(self) -> None:
        self.means: dict[int, np.ndarray] = {}

    def aggregate_released(self, round_id: int, mean_update: np.ndarray) -> None:
        self.means[round_id] = np.asarray(mean_update, dtype=np.float64)


def _run(*overrides: str):
    from privfed.config import load_config
    from privfed.experiment import build_simulation

    cfg = load_config(None, [*BASE, *overrides])
    seen = _Aggregates()
    simulation = build_simulation(cfg, [seen])
    start = simulation.server.weights.clone()
    simulation.run()
    return cfg, start, simulation.server, seen


def _attacker_noise(cfg, *stream: int, std: float, size: int) -> torch.Tensor:
    """What anyone holding the config regenerates: the seeded stream of the mechanism."""
    from privfed.experiment import _PRIVACY_STREAM

    policy = NoisePolicy(secure=False, seed=derive_seed(cfg.seed, _PRIVACY_STREAM))
    return policy.source(*stream).normal(std, size).double()


@pytest.mark.parametrize(("secure", "recovered"), [(False, True), (True, False)])
def test_outsider_subtracts_central_noise_only_when_seeded(secure, recovered):
    """Central DP: from the config and the released model, recover the clipped sum."""
    cfg, _, server, seen = _run("privacy.mechanism='central'",
                                f"privacy.secure_mode={str(secure).lower()}")
    clients = cfg.data.num_clients
    truth = seen.means[1] * clients  # the server's clipped sum (weights are 1)
    initial = server.workspace.spec.flatten(dict(build_model(
        cfg.model.name, (1, 8, 8), 10, seed=cfg.seed,
        **cfg.model.build_options()).named_parameters()))
    size = initial.numel()
    noise = _attacker_noise(cfg, _CENTRAL_NOISE_STREAM, 1, std=0.5, size=size)
    estimate = (server.weights.double() - initial.double()) * clients - noise
    error = float((estimate - torch.from_numpy(truth)).std())
    if recovered:
        assert error < 1e-4
    else:
        assert error > 0.5 * 0.5  # of the order of the noise std z * S = 0.5


@pytest.mark.parametrize(("secure", "recovered"), [(False, True), (True, False)])
def test_server_subtracts_distributed_shares_only_when_seeded(secure, recovered):
    """Distributed DP under masking: from the config and the decoded sum, remove every
    client's share of the noise."""
    flag = f"privacy.secure_mode={str(secure).lower()}"
    common = ["privacy.mechanism='distributed'", "secure.kind='masking'", "secure.clip=2.0"]
    cfg, _, server, seen = _run(*common, flag)
    _, _, _, clean = _run(*common, flag, "privacy.noise_multiplier=0.0")
    clients = cfg.data.num_clients
    size = server.weights.numel()
    shares = sum(_attacker_noise(cfg, _CLIENT_NOISE_STREAM, 1, c, std=0.5 / math.sqrt(clients),
                                 size=size) for c in range(clients))
    estimate = torch.from_numpy(seen.means[1] * clients) - shares
    error = float((estimate - torch.from_numpy(clean.means[1] * clients)).std())
    if recovered:
        assert error < 1e-4
    else:
        assert error > 0.5 * 0.5


@pytest.mark.parametrize("mechanism", [
    ("privacy.mechanism='local'",),
    ("privacy.mechanism='central'", "privacy.adaptive_clipping=true",
     "privacy.clipped_count_stddev=1.0"),
    ("privacy.mechanism='distributed'", "secure.kind='masking'", "secure.clip=2.0"),
    ("privacy.mechanism='distributed'", "privacy.noise='skellam'", "secure.kind='masking'",
     "secure.clip=2.0"),
])
def test_secure_noise_differs_between_runs_and_seeded_noise_does_not(mechanism):
    """Seeded runs agree up to masking's own stochastic rounding (its fixed-point steps,
    about 1e-8 here); secure runs differ by the noise."""
    seeded = [_run(*mechanism)[2].weights for _ in range(2)]
    assert float((seeded[0] - seeded[1]).abs().max()) < 1e-5
    secure = [_run(*mechanism, "privacy.secure_mode=true")[2].weights for _ in range(2)]
    assert float((secure[0] - secure[1]).abs().max()) > 1e-2
    assert float((secure[0] - seeded[0]).abs().max()) > 1e-2


def test_results_say_when_the_noise_is_reproducible():
    seeded = _run("privacy.mechanism='central'")[2].history.rounds[-1].extra
    secure = _run("privacy.mechanism='central'", "privacy.secure_mode=true")[2]
    assert seeded["noise"] == "noise reproducible from the config"
    assert secure.history.rounds[-1].extra["noise"] == "secure"


# ------------------------------------------------------------- the stages, driven by hand
_UPDATES = {c: torch.linspace(-0.02, 0.02, 200) * (c + 1) for c in range(3)}
"""Three clients' updates (norms below S = 0.7, so clipping leaves them unchanged)."""


@pytest.mark.parametrize(("secure", "recovered"), [(False, True), (True, False)])
def test_the_central_stage_draws_round_r_from_the_central_stream(secure, recovered):
    """Whoever holds the seed regenerates round 1's central noise from
    ``(central stream, 1)`` and recovers the clipped sum, unless the noise is secure."""
    pipeline, policy = central(NoisePolicy(secure, seed=7), noise_multiplier=1.0)
    step = release(pipeline, 8.0, 1, _UPDATES)
    noise = NoisePolicy(False, seed=7).source(_CENTRAL_NOISE_STREAM, 1).normal(0.7, 200)
    error = float((step * 8.0 - noise - sum(_UPDATES.values())).std())
    assert error < 1e-5 if recovered else error > 0.5 * 0.7
    assert policy.metrics()["noise"] == ("secure" if secure
                                         else "noise reproducible from the config")


@pytest.mark.parametrize(("secure", "recovered"), [(False, True), (True, False)])
def test_client_c_draws_its_round_r_share_from_the_client_stream(secure, recovered):
    """The server holding the seed removes every share ``(client stream, r, c)`` from the
    decoded sum, unless the noise is secure."""
    pipeline, _ = distributed(3, 200, NoisePolicy(secure, seed=7), noise_multiplier=1.0)
    step = release(pipeline, 8.0, 2, _UPDATES)
    shares = sum(NoisePolicy(False, seed=7).source(_CLIENT_NOISE_STREAM, 2, c).normal(
        0.7 / math.sqrt(3), 200) for c in _UPDATES)
    error = float((step * 8.0 - shares - sum(_UPDATES.values())).std())
    assert error < 1e-5 if recovered else error > 0.5 * 0.7


def test_secure_sources_are_fresh_and_match_the_distributions():
    a, b = SecureNoise(), SecureNoise()
    draws = a.normal(2.0, 20_000)
    assert draws.dtype == torch.float32
    assert not torch.equal(draws, b.normal(2.0, 20_000))
    assert float(draws.std()) == pytest.approx(2.0, rel=0.03)
    kept = a.subsample(10_000, 0.3)
    assert kept.dtype == torch.int64 and abs(len(kept) / 10_000 - 0.3) < 0.02
    assert float(np.var(a.skellam(50.0, 20_000))) == pytest.approx(100.0, rel=0.05)


def test_seeded_subsampling_is_what_opacus_draws():
    """The seeded batch sampler draws exactly Opacus's UniformWithReplacementSampler."""
    from opacus.utils.uniform_sampler import UniformWithReplacementSampler

    ours = SeededNoise(generator=torch.Generator().manual_seed(5))
    opacus = UniformWithReplacementSampler(num_samples=50, sample_rate=0.2,
                                           generator=torch.Generator().manual_seed(5))
    for batch in opacus:
        assert ours.subsample(50, 0.2).tolist() == list(batch)
