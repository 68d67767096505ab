"""build_privacy: which trainer, stages, policy and weighting each mechanism puts in."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from privfed.config.privacy import PrivacyConfig
from privfed.federated import LocalTraining
from privfed.federated.policy import ParticipationPolicy
from privfed.federated.trainer import SGDTrainer
from privfed.federated.weighting import SampleWeighting, UniformWeighting
from privfed.privacy import (
    DistributedPolicy,
    RecordLevelPolicy,
    UserLevelPolicy,
    build_privacy,
)
from tests.privacy._helpers import SEEDED

TRAINING = LocalTraining(epochs=2, batch_size=8, lr=0.1)


def _parts(rate: float = 0.25, poisson: bool = True, **config):
    module = torch.nn.Linear(6, 3)
    return build_privacy(PrivacyConfig(**config), num_clients=20, sample_rate=rate,
                         poisson=poisson, num_params=21, rounds=10, training=TRAINING,
                         noise=SEEDED, reference_size=40, module=module)


def test_no_mechanism_is_plain_fedavg():
    parts = _parts()
    assert isinstance(parts.trainer, SGDTrainer) and parts.trainer.training == TRAINING
    assert parts.stages == ()
    assert type(parts.policy) is ParticipationPolicy
    assert isinstance(parts.weighting, SampleWeighting) and parts.weighting.weight(7) == 7.0


def test_local_dp_trains_with_dp_sgd_and_weighs_every_client_one():
    from privfed.privacy import DPSGDTrainer

    parts = _parts(mechanism="local", noise_multiplier=1.0)
    assert isinstance(parts.trainer, DPSGDTrainer) and parts.stages == ()
    assert isinstance(parts.policy, RecordLevelPolicy)
    assert parts.trainer.params is parts.policy.params
    assert parts.trainer.params.sample_rate == 8 / 40  # B / n_ref
    assert parts.trainer.params.steps_per_round == 2 * 5
    assert isinstance(parts.weighting, UniformWeighting) and parts.weighting.denominator is None


@pytest.mark.parametrize(("mechanism", "noise_stage", "policy"), [
    ("central", "central_noise", UserLevelPolicy),
    ("distributed", "distributed_noise", DistributedPolicy),
])
def test_user_level_dp_clips_then_noises_and_divides_by_the_expected_cohort(
        mechanism, noise_stage, policy):
    parts = _parts(mechanism=mechanism, noise_multiplier=1.0, clip_norm=0.5,
                   adaptive_clipping=True, clipped_count_stddev=1.0)
    assert isinstance(parts.trainer, SGDTrainer)
    clip, noise = parts.stages
    assert (clip.name, noise.name) == ("clip", noise_stage)
    assert noise.clip is clip and clip.clip_norm == 0.5
    assert clip.expected_clients == parts.weighting.denominator == 0.25 * 20
    assert parts.weighting.weight(7) == 1.0
    assert type(parts.policy) is policy and parts.policy.noise_multiplier == 1.0
    assert not parts.policy.releases_statistics


def test_distributed_k_min_is_the_policys_and_the_stages():
    parts = _parts(mechanism="distributed", noise_multiplier=1.0, rate=1.0, poisson=False)
    assert parts.policy.min_cohort == parts.stages[1].min_surviving_clients == 20
    parts = _parts(mechanism="distributed", noise_multiplier=1.0, min_surviving_clients=3)
    assert parts.policy.min_cohort == parts.stages[1].min_surviving_clients == 3


def test_adaptive_count_noise_that_spends_the_budget_is_refused():
    with pytest.raises(ValueError, match=r"clipped_count_stddev must be > noise_multiplier / 2"):
        _parts(mechanism="central", noise_multiplier=1.0, adaptive_clipping=True,
               clipped_count_stddev=0.5)


def test_a_target_out_of_reach_is_refused_with_the_settings():
    with pytest.raises(ValueError, match=r"privacy\.epsilon = 0\.0001 cannot be reached"):
        _parts(mechanism="distributed", epsilon=1e-4, noise="skellam", rate=1.0,
               poisson=False)


def test_user_level_delta_above_one_over_k_warns():
    with pytest.warns(UserWarning, match=r"privacy\.delta = 0\.1 >= 1/K") as caught:
        _parts(mechanism="central", noise_multiplier=1.0, delta=0.1)
    assert caught[0].filename == __file__


_IMPORTS = """
import sys
import privfed.privacy
from privfed.config.privacy import PrivacyConfig
from privfed.privacy import ClipStage, DistributedPolicy, build_privacy
from tests.privacy._helpers import SEEDED
from privfed.federated import LocalTraining
import torch
for mechanism in ("none", "central", "distributed"):
    build_privacy(PrivacyConfig(mechanism=mechanism,
                                noise_multiplier=None if mechanism == "none" else 1.0),
                  num_clients=4, sample_rate=1.0, poisson=False, num_params=3, rounds=2,
                  training=LocalTraining(), noise=SEEDED, reference_size=4,
                  module=torch.nn.Linear(2, 1))
print(sorted(m for m in ("opacus", "tenseal", "cryptography", "Crypto") if m in sys.modules))
"""


def test_only_local_dp_imports_opacus_and_no_mechanism_the_crypto_packages():
    out = subprocess.run([sys.executable, "-c", _IMPORTS], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parents[2])
    assert out.stdout.strip() == "[]"
