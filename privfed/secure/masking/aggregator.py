"""The masking protocol in-process."""

from __future__ import annotations

import numpy as np

from privfed.secure.base import DecodedAggregate, RoundMeter, SecureAggregator
from privfed.secure.transport import LocalTransport

from .client import MaskingClientParty
from .driver import run_masking
from .endpoint import STAGES, MaskingEndpoint
from .params import MaskingParams
from .server import MaskingServerParty


class MaskingAggregator(SecureAggregator):
    """Pairwise-masking secure aggregation (Bonawitz et al. CCS 2017; SecAgg+ optional).

    The server learns only the weighted sum of the clients whose masked input it received,
    and only if at least ``t`` clients answer every stage. Weights (e.g. sample counts) are
    public: each client advertises its weight in the clear and pre-multiplies its vector by
    ``w_k / W`` (``W`` the total advertised weight) before quantising. Keys are fresh per
    round. Clients may drop before any stage (``dropouts``, stages ``"advertise"``,
    ``"share"``, ``"masked"``, ``"consistency"`` (malicious server model only) and
    ``"unmask"``); the sum of the survivors is recovered while at least ``t`` remain, else
    :class:`ThresholdError`.

    Parameters
    ----------
    ring_bits, clip, out_of_range, threshold, neighbourhood, min_clients, cohort_size, \
corrupt_fraction, dropout_fraction, security_bits, server_model
        See :class:`MaskingParams`. With ``cohort_size=None`` each round is planned for the
        clients handed to :meth:`aggregate` (this driver plays every party, so the cohort
        is known to all of them before the round).
    """

    kind = "masking"
    stages = STAGES

    def __init__(
        self,
        *,
        ring_bits: int = 32,
        clip: float = 10.0,
        out_of_range: str = "error",
        threshold: int | None = None,
        neighbourhood: str | int = "auto",
        min_clients: int = 2,
        cohort_size: int | None = None,
        corrupt_fraction: float = 0.1,
        dropout_fraction: float = 0.1,
        security_bits: int = 40,
        server_model: str = "malicious",
    ) -> None:
        super().__init__(clip=clip, out_of_range=out_of_range)
        self.params = MaskingParams(
            ring_bits=ring_bits, clip=clip, out_of_range=out_of_range, threshold=threshold,
            neighbourhood=neighbourhood, min_clients=min_clients, cohort_size=cohort_size,
            corrupt_fraction=corrupt_fraction, dropout_fraction=dropout_fraction,
            security_bits=security_bits, server_model=server_model,
        )
        if not self.params.consistency_round:
            self.stages = tuple(s for s in self.stages if s != "consistency")

    def round_params(self, cohort_size: int) -> MaskingParams:
        """The parameters every party holds for a round of ``cohort_size`` invited clients."""
        if self.params.cohort_size is not None:
            return self.params
        return self.params.for_cohort(max(cohort_size, self.params.min_clients))

    def _run(
        self,
        round_id: int,
        vectors: dict[int, np.ndarray],
        weights: dict[int, float],
        dropouts: dict[str, frozenset[int]],
        meter: RoundMeter,
    ) -> DecodedAggregate:
        ids = sorted(vectors)
        registry = self.registry
        params = self.round_params(len(ids))
        with meter.timed("aggregate"):
            server = MaskingServerParty(registry, params, round_id, vectors[ids[0]].size, ids)
        with meter.timed("encode"):
            endpoints = {
                c: MaskingEndpoint(MaskingClientParty(self.identity(c), registry, params, round_id),
                                   vectors[c])
                for c in ids
            }
        transport = LocalTransport(endpoints, dropouts=dropouts)
        decoded = run_masking(transport, server, weights, meter)
        meter.seconds["encode"] += sum(transport.seconds[s] for s in self.stages)
        return decoded
