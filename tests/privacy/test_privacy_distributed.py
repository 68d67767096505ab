"""Distributed DP holds against the server (fault 5 of the privacy issue).

A sum the server can decode must carry at least K_min noise shares: the clients enforce it
from their own parameters (masking threshold and survivor count, HE key holder), whatever
the server says; distributed DP without secure aggregation is refused; rounds that secure
aggregation cannot complete are skipped and accounted instead of aborting the run.
"""

import numpy as np
import pytest

from privfed.config import ConfigError, load_config
from privfed.secure import (
    MaskingAggregator,
    MaskingClientParty,
    MaskingParams,
    MaskingServerParty,
    ThresholdError,
    make_aggregator,
)
from privfed.secure.masking import default_threshold
from privfed.secure.oneshot import pack_ids
from privfed.secure.wire import SERVER_ID, pack, pack_fields

DIM = 50


def _build(overrides: list[str]):
    from privfed.experiment import build_simulation

    return build_simulation(load_config(None, overrides))


def _vectors(n: int) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(0)
    return {c: rng.uniform(-1, 1, DIM) for c in range(n)}


def test_the_threshold_is_at_least_k_min():
    assert default_threshold(10) == 7
    assert MaskingParams(min_clients=8, cohort_size=10).planned().threshold == 8
    assert MaskingParams(min_clients=2, cohort_size=10).planned().threshold == 7
    with pytest.raises(ThresholdError, match="7 signed adverts .* fewer than the threshold t=8"):
        MaskingParams(min_clients=8, cohort_size=7).for_view(7)


def test_a_sum_of_fewer_than_k_min_inputs_is_never_decoded():
    """The issue's input: t from 2n/3 was below K_min, so with dropouts the server decoded a
    sum of fewer shares than accounted. 10 clients, K_min = 10, 3 drop after sharing."""
    vectors, weights = _vectors(10), dict.fromkeys(range(10), 1.0)
    decoded = make_aggregator("masking").aggregate(1, vectors, weights,
                                                   dropouts={"masked": [1, 2, 3]})
    assert len(decoded.included) == 7  # without K_min: decoded with 7 < 10 shares
    with pytest.raises(ThresholdError):
        MaskingAggregator(min_clients=10).aggregate(1, vectors, weights,
                                                    dropouts={"masked": [1, 2, 3]})


def test_a_client_refuses_an_unmask_request_listing_fewer_than_k_min_survivors():
    """A server claiming only 7 of 10 masked inputs arrived (t = 7 would allow it) gets no
    share from a client whose K_min is 8."""
    agg = MaskingAggregator(min_clients=8)
    ids = list(range(10))
    for c in ids:
        agg.identity(c)
    params = agg.round_params(len(ids))
    server = MaskingServerParty(agg.registry, params, 3, DIM, ids)
    clients = {c: MaskingClientParty(agg.identity(c), agg.registry, params, 3) for c in ids}
    vectors = _vectors(10)
    for c in ids:
        server.receive(clients[c].advertise(1.0, DIM))
    keys = server.keys_message()
    for c in ids:
        server.receive(clients[c].share_keys(keys))
    forward = server.forward_messages()
    for c in ids:
        clients[c].masked_input(forward[c], vectors[c])
    lie = pack("masking", "survivors", 3, SERVER_ID, pack_fields([pack_ids(tuple(range(7)))]))
    with pytest.raises(ThresholdError, match="fewer than min_clients = 8"):
        clients[0].consistency(lie)


def test_the_he_key_holder_decrypts_no_aggregate_of_fewer_than_k_min_clients():
    vectors, weights = _vectors(3), dict.fromkeys(range(3), 1.0)
    assert len(make_aggregator("he", min_clients=3).aggregate(1, vectors, weights).included) == 3
    with pytest.raises(ThresholdError, match="fewer than min_clients = 3"):
        make_aggregator("he", min_clients=3).aggregate(
            1, vectors, weights, dropouts={"upload": [2]})


def test_distributed_dp_gives_its_k_min_to_the_secure_aggregator():
    server = _build(["data.num_clients=5", "model.hidden=[8]",
                      "privacy.mechanism='distributed'", "privacy.noise_multiplier=1.0",
                      "secure.kind='masking'"]).server
    assert server.policy.min_cohort == 5
    aggregator = server.engine.aggregation.aggregator
    assert aggregator.params.min_clients == 5
    assert aggregator.params.planned().threshold == 5


def test_distributed_dp_without_secure_aggregation_is_refused():
    with pytest.raises(ConfigError, match=r"privacy\.mechanism 'distributed' needs secure "
                                          r"aggregation.*secure\.kind"):
        load_config(None, ["privacy.mechanism='distributed'", "privacy.noise_multiplier=1.0"])


def test_a_round_with_one_sampled_client_under_masking_is_skipped_and_accounted():
    """6 clients, Poisson C = 0.2: a round with exactly one client used to abort the run."""
    history = _build([
        "data.num_clients=6", "model.hidden=[8]", "federation.rounds=12",
        "federation.fraction=0.2", "federation.client_sampling='poisson'",
        "privacy.mechanism='distributed'", "privacy.noise_multiplier=1.0",
        "secure.kind='masking'", "secure.clip=5.0",
    ]).run()
    assert len(history.rounds) == 12
    skipped = [r for r in history.rounds if "skipped" in r.extra]
    assert skipped and all(r.clients == [] for r in skipped)
    outsider = [r.extra["epsilon_outsider"] for r in history.rounds]
    assert all(a <= b for a, b in zip(outsider, outsider[1:], strict=False))


def test_a_cohort_below_k_min_is_not_trained():
    """Fixed K_min = 3 under Poisson sampling: rounds with 1 or 2 sampled clients are skipped
    before anyone trains, so those clients spend nothing against the server."""
    server = _build([
        "data.num_clients=6", "model.hidden=[8]", "federation.rounds=10",
        "federation.fraction=0.4", "federation.client_sampling='poisson'",
        "privacy.mechanism='distributed'", "privacy.noise_multiplier=1.0",
        "privacy.min_surviving_clients=3", "secure.kind='masking'", "secure.clip=5.0",
    ]).server
    history = server.fit(10)
    trained = sum(len(r.clients) for r in history.rounds)
    assert trained == int(server.policy.client_spend.counts.sum())
    assert all(len(r.clients) == 0 or len(r.clients) >= 3 for r in history.rounds)
