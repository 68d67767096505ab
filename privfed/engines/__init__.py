"""Engines: where a federation's clients train and how their updates are aggregated.

:class:`InProcessEngine` runs every client in this process; the Flower engine
(:mod:`privfed.integrations.flower`) runs each client on its own SuperNode. Both run the
clients' update stages where the clients are and drive a :mod:`privfed.secure` protocol.
"""

from privfed.engines.inprocess import InProcessEngine, to_aggregate

__all__ = ["InProcessEngine", "to_aggregate"]
