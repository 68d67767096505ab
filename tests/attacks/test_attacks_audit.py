"""Canary audit: the one-run lower bound is sound under DP and large without it."""

import dataclasses
import math

import numpy as np
import pytest
from scipy.stats import binom

from attacks.audit import canary_audit, epsilon_lower_bound
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
