"""Differential privacy for federated learning.

Local record-level DP-SGD, clipped in closed form or through Opacus (:class:`DPSGDTrainer`,
accounted per client by :class:`RecordLevelPolicy`); central and distributed user-level
DP-FedAvg as update stages (:class:`ClipStage` with adaptive clipping,
:class:`CentralNoiseStage`, :class:`DistributedNoiseStage`) accounted by
:class:`UserLevelPolicy` and :class:`DistributedPolicy`; user-level DP-FTRL with tree
or banded matrix-factorisation noise for unsampled federations (:class:`TreeNoiseStage`,
:class:`BandedNoiseStage`, :class:`FTRLPolicy`); accounting (dp-accounting's PLD, Opacus's
PRV and RDP) with per-client participation ledgers and budgets, crediting how clients take
part (:class:`Participation`: Poisson, fixed-size cohorts, cyclic groups); and the
mechanisms' noise sources (secure, or seeded from the config). :func:`build_privacy` builds
the configured mechanism's parts.

Names are imported on first use, so importing this package loads neither Opacus nor the
crypto packages.
"""

import importlib
from typing import Any

_EXPORTS = {
    "accounting": ("GaussianEvent", "adaptive_update_noise", "calibrate", "calibrate_noise",
                   "gaussian_epsilon", "replace_one_epsilon"),
    "central": ("CentralNoiseStage",),
    "clipping": ("AdaptiveClipping", "ClipStage", "clip_to_norm", "update_noise_multiplier"),
    "csprng": ("ChaChaRandom",),
    "distributed": ("DistributedNoiseStage", "default_min_surviving", "skellam_step"),
    "dpsgd": ("DPSGDParams", "default_sample_rate", "local_steps_per_round"),
    "factory": ("PrivacyParts", "build_privacy"),
    "ftrl": ("FTRLPolicy", "TreeNoiseStage", "calibrate_ftrl_noise", "ftrl_epsilon",
             "tree_sensitivity"),
    "banded": ("BandedNoiseStage", "banded_sensitivity", "sqrt_coefficients"),
    "modules": ("check_dp_module", "unsupported_layers"),
    "ledger": ("ParticipationLedger", "planned_participations"),
    "participation": ("Participation",),
    "policies": ("DistributedPolicy", "RecordLevelPolicy", "UserLevelPolicy"),
    "randomness": ("NoisePolicy", "REPRODUCIBLE_NOISE", "SecureNoise", "SeededNoise"),
    "skellam": ("skellam_epsilon",),
    "trainer": ("DPSGDTrainer", "DPWorkspace"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str) -> Any:
    """Import the submodule that defines ``name`` on first use (Opacus loads only when a
    mechanism needs it)."""
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
    globals()[name] = value
    return value


__all__ = sorted(_MODULE_OF)
