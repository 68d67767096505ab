"""Differential privacy for federated learning.

Local record-level DP-SGD through Opacus (:class:`DPClient`, :class:`LocalDP`), central
and distributed user-level DP-FedAvg (:class:`CentralDP`, :class:`DistributedDP`, with
adaptive clipping), accounting (dp-accounting's PLD, Opacus's PRV and RDP) with per-client
participation ledgers and budgets, and the mechanisms' noise sources (secure, or seeded
from the config). :func:`build_privacy` builds the configured mechanism.
"""

import importlib
from typing import Any

_EXPORTS = {
    "accounting": ("GaussianEvent", "adaptive_update_noise", "calibrate", "calibrate_noise",
                   "gaussian_epsilon", "replace_one_epsilon"),
    "central": ("CentralDP",),
    "csprng": ("ChaChaRandom",),
    "distributed": ("DistributedDP", "default_min_surviving"),
    "factory": ("build_privacy", "check_model"),
    "ledger": ("ParticipationLedger", "planned_participations"),
    "local": ("DPClient", "DPSGDParams", "DPWorkspace", "LocalDP", "default_sample_rate",
              "local_steps_per_round"),
    "randomness": ("NoisePolicy", "REPRODUCIBLE_NOISE", "SecureNoise", "SeededNoise"),
    "settings": ("ACCOUNTANTS", "MECHANISMS", "NOISES", "PrivacyConfig"),
    "skellam": ("skellam_epsilon",),
    "user_level": ("AdaptiveClipping", "UserLevelDP", "clip_to_norm"),
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
