"""Participation policies of the DP mechanisms: what each release costs, and the budgets.

* :class:`RecordLevelPolicy` (local DP-SGD): each client's record-level epsilon, against
  the server and everyone else, from the DP-SGD steps of the rounds it took part in.
* :class:`UserLevelPolicy` (central DP-FedAvg, McMahan et al. 2018): every released round
  (also one without clients) composes the Gaussian as the client participation allows
  (:class:`~privfed.privacy.participation.Participation`: Poisson-subsampled, fixed-size
  cohorts under replace-one, cyclic without amplification); the headline epsilon holds
  against an outsider who sees the released models but not who took part. With a noise
  cohort (``privacy.noise_cohort_size``) z is the deployment's and the headline
  ``epsilon`` is the run's own (noise multiplier ``z c / C``); the deployment's is
  ``epsilon_deployment``, and the budget caps it.
* :class:`DistributedPolicy` (distributed DP): against the server, which sees each
  round's noisy sum and knows who took part, a client's guarantee is the *unamplified*
  Gaussian (or Skellam) mechanism composed over the rounds it took part in (the
  "zero-out" relation: its update against none): that is the headline epsilon, per
  client, and the budget caps it. Against an outsider client sampling amplifies
  it (``epsilon_outsider``).

Every parameter is public and fixed for the whole training, so what a unit has spent is
determined by how often it released something
(:class:`~privfed.privacy.ledger.ParticipationLedger`); ``privacy.epsilon`` is a cap no
release may exceed.
"""

from __future__ import annotations

from typing import Any

from privfed.config.fields import check_field
from privfed.federated.policy import ParticipationPolicy
from privfed.privacy.accounting import GaussianEvent, gaussian_epsilon
from privfed.privacy.dpsgd import DPSGDParams
from privfed.privacy.ledger import ClientLedgerMixin, ParticipationLedger, RoundLedgerMixin
from privfed.privacy.noise_cohort import NoiseCohort
from privfed.privacy.participation import Participation
from privfed.privacy.randomness import NoisePolicy
from privfed.privacy.skellam import skellam_sum_epsilon

__all__ = ["DistributedPolicy", "RecordLevelPolicy", "UserLevelPolicy"]


class RecordLevelPolicy(ClientLedgerMixin, ParticipationPolicy):
    """Local DP-SGD: accounts each client's record-level epsilon; a client whose next
    round would exceed the budget stops contributing.

    Parameters
    ----------
    params : DPSGDParams
    num_clients : int
    delta : float
    accountant : {"pld", "prv", "rdp"}
    budget : float or None
        ``privacy.epsilon``.
    noise : NoisePolicy
    exact_diagnostics : bool, default False
        Clients report their exact count of clipped examples (``privacy.diagnostics =
        "exact"``; not private).
    """

    def __init__(
        self,
        params: DPSGDParams,
        *,
        num_clients: int,
        delta: float,
        accountant: str,
        budget: float | None,
        noise: NoisePolicy,
        exact_diagnostics: bool = False,
    ) -> None:
        self.params = params
        self.delta = delta
        self.noise = noise
        self.accountant = accountant
        self.exact_diagnostics = exact_diagnostics

        def epsilon_after(rounds: int) -> float:
            return gaussian_epsilon([params.release(rounds)], delta, accountant)

        self.client_spend = ParticipationLedger(num_clients, epsilon_after, budget)

    @property
    def noise_multiplier(self) -> float:
        """sigma of every client's DP-SGD."""
        return self.params.noise_multiplier

    @property
    def releases_statistics(self) -> bool:
        """False: the loss and the record count are non-private statistics of the records."""
        return False

    @property
    def releases_exact_diagnostics(self) -> bool:
        """Whether clients report their clipped-example counts (``exact_diagnostics``)."""
        return self.exact_diagnostics

    def metrics(self) -> dict[str, Any]:
        """``epsilon`` (max over clients, against the server and everyone else),
        ``epsilon_against``, ``accounting`` and ``neighbouring`` (how it is accounted, for
        which relation), ``epsilon_per_client`` (list by id), ``delta`` and ``noise`` (the
        noise's provenance). Client participation does not enter: each client's epsilon
        composes the DP-SGD steps of the rounds it took part in, however it was chosen."""
        return {
            "epsilon": self.client_spend.max_epsilon(),
            "epsilon_against": "server",
            "accounting": f"{self.accountant}: poisson-subsampled gaussian (dp-sgd batches) "
                          "over each client's rounds",
            "neighbouring": "add/remove one record",
            "epsilon_per_client": self.client_spend.epsilons(),
            "delta": self.delta,
            "noise": self.noise.label,
        }


class UserLevelPolicy(RoundLedgerMixin, ParticipationPolicy):
    """Central user-level DP: every round released is counted in :attr:`rounds_spend`,
    whose epsilon is :attr:`participation`'s over the rounds so far.

    Parameters
    ----------
    noise_multiplier : float
        z, the accounted noise multiplier: the released sum carries noise of std ``z * S``
        (with adaptive clipping, z combines the update and clip-count noise).
    sample_rate : float
        q, probability that a client takes part in a round.
    num_clients : int
        K.
    delta : float
    noise : NoisePolicy
    accountant : {"pld", "prv", "rdp"}
    budget : float or None
        ``privacy.epsilon``: no release may take the headline epsilon above it.
    participation : Participation, optional
        How clients take part (what the accounting credits); default Poisson sampling at
        ``sample_rate`` (full participation at 1).
    noise_cohort : NoiseCohort, optional
        The run's noise is ``c / C`` of the deployment's: z and the budget are the
        deployment's (C clients per round, the same participation scheme and rate), the
        headline epsilon the run's own.
    """

    epsilon_against = "outsider"
    """The party the headline :meth:`epsilon` holds against."""

    def __init__(
        self,
        *,
        noise_multiplier: float,
        sample_rate: float,
        num_clients: int,
        delta: float,
        noise: NoisePolicy,
        accountant: str = "pld",
        budget: float | None = None,
        participation: Participation | None = None,
        noise_cohort: NoiseCohort | None = None,
    ) -> None:
        check_field("privacy.noise_multiplier", noise_multiplier)
        if participation is None:
            participation = Participation.of(num_clients, sample_rate, poisson=True)
        self.participation = participation
        self.noise_multiplier = noise_multiplier
        self.sample_rate = sample_rate
        self.num_clients = num_clients
        self.delta = delta
        self.noise = noise
        self.accountant = accountant
        self.budget = budget
        self.noise_cohort = noise_cohort

        def amplified(rounds: int) -> float:
            return participation.epsilon(noise_multiplier, rounds, delta, accountant)

        self.rounds_spend = ParticipationLedger(1, amplified, self._outsider_budget())

    def _outsider_budget(self) -> float | None:
        """The cap on the outsider's epsilon (the headline's for central DP)."""
        return self.budget

    def metrics(self) -> dict[str, Any]:
        """The headline ``epsilon``, the party it holds against (``epsilon_against``), how it
        is accounted and for which relation (``accounting``, ``neighbouring``),
        ``epsilon_outsider``, ``delta``, ``noise_multiplier`` and ``noise`` (the noise's
        provenance); with a noise cohort also ``epsilon_deployment``, ``cohort_size`` (c),
        ``noise_cohort_size`` (C) and ``noise_multiplier_run`` (``z c / C``)."""
        metrics = {
            "epsilon": self.epsilon(),
            "epsilon_against": self.epsilon_against,
            "accounting": self._headline_method(),
            "neighbouring": self._headline_relation(),
            "epsilon_outsider": self.outsider_epsilon(),
            "delta": self.delta,
            "noise_multiplier": self.noise_multiplier,
            "noise": self.noise.label,
        }
        if self.noise_cohort is not None:
            metrics.update(epsilon_deployment=self.deployment_epsilon(),
                           noise_multiplier_run=self.run_noise_multiplier,
                           **self.noise_cohort.metrics())
        return metrics

    def _headline_method(self) -> str:
        return f"{self.accountant}: {self.participation.method}"

    def _headline_relation(self) -> str:
        return self.participation.relation

    def epsilon(self) -> float:
        """The headline user-level epsilon spent so far, at :attr:`delta`."""
        return self.outsider_epsilon()

    @property
    def run_noise_multiplier(self) -> float:
        """The noise multiplier of the run's released sums: z, or ``z c / C``."""
        if self.noise_cohort is None:
            return self.noise_multiplier
        return self.noise_cohort.run_noise_multiplier(self.noise_multiplier)

    def deployment_epsilon(self) -> float:
        """Epsilon against an outsider of the rounds so far at noise multiplier z: the run's
        own without a noise cohort, else the deployment's (C clients per round)."""
        return self.rounds_spend.epsilon(0)

    def outsider_epsilon(self) -> float:
        """Epsilon against a party that sees the run's released models but not who took
        part (at the run's own noise multiplier, :attr:`run_noise_multiplier`)."""
        if self.noise_cohort is None:
            return self.deployment_epsilon()
        rounds = int(self.rounds_spend.counts[0])
        return self.participation.epsilon(self.run_noise_multiplier, rounds, self.delta,
                                          self.accountant)

    def change_one_client_epsilon(self, client_id: int) -> float:
        """Epsilon, against the outsider, for changing the data of client ``client_id`` when it
        takes part either way (replace-one: e.g. records inserted into it). Dp-accounting's
        PLD accountant with the REPLACE_ONE relation: the clipped update may move by 2S
        (:meth:`Participation.replace_one_epsilon`), at the run's own noise multiplier."""
        rounds = int(self.rounds_spend.counts[0])
        return self.participation.replace_one_epsilon(self.run_noise_multiplier, rounds,
                                                      self.delta)


class DistributedPolicy(ClientLedgerMixin, UserLevelPolicy):
    """Distributed user-level DP: per-client epsilon against the server, K_min.

    Parameters
    ----------
    min_surviving_clients : int
        K_min, the fewest clients a released sum may hold (:attr:`min_cohort`).
    clip_norm : float
        S ("skellam": enters the sensitivity; fixed, no adaptive clipping).
    dim : int
        Length of the model's flat vector ("skellam": enters the rounding sensitivity).
    noise_kind : {"gaussian", "skellam"}
    quantization_step : float
        "skellam": the lattice step gamma (:func:`~privfed.privacy.distributed.skellam_step`).
    **kwargs
        The parameters of :class:`UserLevelPolicy`.
    """

    epsilon_against = "server"

    def __init__(
        self,
        *,
        min_surviving_clients: int,
        clip_norm: float,
        dim: int,
        noise_kind: str = "gaussian",
        quantization_step: float = 0.0,
        **kwargs: Any,
    ) -> None:
        check_field("privacy.min_surviving_clients", min_surviving_clients)
        check_field("privacy.noise", noise_kind)
        if noise_kind == "skellam" and not quantization_step > 0:
            raise ValueError(f"Skellam noise needs a lattice step > 0, got {quantization_step}")
        self.min_surviving_clients = min_surviving_clients
        self.clip_norm = clip_norm
        self.dim = dim
        self.noise_kind = noise_kind
        self.quantization_step = quantization_step
        super().__init__(**kwargs)
        self.client_spend = ParticipationLedger(
            self.num_clients, self._epsilon_against_server, self.budget)

    def _outsider_budget(self) -> float | None:
        return None  # the outsider's epsilon is at most the server's, which the budget caps

    def _epsilon_against_server(self, participations: int) -> float:
        """Epsilon of ``participations`` unamplified releases of one client's update."""
        if self.noise_kind == "skellam":
            return self._skellam_epsilon(participations)
        event = GaussianEvent(self.noise_multiplier, 1.0, participations)
        return gaussian_epsilon([event], self.delta, self.accountant)

    @property
    def min_cohort(self) -> int:
        """K_min: a smaller cohort's sum would carry less noise than accounted."""
        return self.min_surviving_clients

    def epsilon(self) -> float:
        """The largest epsilon any client has spent against the server."""
        return self.client_spend.max_epsilon()

    def _headline_method(self) -> str:
        if self.noise_kind == "skellam":
            return ("skellam rdp (Agarwal, Kairouz & Liu 2021) without amplification over "
                    "each client's rounds")
        return f"{self.accountant}: gaussian without amplification over each client's rounds"

    def _headline_relation(self) -> str:
        return "zero-out one client's update (the server knows who took part)"

    def metrics(self) -> dict[str, Any]:
        """:meth:`UserLevelPolicy.metrics`; how ``epsilon_outsider`` is accounted and for
        which relation (``accounting_outsider``, ``neighbouring_outsider``); and
        ``epsilon_per_client`` (against the server, list by id): a function of who took
        part, which the run directory withholds under client sampling
        (:meth:`privfed.federated.History.without_participants`)."""
        if self.noise_kind == "skellam":  # the outsider gets the server's figure
            outsider = {"accounting_outsider": self._headline_method(),
                        "neighbouring_outsider": self._headline_relation()}
        else:
            outsider = {"accounting_outsider": super()._headline_method(),
                        "neighbouring_outsider": self.participation.relation}
        return {**super().metrics(), **outsider,
                "epsilon_per_client": self.client_spend.epsilons()}

    def outsider_epsilon(self) -> float:
        """Against an outsider: amplified by client sampling (Gaussian), and never more than
        against the server, of which the outsider's view is a post-processing (where both
        hold for the same relation: not for fixed-size cohorts, replace-one)."""
        if self.noise_kind == "skellam":
            return self.epsilon()
        if self.participation.scheme == "fixed":
            return super().outsider_epsilon()
        return min(super().outsider_epsilon(), self.epsilon())

    def change_one_client_epsilon(self, client_id: int) -> float:
        """Replace-one epsilon of client ``client_id``; Skellam: its releases with doubled
        sensitivities (a replaced update moves by up to twice the clip)."""
        if self.noise_kind == "gaussian":
            return super().change_one_client_epsilon(client_id)
        return self._skellam_epsilon(int(self.client_spend.counts[client_id]), replace_one=True)

    def _skellam_epsilon(self, releases: int, *, replace_one: bool = False) -> float:
        return skellam_sum_epsilon(self.noise_multiplier, self.clip_norm,
                                   self.quantization_step, self.dim, releases, self.delta,
                                   replace_one=replace_one)
