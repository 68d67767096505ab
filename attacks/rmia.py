"""RMIA: the robust membership inference attack (Zarifzadeh, Liu, Hsu & Shokri, "Low-Cost
High-Power Membership Inference Attacks", ICML 2024, arXiv:2312.03262).

RMIA tests ``x`` against population samples ``z`` (data the attacker holds that no model
trained on) with the pairwise likelihood ratio

    LR(x, z) = [Pr(x | theta) / Pr(x)] / [Pr(z | theta) / Pr(z)],

where ``Pr(. | theta)`` is the target model's softmax probability of the true label and
``Pr(.)`` its average over reference models; the score of ``x`` is the fraction of the
population with ``LR(x, z) >= gamma``.

* Online: ``Pr(x)`` is the mean over all reference models, about half of which trained on
  ``x``.
* Offline: only OUT reference models, with the paper's linear approximation of the missing
  IN models, ``Pr(x | theta_in) ~ a Pr_OUT(x) + (1 - a)``, hence
  ``Pr(x) = ((1 + a) Pr_OUT(x) + (1 - a)) / 2``; ``a`` is tuned by attacking one reference
  model with the others (:func:`tune_offline_a`).

For one target model the score is a monotone function of ``Pr(x | theta) / Pr(x)`` (the
empirical distribution of the population's ratios, evaluated there): the population sets
the scale and the resolution (1/Z) of the test, ``gamma`` its threshold, neither the
ranking of the candidates. Here no reference model trains on the population, so ``Pr(z)``
is a mean over OUT models in both settings (in the paper the references may train on z);
this too changes the scale only.
"""

from __future__ import annotations

import numpy as np

from attacks.metrics import roc_auc

__all__ = ["OFFLINE_A_GRID", "offline_marginal", "rmia_scores", "tune_offline_a"]

OFFLINE_A_GRID = np.round(np.linspace(0.0, 1.0, 11), 2)
"""The values of ``a`` :func:`tune_offline_a` tries (0, 0.1, ..., 1, as the authors' code)."""


def offline_marginal(out_mean: np.ndarray, a: float) -> np.ndarray:
    """Offline RMIA's estimate of ``Pr(x)`` from the OUT reference models alone.

    ``Pr(x) = ((1 + a) Pr_OUT(x) + (1 - a)) / 2``: the mean of ``Pr_OUT(x)`` and the linear
    approximation ``Pr_IN(x) ~ a Pr_OUT(x) + (1 - a)`` (Zarifzadeh et al. 2024).

    Parameters
    ----------
    out_mean : numpy.ndarray
        ``Pr_OUT(x)``, the mean probability of the true label over OUT reference models,
        float, in [0, 1].
    a : float
        The approximation's slope, in [0, 1]; ``a = 1`` takes ``Pr_IN = Pr_OUT``.

    Returns
    -------
    numpy.ndarray
        ``Pr(x)``, the shape of ``out_mean``, float64.

    Raises
    ------
    ValueError
        If ``a`` is outside [0, 1].
    """
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"offline RMIA's a must be in [0, 1], got {a}")
    return 0.5 * ((1.0 + a) * np.asarray(out_mean, np.float64) + (1.0 - a))


def rmia_scores(
    target: np.ndarray,
    reference: np.ndarray,
    reference_in: np.ndarray,
    target_population: np.ndarray,
    reference_population: np.ndarray,
    *,
    online: bool,
    offline_a: float = 1.0,
    gamma: float = 1.0,
) -> np.ndarray:
    """RMIA's score of each candidate: the fraction of population samples it dominates.

    Parameters
    ----------
    target : numpy.ndarray
        ``(N,)`` the target model's probability of each candidate's true label,
        ``Pr(x | theta)``, in [0, 1].
    reference : numpy.ndarray
        ``(R, N)`` the same for R reference models.
    reference_in : numpy.ndarray
        ``(R, N)`` bool, whether the candidate was in the reference model's training data
        (offline uses only the OUT entries; online ignores it).
    target_population, reference_population : numpy.ndarray
        ``(Z,)`` and ``(R, Z)``: the target's and the reference models' probabilities of the
        true label of Z population samples, which none of the models trained on (never the
        target's members).
    online : bool
        Online: ``Pr(.)`` is the mean over all reference models. Offline: the mean over OUT
        reference models through :func:`offline_marginal` with ``offline_a``.
    offline_a : float
        Offline only: the slope ``a`` of :func:`offline_marginal`, in [0, 1].
    gamma : float
        The threshold of the pairwise likelihood ratio, > 0 (the paper's default is 1).

    Returns
    -------
    numpy.ndarray
        ``(N,)`` float64 scores in [0, 1]: the fraction of z with ``LR(x, z) >= gamma``;
        higher means more likely a member.

    Raises
    ------
    ValueError
        On shapes that do not match, probabilities outside [0, 1], ``gamma <= 0``, or
        (offline) a candidate without an OUT reference model.
    """
    reference_in = np.asarray(reference_in, dtype=bool)
    target, reference, target_population, reference_population = (
        _probabilities(v, name) for v, name in (
            (target, "target"), (reference, "reference"),
            (target_population, "target_population"),
            (reference_population, "reference_population")))
    r, n = reference.shape
    if target.shape != (n,) or reference_in.shape != (r, n):
        raise ValueError(f"target {target.shape}, reference {reference.shape} and "
                         f"reference_in {reference_in.shape} must be (N,), (R, N), (R, N)")
    if reference_population.shape != (r, *target_population.shape):
        raise ValueError(f"reference_population {reference_population.shape} must be (R, Z) "
                         f"for target_population {target_population.shape} and R = {r}")
    if gamma <= 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    if online:
        marginal_x, marginal_z = reference.mean(axis=0), reference_population.mean(axis=0)
    else:
        out = ~reference_in
        if np.any(out.sum(axis=0) == 0):
            raise ValueError("offline RMIA needs an OUT reference model for every candidate")
        out_mean = np.where(out, reference, 0.0).sum(axis=0) / out.sum(axis=0)
        marginal_x = offline_marginal(out_mean, offline_a)
        marginal_z = offline_marginal(reference_population.mean(axis=0), offline_a)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio_x = _ratio(target, marginal_x)
        ratio_z = np.sort(gamma * _ratio(target_population, marginal_z))
    # LR(x, z) >= gamma  <=>  Pr(x|theta)/Pr(x) >= gamma * Pr(z|theta)/Pr(z).
    return np.searchsorted(ratio_z, ratio_x, side="right") / ratio_z.size


def _ratio(p: np.ndarray, marginal: np.ndarray) -> np.ndarray:
    """``p / marginal``, with 0/0 taken as 1 (a label no model gives any probability to)."""
    return np.where((p == 0) & (marginal == 0), 1.0, p / marginal)


def _probabilities(values: np.ndarray, name: str) -> np.ndarray:
    """``values`` as float64 after checking they are probabilities."""
    values = np.asarray(values, dtype=np.float64)
    if values.size and not (np.all(values >= 0.0) and np.all(values <= 1.0)):
        raise ValueError(f"{name} must hold probabilities in [0, 1] (no NaN)")
    return values


def tune_offline_a(
    reference: np.ndarray,
    reference_in: np.ndarray,
    reference_population: np.ndarray,
    *,
    attacked: int = 0,
    gamma: float = 1.0,
) -> float:
    """Offline RMIA's ``a``: the value of :data:`OFFLINE_A_GRID` whose attack on reference
    model ``attacked``, by the other reference models, has the highest AUC.

    The attacker knows which candidates each reference model trained on, so this uses no
    knowledge of the target's members (Zarifzadeh et al. 2024 tune ``a`` this way).

    Parameters
    ----------
    reference, reference_in : numpy.ndarray
        ``(R, N)`` probabilities of the true label and training masks, as in
        :func:`rmia_scores`.
    reference_population : numpy.ndarray
        ``(R, Z)`` the reference models' probabilities on the population samples.
    attacked : int
        The reference model playing the target.
    gamma : float
        As in :func:`rmia_scores`.

    Returns
    -------
    float
        The best ``a`` (the smallest on ties).

    Raises
    ------
    ValueError
        If a candidate has no OUT model among the others (e.g. R = 2 with each candidate
        IN exactly one model: use R >= 4), or the attacked model trained on all candidates
        or on none.
    """
    reference = np.asarray(reference, dtype=np.float64)
    reference_in = np.asarray(reference_in, dtype=bool)
    reference_population = np.asarray(reference_population, dtype=np.float64)
    others = np.arange(len(reference)) != attacked
    aucs = [
        roc_auc(reference_in[attacked],
                rmia_scores(reference[attacked], reference[others], reference_in[others],
                            reference_population[attacked], reference_population[others],
                            online=False, offline_a=float(a), gamma=gamma),
                attack=f"offline RMIA on reference model {attacked} (a = {a})")
        for a in OFFLINE_A_GRID
    ]
    return float(OFFLINE_A_GRID[int(np.argmax(aucs))])
