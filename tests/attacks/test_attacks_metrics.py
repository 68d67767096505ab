"""Metrics: agreement with scikit-learn, and image quality measures on known values."""

import numpy as np
import pytest
from scipy.stats import mannwhitneyu
from skimage.metrics import structural_similarity
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from attacks.metrics import (
    advantage,
    match_reconstructions,
    mse,
    psnr,
    roc_auc,
    roc_curve,
    ssim,
    tpr_at_fpr,
)


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


def _rank_auc(labels, values):
    """Mann-Whitney U / (P * N), average ranks: ties (infinities included) count one half."""
    labels = np.asarray(labels, bool)
    u = mannwhitneyu(values[labels], values[~labels]).statistic
    return u / (labels.sum() * (~labels).sum())


# 6 members, 3 non-members; two members tie with two non-members at +inf:
# U = 10 tied pairs * 1/2 + 5 (members at inf above -2) + 1 (member at 0 above -2) = 11.
INF_TIES_LABELS = np.r_[np.ones(6, int), np.zeros(3, int)]
INF_TIES_SCORES = np.array([np.inf] * 5 + [0.0] + [np.inf, np.inf, -2.0])


def test_auc_with_tied_infinities_does_not_depend_on_order():
    rng = np.random.default_rng(0)
    assert _rank_auc(INF_TIES_LABELS, INF_TIES_SCORES) == pytest.approx(11 / 18)
    aucs = [roc_auc(INF_TIES_LABELS, INF_TIES_SCORES),
            roc_auc(INF_TIES_LABELS[::-1], INF_TIES_SCORES[::-1])]
    for _ in range(30):
        p = rng.permutation(len(INF_TIES_LABELS))
        aucs.append(roc_auc(INF_TIES_LABELS[p], INF_TIES_SCORES[p]))
    np.testing.assert_allclose(aucs, 11 / 18, rtol=0, atol=1e-12)


def test_tied_infinities_form_one_roc_point():
    fpr, tpr = roc_curve(INF_TIES_LABELS, INF_TIES_SCORES)
    # Thresholds: +inf (5 members, 2 non-members), 0, -2.
    np.testing.assert_allclose(fpr, [0, 2 / 3, 2 / 3, 1])
    np.testing.assert_allclose(tpr, [0, 5 / 6, 1, 1])


def test_tied_negative_infinities_count_one_half():
    labels = np.array([1, 1, 1, 0, 0, 0, 1, 0])
    values = np.array([3.0, -np.inf, -np.inf, -np.inf, -np.inf, -np.inf, 1.0, 2.0])
    expected = _rank_auc(labels, values)
    # 3 > all negatives (4), 1 > three -inf (3), each -inf member ties 3 -inf non-members.
    assert expected == pytest.approx((4 + 3 + 2 * 3 * 0.5) / 16)
    rng = np.random.default_rng(1)
    for _ in range(20):
        p = rng.permutation(len(labels))
        assert roc_auc(labels[p], values[p]) == pytest.approx(expected, abs=1e-12)


def test_mixture_of_finite_and_infinite_scores_matches_ranks(scores):
    labels, values = scores
    values = values.copy()
    values[100:140] = np.inf
    values[140:170] = -np.inf
    expected = _rank_auc(labels, values)
    rng = np.random.default_rng(2)
    for _ in range(5):
        p = rng.permutation(len(labels))
        assert roc_auc(labels[p], values[p]) == pytest.approx(expected, abs=1e-12)
    # The same ranking with finite stand-ins for the infinities: sklearn agrees.
    finite = np.clip(values, -1e6, 1e6)
    assert roc_auc(labels, values) == pytest.approx(roc_auc_score(labels, finite), abs=1e-12)
    sk_fpr, sk_tpr, _ = sk_roc_curve(labels, finite)
    assert advantage(labels, values) == pytest.approx(np.max(sk_tpr - sk_fpr))
    assert tpr_at_fpr(labels, values, 0.1) == pytest.approx(sk_tpr[sk_fpr <= 0.1].max())


def test_tpr_at_fpr_and_advantage_with_tied_infinities():
    rng = np.random.default_rng(3)
    for _ in range(10):
        p = rng.permutation(len(INF_TIES_LABELS))
        labels, values = INF_TIES_LABELS[p], INF_TIES_SCORES[p]
        # The +inf tie cannot be split: any threshold taking a member at +inf also takes
        # both non-members at +inf, so no threshold has 0 < FPR < 2/3.
        assert tpr_at_fpr(labels, values, 0.5) == 0.0
        assert tpr_at_fpr(labels, values, 2 / 3) == pytest.approx(1.0)
        assert advantage(labels, values) == pytest.approx(1 - 2 / 3)


@pytest.mark.parametrize("metric", [roc_curve, roc_auc, advantage,
                                    lambda lab, val, **kw: tpr_at_fpr(lab, val, 0.01, **kw)])
def test_nan_scores_raise_naming_the_attack(metric):
    labels = np.r_[np.ones(100, int), np.zeros(100, int)]
    values = np.linspace(0, 1, 200)
    values[[3, 50, 170]] = np.nan
    with pytest.raises(ValueError, match=r"LiRA online produced NaN scores for 3 of 200"):
        metric(labels, values, attack="LiRA online")
    with pytest.raises(ValueError, match="membership attack produced NaN"):
        metric(labels, values)


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


def test_ssim_is_scikit_images_on_a_known_pair():
    rng = np.random.default_rng(2)
    x = rng.random((2, 3, 16, 12))
    y = np.clip(x + rng.normal(scale=0.1, size=x.shape), 0, 1)
    expected = [structural_similarity(x[i], y[i], data_range=1.0, gaussian_weights=True,
                                      sigma=1.5, win_size=7, channel_axis=0,
                                      use_sample_covariance=True) for i in range(2)]
    np.testing.assert_allclose(ssim(x, y), expected, rtol=1e-12)
    # A flat feature vector (N, C, 1, W) is scored as a 1-D signal, window 7.
    v, w = x[:, :1, :1, :], y[:, :1, :1, :]
    flat = [structural_similarity(v[i, 0, 0], w[i, 0, 0], data_range=1.0,
                                  gaussian_weights=True, sigma=1.5, win_size=7)
            for i in range(2)]
    np.testing.assert_allclose(ssim(v, w), flat, rtol=1e-12)
    with pytest.raises(ValueError, match="at least 3 pixels"):
        ssim(x[:, :, :2], y[:, :, :2])


@pytest.fixture
def batch():
    """Four distinct 8x8 images in [0, 1] and a different noise image for each."""
    rng = np.random.default_rng(3)
    return rng.random((4, 1, 8, 8)), rng.random((4, 1, 8, 8))


def test_matched_score_of_a_permuted_perfect_reconstruction_is_perfect(batch):
    x, _ = batch
    permuted = x[[2, 0, 3, 1]]
    pairs = match_reconstructions(x, permuted)
    np.testing.assert_array_equal(pairs.original, [0, 1, 2, 3])
    np.testing.assert_array_equal(pairs.reconstruction, [1, 3, 0, 2])
    assert np.all(np.isinf(pairs.psnr))
    np.testing.assert_allclose(pairs.ssim, 1.0)
    # Scored in the attack's order, the same reconstruction looks like a failure.
    assert np.all(np.isfinite(psnr(x, permuted))) and np.all(ssim(x, permuted) < 0.5)


def test_matched_score_of_half_the_batch_lies_between(batch):
    x, noise = batch
    half = np.concatenate([noise[:2], x[[3, 1]]])  # two recovered, two failures
    pairs = match_reconstructions(x, half)
    assert np.sum(np.isinf(pairs.psnr)) == 2 and np.sum(np.isclose(pairs.ssim, 1.0)) == 2
    none = match_reconstructions(x, noise)
    assert np.mean(none.ssim) < np.mean(pairs.ssim) < 1.0
    finite = np.minimum(pairs.psnr, 100.0)
    assert np.mean(np.minimum(none.psnr, 100.0)) < np.mean(finite) < 100.0
    # Fewer reconstructions than originals: each paired with its own original.
    two = match_reconstructions(x, x[[3, 1]])
    np.testing.assert_array_equal(two.original, [1, 3])
    assert np.all(np.isinf(two.psnr))


def test_matching_is_one_to_one(batch):
    x, _ = batch
    # Both reconstructions are nearest to x[0]; the assignment credits it only once.
    near = np.stack([x[0], np.clip(x[0] + 0.01, 0, 1)])
    pairs = match_reconstructions(x, near)
    assert len(set(pairs.original.tolist())) == 2
    assert np.isinf(pairs.psnr).sum() == 1
    with pytest.raises(ValueError, match="one image shape"):
        match_reconstructions(x, x[:, :, :4])
