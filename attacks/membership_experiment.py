"""The outsider's membership experiment: a target federation, reference models, LiRA, RMIA.

The target federation trains with the configuration on a random half of the candidate pool;
each reference federation trains by the same pipeline on its own subset. RMIA also queries
every model on population samples that none of them trained on (by default the held-out
test split). Every unit (the target, each reference model) draws its randomness from the
seed and its own index only, so an audit can save each unit when it finishes and resume
from there with the same result (:mod:`attacks.runner`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from attacks.federation import (
    TrainedFederation,
    build_federation,
    predict_logits,
    train_federation,
)
from attacks.membership import (
    MembershipResult,
    evaluate_membership,
    lira_scores,
    logit_confidence,
    loss_scores,
)
from attacks.rmia import rmia_scores, tune_offline_a
from privfed.config import ExperimentConfig
from privfed.federated import derive_seed

__all__ = ["MembershipExperiment", "OutsiderSignals", "draw_membership",
           "membership_experiment", "outsider_attacks", "reference_confidence", "train_target"]

_REFERENCE_STREAM = 101


@dataclass
class MembershipExperiment:
    """A target federation, its candidates and the outsider-view attack results.

    Attributes
    ----------
    target : TrainedFederation
    members : numpy.ndarray
        Bool mask over the candidate pool: in the target's training data.
    results : dict of str to MembershipResult
        "loss", "lira_offline", "lira_online", "rmia_offline", "rmia_online".
    """

    target: TrainedFederation
    members: np.ndarray
    results: dict[str, MembershipResult]


def membership_experiment(
    config: ExperimentConfig,
    x: np.ndarray,
    y: np.ndarray,
    *,
    test: tuple[np.ndarray, np.ndarray],
    num_classes: int,
    num_reference: int = 16,
    seed: int = 0,
    population: tuple[np.ndarray, np.ndarray] | None = None,
    attach: Callable[[TrainedFederation], None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> MembershipExperiment:
    """Train a target federation on a random half of ``x`` and attack it from its final model.

    The target uses ``config`` exactly (privacy and secure aggregation included). Each of the
    ``num_reference`` reference federations is trained by the same pipeline on another
    subset, chosen so that every candidate is IN exactly half of them (Carlini et al.'s
    design); the offline attack uses, per candidate, only the references that never saw it.
    References skip the cryptography (``plain_aggregation``), which does not change the
    trained model. Every draw is a function of ``seed`` and the model's index
    (:func:`draw_membership`, :func:`reference_confidence`), so each model can be trained on
    its own, in any order.

    Parameters
    ----------
    config : ExperimentConfig
    x, y : numpy.ndarray
        The candidate pool: the attacker's population, of which the target trains on half.
    test : (numpy.ndarray, numpy.ndarray)
        Evaluation data for the federations' servers.
    num_classes : int
    num_reference : int
        Even number of reference models R.
    seed : int
        Seed of the membership draws and of the reference federations.
    population : (numpy.ndarray, numpy.ndarray), optional
        RMIA's population samples z and their labels: data the attacker holds that neither
        the target nor a reference model trains on (default: ``test``).
    attach : callable, optional
        Called with the built, untrained target (e.g. to attach views to its server).
    progress : callable, optional
        Called with a short message after each trained model.
    """
    say = progress or (lambda _message: None)
    pop_x, pop_y = test if population is None else population
    members, ref_in = draw_membership(len(y), num_reference, seed)
    target = train_target(config, x, y, members, test=test, num_classes=num_classes,
                          attach=attach)
    say("membership: target trained")
    ref_conf = np.empty((num_reference, len(y)))
    ref_pop = np.empty((num_reference, len(pop_y)))
    for r in range(num_reference):
        ref_conf[r], ref_pop[r] = reference_confidence(
            config, x, y, ref_in[r], test=test, num_classes=num_classes, seed=seed, index=r,
            population=(pop_x, pop_y))
        say(f"membership: reference model {r + 1}/{num_reference} trained")
    signals = OutsiderSignals(predict_logits(target, x), y, ref_conf, ref_in,
                              predict_logits(target, pop_x), pop_y, ref_pop)
    return MembershipExperiment(target, members, outsider_attacks(signals, members))


def draw_membership(n: int, num_reference: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Who is IN the target's training data, and IN each reference model's.

    Parameters
    ----------
    n : int
        Size of the candidate pool.
    num_reference : int
        Even number of reference models R >= 2.
    seed : int

    Returns
    -------
    members : numpy.ndarray
        ``(n,)`` bool, a random half of the pool.
    reference_in : numpy.ndarray
        ``(R, n)`` bool; each candidate is IN exactly R/2 references.
    """
    if num_reference < 2 or num_reference % 2:
        raise ValueError(f"num_reference must be an even number >= 2, got {num_reference}")
    rng = np.random.default_rng(derive_seed(seed, _REFERENCE_STREAM))
    members = np.zeros(n, dtype=bool)
    members[rng.permutation(n)[: n // 2]] = True
    reference_in = np.argsort(rng.random((num_reference, n)), axis=0) < num_reference // 2
    return members, reference_in


def train_target(
    config: ExperimentConfig,
    x: np.ndarray,
    y: np.ndarray,
    members: np.ndarray,
    *,
    test: tuple[np.ndarray, np.ndarray],
    num_classes: int,
    attach: Callable[[TrainedFederation], None] | None = None,
) -> TrainedFederation:
    """Train ``config`` exactly (its seed, privacy, secure aggregation) on ``x[members]``.

    Parameters
    ----------
    config : ExperimentConfig
    x, y : numpy.ndarray
        The candidate pool.
    members : numpy.ndarray
        Bool mask of the target's training examples.
    test : (numpy.ndarray, numpy.ndarray)
    num_classes : int
    attach : callable, optional
        Called with the built, untrained target (e.g. to attach views to its server).
    """
    target = build_federation(config, x[members], y[members], test=test,
                              num_classes=num_classes)
    if attach is not None:
        attach(target)
    target.history = target.server.fit(config.federation.rounds)
    return target


def reference_confidence(
    config: ExperimentConfig,
    x: np.ndarray,
    y: np.ndarray,
    included: np.ndarray,
    *,
    test: tuple[np.ndarray, np.ndarray],
    num_classes: int,
    seed: int,
    index: int,
    population: tuple[np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Train reference model ``index`` on ``x[included]``; its confidences on all of ``x``
    and on the population samples.

    Its seed is derived from ``(seed, index)`` alone, so it is the same model whether or
    not the others were trained before it.

    Returns
    -------
    candidates, population : numpy.ndarray
        ``(len(x),)`` and ``(len(population[1]),)`` float64 logit-scaled confidences
        (:func:`logit_confidence`).
    """
    ref = train_federation(config, x[included], y[included], test=test,
                           num_classes=num_classes, plain_aggregation=True,
                           seed=derive_seed(seed, _REFERENCE_STREAM, index))
    pop_x, pop_y = population
    return (logit_confidence(predict_logits(ref, x), y),
            logit_confidence(predict_logits(ref, pop_x), pop_y))


@dataclass
class OutsiderSignals:
    """What the outsider's attacks read: the models' outputs on the candidates and on the
    population samples.

    Attributes
    ----------
    logits : numpy.ndarray
        ``(N, classes)`` the target model's logits on the candidates.
    y : numpy.ndarray
        ``(N,)`` the candidates' labels.
    reference_conf, reference_in : numpy.ndarray
        ``(R, N)`` the reference models' logit-scaled confidences and training masks.
    population_logits : numpy.ndarray
        ``(Z, classes)`` the target model's logits on the population samples.
    population_y : numpy.ndarray
        ``(Z,)`` their labels.
    reference_population_conf : numpy.ndarray
        ``(R, Z)`` the reference models' logit-scaled confidences on them.
    """

    logits: np.ndarray
    y: np.ndarray
    reference_conf: np.ndarray
    reference_in: np.ndarray
    population_logits: np.ndarray
    population_y: np.ndarray
    reference_population_conf: np.ndarray


def outsider_attacks(signals: OutsiderSignals, members: np.ndarray) -> dict[str, MembershipResult]:
    """Loss threshold, LiRA and RMIA (offline and online) against the target's final model.

    LiRA reads logit-scaled confidences, RMIA the probability of the true label
    (``expit`` of the confidence). Offline RMIA's ``a`` is tuned by attacking reference
    model 0 with the others (:func:`~attacks.rmia.tune_offline_a`); with fewer than 4
    reference models no model can be attacked that way and ``a = 1`` (``Pr_IN = Pr_OUT``)
    is used; the offline result's metrics carry the ``offline_a`` used.

    Parameters
    ----------
    signals : OutsiderSignals
    members : numpy.ndarray
        ``(N,)`` bool ground truth.

    Returns
    -------
    dict of str to MembershipResult
        "loss", "lira_offline", "lira_online", "rmia_offline", "rmia_online".
    """
    s = signals
    conf = logit_confidence(s.logits, s.y)
    labels = members.astype(np.int64)
    ref_p, ref_pop_p = expit(s.reference_conf), expit(s.reference_population_conf)
    a = (tune_offline_a(ref_p, s.reference_in, ref_pop_p) if len(ref_p) >= 4 else 1.0)
    rmia = {
        online: rmia_scores(np.exp(loss_scores(s.logits, s.y)), ref_p, s.reference_in,
                            np.exp(loss_scores(s.population_logits, s.population_y)),
                            ref_pop_p, online=online, offline_a=a)
        for online in (False, True)
    }
    return {
        "loss": evaluate_membership(labels, loss_scores(s.logits, s.y),
                                    attack="loss threshold"),
        "lira_offline": evaluate_membership(
            labels, lira_scores(conf, s.reference_conf, s.reference_in, online=False),
            attack="LiRA offline"),
        "lira_online": evaluate_membership(
            labels, lira_scores(conf, s.reference_conf, s.reference_in, online=True),
            attack="LiRA online"),
        "rmia_offline": evaluate_membership(labels, rmia[False], attack="RMIA offline",
                                            extra={"offline_a": a}),
        "rmia_online": evaluate_membership(labels, rmia[True], attack="RMIA online"),
    }
