"""Leakage measurement for privfed: what could each party of a federation learn?

Attacks subscribe to the round loop's observers (:mod:`attacks.views`) and see exactly what
their party would see. ``privfed`` never imports this package.

Public entry points
-------------------
run_audit
    Every attack that applies to a configuration, sized by its ``[audit]`` section; writes
    ``leakage.json`` and plots.
membership_experiment, inversion_experiment, canary_audit
    The three attack families on their own.
applicable_attacks
    Per view, whether it reveals anything under a configuration, and why.
"""

from attacks.audit import CanaryAudit, canary_audit, epsilon_lower_bound
from attacks.inversion import dlg, invert, inverting_gradients, recover_label
from attacks.inversion_experiment import InversionOutcome, inversion_experiment
from attacks.membership import (
    MembershipResult,
    lira_scores,
    loss_scores,
    update_alignment_scores,
)
from attacks.membership_experiment import MembershipExperiment, membership_experiment
from attacks.metrics import match_reconstructions
from attacks.report import format_table
from attacks.rmia import rmia_scores, tune_offline_a
from attacks.runner import run_audit
from attacks.views import (
    CollusionView,
    OutsiderView,
    ServerView,
    UploadReader,
    applicable_attacks,
)

__all__ = [
    "CanaryAudit",
    "CollusionView",
    "InversionOutcome",
    "MembershipExperiment",
    "MembershipResult",
    "OutsiderView",
    "ServerView",
    "UploadReader",
    "applicable_attacks",
    "canary_audit",
    "dlg",
    "epsilon_lower_bound",
    "format_table",
    "inversion_experiment",
    "invert",
    "inverting_gradients",
    "lira_scores",
    "loss_scores",
    "match_reconstructions",
    "membership_experiment",
    "recover_label",
    "rmia_scores",
    "run_audit",
    "tune_offline_a",
    "update_alignment_scores",
]
