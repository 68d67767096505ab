"""Metrics: agreement with scikit-learn, and image quality measures on known values."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from attacks.metrics import advantage, mse, psnr, roc_auc, roc_curve, ssim, tpr_at_fpr


@pytest.fixture
def scores():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=500)
    values = rng.normal(size=500) + 0.8 * labels
    values[:100] = np.round(values[:100], 1)  # ties
    return labels, values


def test_roc_matches_sklearn(scores):
    labels, values = scores
    fpr, tpr = roc_curve(labels, values)
    sk_fpr, sk_tpr, _ = sk_roc_curve(labels, values, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    assert roc_auc(labels, values) == pytest.approx(roc_auc_score(labels, values), abs=1e-12)


def test_tpr_at_fpr_and_advantage_match_sklearn_curve(scores):
    labels, values = scores
    sk_fpr, sk_tpr, _ = sk_roc_curve(labels, values)
    for target in (0.001, 0.01, 0.1, 0.5):
        assert tpr_at_fpr(labels, values, target) == pytest.approx(
            sk_tpr[sk_fpr <= target].max())
    assert advantage(labels, values) == pytest.approx(np.max(sk_tpr - sk_fpr))


def test_roc_rejects_one_class():
    with pytest.raises(ValueError, match="member"):
        roc_curve(np.ones(4), np.arange(4.0))


def test_perfect_and_reversed_scores():
    labels = np.array([0, 0, 1, 1])
    assert roc_auc(labels, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert roc_auc(labels, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert tpr_at_fpr(labels, np.array([0.1, 0.2, 0.8, 0.9]), 0.0) == 1.0


def test_mse_and_psnr_known_values():
    a = np.zeros((2, 1, 4, 4))
    b = a.copy()
    b[0] += 0.1
    np.testing.assert_allclose(mse(a, b), [0.01, 0.0])
    assert psnr(a, b)[0] == pytest.approx(20.0)
    assert np.isinf(psnr(a, b)[1])


def test_ssim_known_values():
    rng = np.random.default_rng(1)
    x = rng.random((3, 1, 8, 8))
    np.testing.assert_allclose(ssim(x, x), 1.0)
    # Constant images: SSIM = (2ab + C1) / (a^2 + b^2 + C1), the structure term being 1.
    a, b = np.full((1, 1, 8, 8), 0.5), np.full((1, 1, 8, 8), 0.25)
    c1 = 0.01**2
    assert ssim(a, b)[0] == pytest.approx((2 * 0.5 * 0.25 + c1) / (0.5**2 + 0.25**2 + c1))
    noisy = np.clip(x + rng.normal(scale=0.3, size=x.shape), 0, 1)
    s = ssim(x, noisy)
    assert np.all(s < 0.9) and np.all(s > -1)
    np.testing.assert_allclose(s, ssim(noisy, x))
