"""Membership inference (loss, LiRA, RMIA): succeeds on an overfit model, fails under DP,
ignores secure aggregation."""

import numpy as np
import pytest
from scipy.special import softmax

from attacks.membership import (
    evaluate_membership,
    lira_scores,
    logit_confidence,
    loss_scores,
)
from attacks.membership_experiment import membership_experiment
from privfed.config import load_config
from privfed.data import load_dataset

OVERFIT = ["data.num_clients=2", "federation.rounds=15", "federation.local_epochs=4",
           "model.hidden=[64]", "federation.lr=0.2", "federation.batch_size=8"]
LOCAL_DP = ["data.num_clients=2", "federation.rounds=10", "model.hidden=[64]",
            "privacy.mechanism=local", "privacy.epsilon=1.0", "privacy.delta=1e-3"]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _experiment(digits, overrides, n, refs):
    config = load_config(overrides=overrides)
    return membership_experiment(config, digits.x_train[:n], digits.y_train[:n],
                                 test=(digits.x_test, digits.y_test), num_classes=10,
                                 num_reference=refs)


def test_evaluate_membership_names_the_attack_on_nan_scores():
    labels = np.array([1, 0, 1, 0])
    with pytest.raises(ValueError, match="LiRA offline produced NaN scores for 1 of 4"):
        evaluate_membership(labels, np.array([0.3, np.nan, 0.2, 0.1]), attack="LiRA offline")
    # Members inf, 0.2; non-members inf, 0.1: (1/2 + 1 + 0 + 1) / 4.
    result = evaluate_membership(labels, np.array([np.inf, np.inf, 0.2, 0.1]))
    assert result.metrics["auc"] == pytest.approx(0.625)


def test_scores_match_their_definitions():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 4))
    labels = rng.integers(0, 4, size=5)
    p = softmax(logits, axis=1)[np.arange(5), labels]
    np.testing.assert_allclose(logit_confidence(logits, labels), np.log(p / (1 - p)))
    np.testing.assert_allclose(loss_scores(logits, labels), np.log(p))


def test_lira_separates_synthetic_in_out_distributions():
    rng = np.random.default_rng(0)
    n, r = 400, 16
    member = rng.random(n) < 0.5
    ref_in = np.argsort(rng.random((r, n)), axis=0) < r // 2
    base = rng.normal(size=n) * 3  # per-example difficulty the references learn
    reference = base + 2.0 * ref_in + rng.normal(scale=0.5, size=(r, n))
    target = base + 2.0 * member + rng.normal(scale=0.5, size=n)
    for online in (False, True):
        scores = lira_scores(target, reference, ref_in, online=online)
        assert np.mean(scores[member] > np.median(scores)) > 0.9
    with pytest.raises(ValueError, match="OUT"):
        lira_scores(target, reference, np.ones_like(ref_in), online=False)


@pytest.mark.slow
def test_lira_succeeds_on_an_overfit_federation(digits):
    result = _experiment(digits, OVERFIT, n=400, refs=8).results
    online = result["lira_online"].metrics
    assert online["auc"] >= 0.7
    assert online["tpr_at_1%_fpr"] >= 0.05
    # LiRA's per-example calibration beats the global loss threshold.
    assert online["auc"] > result["loss"].metrics["auc"]


@pytest.mark.slow
def test_lira_fails_under_local_dp_at_epsilon_one(digits):
    experiment = _experiment(digits, LOCAL_DP, n=400, refs=8)
    assert experiment.target.epsilon == pytest.approx(1.0, abs=0.05)
    assert experiment.results["lira_online"].metrics["auc"] <= 0.56


@pytest.mark.slow
def test_rmia_succeeds_on_an_overfit_federation_with_four_reference_models(digits):
    result = _experiment(digits, OVERFIT, n=400, refs=4).results
    loss_auc = result["loss"].metrics["auc"]
    for name in ("rmia_online", "rmia_offline"):
        assert result[name].metrics["auc"] >= 0.7
        assert result[name].metrics["auc"] > loss_auc  # the per-example calibration pays
    assert result["rmia_offline"].metrics["offline_a"] < 1.0  # tuned, memorisation found


@pytest.mark.slow
@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "measured on this target: RMIA with 4 reference models AUC 0.723 online, 0.712 "
    "offline; LiRA online with 16 reference models 0.774 (with 4, 0.724: on this small "
    "MLP few-reference LiRA is not weaker than RMIA)"))
def test_rmia_with_four_references_reaches_lira_with_sixteen(digits):
    four = _experiment(digits, OVERFIT, n=400, refs=4)
    sixteen = _experiment(digits, OVERFIT, n=400, refs=16)
    np.testing.assert_array_equal(four.members, sixteen.members)  # one target
    lira = sixteen.results["lira_online"].metrics["auc"]
    assert four.results["rmia_online"].metrics["auc"] >= lira


@pytest.mark.slow
@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "measured on this target (local DP, epsilon 1.00): RMIA AUC 0.573 online, 0.590 "
    "offline with 8 reference models; the loss threshold reaches 0.589 (all below the "
    "epsilon = 1 bound on any attack's AUC, 0.73)"))
def test_rmia_fails_under_local_dp_at_epsilon_one(digits):
    experiment = _experiment(digits, LOCAL_DP, n=400, refs=8)
    assert experiment.target.epsilon == pytest.approx(1.0, abs=0.05)
    for name in ("rmia_online", "rmia_offline"):
        assert experiment.results[name].metrics["auc"] <= 0.56


@pytest.mark.slow
def test_outsider_view_is_the_same_with_he(digits):
    small = ["data.num_clients=2", "federation.rounds=3", "model.hidden=[16]"]
    plain = _experiment(digits, small, n=200, refs=2).results
    he = _experiment(digits, [*small, "secure.kind=he"], n=200, refs=2).results
    for name in plain:
        assert he[name].metrics["auc"] == pytest.approx(plain[name].metrics["auc"], abs=2e-3)
