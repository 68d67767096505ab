"""Differential privacy for federated learning.

Local record-level DP-SGD through Opacus (:class:`DPClient`, :class:`LocalDP`), central
and distributed user-level DP-FedAvg (:class:`CentralDP`, :class:`DistributedDP`, with
adaptive clipping), and accounting over Opacus's accountants. :func:`build_privacy` builds
the configured mechanism.
"""

import importlib
from typing import Any

_EXPORTS = {
    "accounting": ("adaptive_update_noise", "calibrate_noise", "make_accountant",
                   "spent_epsilon", "user_level_epsilon"),
    "central": ("CentralDP",),
    "distributed": ("DistributedDP", "default_min_surviving"),
    "factory": ("build_privacy", "check_model"),
    "local": ("DPClient", "DPWorkspace", "LocalDP", "local_sample_rate",
              "local_steps_per_round"),
    "settings": ("ACCOUNTANTS", "MECHANISMS", "NOISES", "PrivacyConfig"),
    "skellam": ("SkellamAccountant",),
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
