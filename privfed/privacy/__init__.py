"""Differential privacy for federated learning.

Local record-level DP-SGD through Opacus (:class:`DPClient`, :class:`LocalDP`), central
and distributed user-level DP-FedAvg (:class:`CentralDP`, :class:`DistributedDP`, with
adaptive clipping), and accounting over Opacus's accountants. :func:`build_privacy` builds
the configured mechanism.
"""

from privfed.privacy.accounting import (
    adaptive_update_noise,
    calibrate_noise,
    make_accountant,
    spent_epsilon,
    user_level_epsilon,
)
from privfed.privacy.central import CentralDP
from privfed.privacy.distributed import DistributedDP, default_min_surviving
from privfed.privacy.factory import build_privacy, check_model
from privfed.privacy.local import (
    DPClient,
    DPWorkspace,
    LocalDP,
    local_sample_rate,
    local_steps_per_round,
)
from privfed.privacy.settings import ACCOUNTANTS, MECHANISMS, NOISES, PrivacyConfig
from privfed.privacy.skellam import SkellamAccountant
from privfed.privacy.user_level import AdaptiveClipping, UserLevelDP, clip_to_norm

__all__ = [
    "ACCOUNTANTS",
    "AdaptiveClipping",
    "CentralDP",
    "DPClient",
    "DPWorkspace",
    "DistributedDP",
    "LocalDP",
    "MECHANISMS",
    "NOISES",
    "PrivacyConfig",
    "SkellamAccountant",
    "UserLevelDP",
    "adaptive_update_noise",
    "build_privacy",
    "calibrate_noise",
    "check_model",
    "clip_to_norm",
    "default_min_surviving",
    "local_sample_rate",
    "local_steps_per_round",
    "make_accountant",
    "spent_epsilon",
    "user_level_epsilon",
]
