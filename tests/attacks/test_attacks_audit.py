"""Canary audit: the one-run lower bound is sound under DP and large without it."""

import dataclasses
import math

import numpy as np
import pytest
from scipy.stats import binom

import attacks.audit as audit_module
from attacks.audit import CanaryAudit, canary_audit, epsilon_lower_bound, format_confidence
from attacks.report import leakage_rows
from privfed.config import load_config
from privfed.data import load_dataset

SMALL = ["data.num_clients=4", "model.hidden=[64]", "federation.local_epochs=2"]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _audit(digits, overrides):
    return canary_audit(load_config(overrides=SMALL + overrides), digits.x_train[:400],
                        digits.y_train[:400], test=(digits.x_test, digits.y_test),
                        num_classes=10, num_canaries=200)


def test_bound_is_zero_for_random_guesses():
    rng = np.random.default_rng(0)
    included = rng.random(1000) < 0.5
    assert epsilon_lower_bound(rng.random(1000), included)["epsilon_lower"] < 0.3


def test_bound_for_perfect_guesses_is_the_binomial_tail():
    included = np.r_[np.ones(100, bool), np.zeros(100, bool)]
    bound = epsilon_lower_bound(included.astype(float), included)
    r = bound["guesses"]
    assert bound["correct"] == r == 200
    # All r guesses right: P[Bin(r, p)] = p^r = beta / (number of splits tried).
    p = 1 / (1 + math.exp(-bound["epsilon_lower"]))
    assert binom.sf(r - 1, r, p) == pytest.approx(0.05 / 5, rel=1e-3)
    assert bound["epsilon_lower"] > 3
    # Delta spends confidence: the bound shrinks.
    assert epsilon_lower_bound(included.astype(float), included, delta=1e-4)[
        "epsilon_lower"] < bound["epsilon_lower"]
    vacuous = epsilon_lower_bound(included.astype(float), included, delta=1e-3)
    assert vacuous["epsilon_lower"] == 0.0 and "vacuous" in vacuous["note"]


@pytest.fixture(scope="module")
def non_private(digits):
    return _audit(digits, ["federation.rounds=20"])


def test_non_private_run_leaks_more_than_epsilon_one(non_private):
    summary = non_private.summary()
    assert summary["epsilon_lower"] > 1.0
    assert summary["epsilon_theory"] == math.inf and not summary["violation"]


@pytest.mark.slow
def test_bound_is_sound_under_local_dp(digits):
    audit = _audit(digits, ["federation.rounds=10", "privacy.mechanism=local",
                            "privacy.epsilon=2.0", "privacy.delta=1e-4"])
    assert audit.epsilon_theory == pytest.approx(2.0, abs=0.1)
    assert audit.bound["epsilon_lower"] <= audit.epsilon_theory
    assert not audit.violation


def test_violation_is_flagged_loudly(non_private):
    claimed = dataclasses.replace(non_private, epsilon_theory=0.5)  # an accountant's bug
    summary = claimed.summary()
    assert summary["violation"] and "LIKELY DP BUG" in summary["warning"]


def _small_audit(beta, epsilon_theory=0.5):
    included = np.r_[np.ones(50, bool), np.zeros(50, bool)]
    scores = included.astype(float)  # perfect guesses: a bound far above 0.5
    bound = epsilon_lower_bound(scores, included, beta=beta)
    return CanaryAudit(None, included, scores, bound, epsilon_theory, beta=beta)


def test_summary_reports_the_confidence_it_used():
    summary = _small_audit(beta=0.1).summary()
    assert summary["confidence"] == pytest.approx(0.9)
    assert summary["violation"]
    assert "at 90% confidence" in summary["warning"] and "95%" not in summary["warning"]
    default = _small_audit(beta=0.05).summary()
    assert default["confidence"] == pytest.approx(0.95)
    assert "at 95% confidence" in default["warning"]


def test_leakage_table_prints_the_audits_confidence():
    not_attacked = {"status": "not applicable", "reason": "opaque"}
    mia = {"auc": 0.5, "tpr_at_0.1%_fpr": 0.0, "tpr_at_1%_fpr": 0.01, "advantage": 0.0}
    report = {
        "membership": {"outsider": dict.fromkeys(("loss", "lira_offline", "lira_online"), mia),
                       "server_client_update": not_attacked,
                       "collusion_client_update": not_attacked},
        "inversion": {},
        "epsilon_audit": _small_audit(beta=0.1, epsilon_theory=None).summary(),
    }
    (text,) = [t for _, attack, t in leakage_rows(report) if "canary audit" in attack]
    assert "(90%) vs eps inf" in text and "95%" not in text


def test_format_confidence():
    assert format_confidence(0.95) == "95%"
    assert format_confidence(1 - 0.1) == "90%"
    assert format_confidence(0.999) == "99.9%"


def test_canary_audit_records_its_beta(monkeypatch):
    # Training is beside the point: a federation whose model predicts uniform logits.
    monkeypatch.setattr(audit_module, "train_federation", lambda *args, **kwargs: None)
    monkeypatch.setattr(audit_module, "predict_logits",
                        lambda _fed, x: np.zeros((len(x), 3)))
    x, y = np.random.default_rng(0).normal(size=(20, 4)), np.zeros(20, np.int64)
    audit = canary_audit(load_config(), x, y, test=(x, y), num_classes=3, num_canaries=40,
                         beta=0.2)
    assert audit.beta == 0.2
    assert audit.summary()["confidence"] == pytest.approx(0.8)


def test_user_level_audit_compares_with_the_epsilon_for_changing_one_client(digits):
    """Every canary sits in client 0: under user-level DP the bound must be compared with
    the epsilon for changing that client's data (replace-one), not with the add/remove-one
    user-level epsilon (fault 8)."""
    from privfed.privacy import replace_one_epsilon

    audit = _audit(digits, ["federation.rounds=3", "privacy.mechanism=central",
                            "privacy.noise_multiplier=2.0", "privacy.clip_norm=0.5"])
    headline = audit.federation.epsilon
    theory = audit.summary()["epsilon_theory"]
    assert theory == pytest.approx(replace_one_epsilon(2.0, 1.0, 3, 1e-5), rel=1e-9)
    assert theory > headline
    assert not audit.summary()["violation"]
