"""RMIA's score on hand-made inputs: its definition, the offline approximation, its tuning."""

import numpy as np
import pytest

from attacks.rmia import offline_marginal, rmia_scores, tune_offline_a


def test_offline_marginal_is_the_papers_linear_approximation():
    # Pr(x) = ((1 + a) Pr_OUT(x) + (1 - a)) / 2: a = 0.5, Pr_OUT = 0.4 -> (0.6 + 0.5) / 2.
    assert offline_marginal(np.array([0.4]), 0.5)[0] == pytest.approx(0.55)
    np.testing.assert_allclose(offline_marginal(np.array([0.2, 0.9]), 1.0), [0.2, 0.9])
    np.testing.assert_allclose(offline_marginal(np.array([0.2, 0.9]), 0.0), [0.6, 0.95])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        offline_marginal(np.array([0.5]), 1.5)


def test_score_is_the_fraction_of_population_samples_dominated():
    # One candidate, one OUT reference model, three population samples; a = 0.5.
    # Pr(x) = (1.5 * 0.4 + 0.5) / 2 = 0.55 and Pr(x|theta) = 0.88: ratio 1.6.
    # Pr(z) = (1.5 * 0.6 + 0.5) / 2 = 0.7; Pr(z|theta) = 0.35, 0.7, 1.0: ratios 0.5, 1, 10/7.
    # LR(x, z) = 3.2, 1.6, 1.12: all >= 1, two of three >= 1.5, none >= 4.
    args = (np.array([0.88]), np.array([[0.4]]), np.array([[False]]),
            np.array([0.35, 0.7, 1.0]), np.array([[0.6, 0.6, 0.6]]))
    for gamma, expected in ((1.0, 1.0), (1.5, 2 / 3), (4.0, 0.0)):
        score = rmia_scores(*args, online=False, offline_a=0.5, gamma=gamma)
        assert score[0] == pytest.approx(expected)


def test_a_member_with_high_probability_scores_above_a_non_member():
    # Two candidates the reference models find equally easy; the target is confident only
    # on the first (a member).
    reference = np.array([[0.9, 0.9], [0.5, 0.5], [0.9, 0.9], [0.5, 0.5]])
    reference_in = np.array([[True, True], [False, False], [True, True], [False, False]])
    population = np.linspace(0.2, 0.9, 8)
    ref_population = np.tile(np.linspace(0.3, 0.8, 8), (4, 1))
    for online in (True, False):
        score = rmia_scores(np.array([0.99, 0.6]), reference, reference_in, population,
                            ref_population, online=online, offline_a=0.3)
        assert score[0] > score[1]
    # A candidate every reference model finds easy is less suspicious at equal confidence.
    easy = rmia_scores(np.array([0.95, 0.95]), np.array([[0.95, 0.5]] * 4), reference_in,
                       population, ref_population, online=True)
    assert easy[0] < easy[1]


def test_online_and_offline_agree_for_out_references_and_a_equal_one():
    # With a = 1, Pr(x) = Pr_OUT(x); with every reference OUT the online mean is Pr_OUT too.
    rng = np.random.default_rng(0)
    target, reference = rng.random(50), rng.random((6, 50))
    population, ref_population = rng.random(30), rng.random((6, 30))
    out = np.zeros((6, 50), dtype=bool)
    online = rmia_scores(target, reference, out, population, ref_population, online=True)
    offline = rmia_scores(target, reference, out, population, ref_population, online=False,
                          offline_a=1.0)
    np.testing.assert_array_equal(online, offline)
    # Bruteforce: the fraction of z with LR(x, z) >= 1.
    ratio_x, ratio_z = target / reference.mean(0), population / ref_population.mean(0)
    np.testing.assert_allclose(online, (ratio_x[:, None] / ratio_z[None, :] >= 1).mean(1))


def test_bad_inputs_are_refused():
    p, ref, ref_in = np.array([0.5]), np.array([[0.5]]), np.array([[True]])
    pop, ref_pop = np.array([0.5]), np.array([[0.5]])
    with pytest.raises(ValueError, match="OUT reference model"):
        rmia_scores(p, ref, ref_in, pop, ref_pop, online=False)
    with pytest.raises(ValueError, match="probabilities"):
        rmia_scores(np.array([1.5]), ref, ref_in, pop, ref_pop, online=True)
    with pytest.raises(ValueError, match="gamma"):
        rmia_scores(p, ref, ref_in, pop, ref_pop, online=True, gamma=0.0)
    with pytest.raises(ValueError, match=r"\(R, Z\)"):
        rmia_scores(p, ref, ref_in, pop, np.array([[0.5], [0.5]]), online=True)


@pytest.mark.parametrize("true_a", [0.6, 0.9])
def test_tuning_finds_the_a_that_generated_the_in_models(true_a):
    # Reference models whose IN probability is true_a * Pr_OUT + (1 - true_a), plus noise:
    # attacking reference 0 with the others is best near true_a.
    rng = np.random.default_rng(1)
    r, n = 8, 400
    reference_in = np.argsort(rng.random((r, n)), axis=0) < r // 2
    difficulty = rng.uniform(0.05, 0.95, size=n)
    out = np.clip(difficulty + rng.normal(scale=0.03, size=(r, n)), 0.01, 0.99)
    inside = np.clip(true_a * difficulty + 1 - true_a + rng.normal(scale=0.03, size=(r, n)),
                     0.01, 1)
    reference = np.where(reference_in, inside, out)
    population = rng.uniform(0.05, 0.95, size=(r, 200))
    assert tune_offline_a(reference, reference_in, population) == pytest.approx(true_a,
                                                                                abs=0.1)
    with pytest.raises(ValueError, match="OUT reference model"):
        # R = 2, each candidate IN one model: the other model is IN for every non-member.
        tune_offline_a(reference[:2], np.array([reference_in[0], ~reference_in[0]]),
                       population[:2])
