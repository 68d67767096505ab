"""A round's work does not grow with the rounds run nor with the population (counted, not
timed): the same number of function calls per round, whatever the clients seen so far."""

from __future__ import annotations

import sys

import pytest
import torch

from privfed.federated import Observer
from privfed.privacy import ParticipationLedger
from privfed.secure import PlainAggregator
from tests.conftest import make_server

COHORT, ROUNDS = 4, 12


def _calls_per_round(num_clients: int, wire: bool) -> list[int]:
    """Python and C function calls of each round of a federation of ``num_clients`` clients
    of 6 examples each, ``COHORT`` per round; ``wire``: the plain protocol's messages, to
    an observer, every client's identity registered beforehand (a first use costs once)."""
    g = torch.Generator().manual_seed(0)
    parts = [(torch.randn(6, 5, generator=g), torch.arange(6) % 3) for _ in range(num_clients)]
    aggregator = PlainAggregator(wire=wire)
    if wire:
        for client in range(num_clients):
            aggregator.identity(client)
    server = make_server(parts, parts[0], fraction=COHORT / num_clients,
                         observers=[Observer()] if wire else [], aggregator=aggregator)
    counts = []
    for _ in range(ROUNDS):
        calls = [0]

        def count(frame, event, arg, calls=calls):
            if event in ("call", "c_call"):
                calls[0] += 1

        sys.setprofile(count)
        try:
            server.run_round()
        finally:
            sys.setprofile(None)
        counts.append(calls[0])
    return counts


@pytest.mark.parametrize("wire", [False, True], ids=["in process", "over the wire"])
def test_calls_per_round_do_not_grow_with_rounds_or_population(wire):
    small, large = (_calls_per_round(n, wire)[2:] for n in (20, 400))
    assert max(small) == min(small)  # round 3 onwards: every round the same work
    assert small == large  # 20 or 400 clients: the same work


def test_the_epsilon_per_unit_is_updated_for_the_units_that_release():
    ledger = ParticipationLedger(10_000, lambda k: 0.1 * k)
    accountant = ledger._epsilon_after  # noqa: SLF001 - its lookups are what is counted
    ledger.epsilons()
    for release in range(50):
        before = accountant.cache_info()
        ledger.record(release, [release, release + 1, 9_999])
        ledger.epsilons()
        after = accountant.cache_info()
        assert after.hits + after.misses - before.hits - before.misses <= 3  # not 10 000
    epsilons = ledger.epsilons()
    assert epsilons[0] == pytest.approx(0.1) and epsilons[9_999] == pytest.approx(5.0)
    assert epsilons[25] == pytest.approx(0.2) and epsilons[60] == 0.0
    assert epsilons == [0.1 * int(k) for k in ledger.counts]
