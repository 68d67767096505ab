"""Run privfed federations on Flower: its simulation engine or its deployment runtime.

Needs the ``flower`` extra: ``pip install 'privfed[flower]'``.

* :func:`make_server_app` / :func:`make_client_app`: Flower apps built from a privfed config
  (local training with Opacus DP-SGD, privfed's server with FedAvg, central DP and the
  server optimizer, secure aggregation whose bytes travel as Flower messages).
* :func:`run_flower_simulation`: the config in Flower's simulation engine.
* :func:`run_flower_deployment`: the config on running SuperLink/SuperNodes (``flwr run``).
* :class:`LocalDeployment`: a SuperLink and SuperNodes on this machine.
"""

try:
    import flwr  # noqa: F401
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "privfed's Flower engines need Flower: pip install 'privfed[flower]'"
    ) from err

from .apps import (
    config_from_run_config,
    flower_config,
    make_client_app,
    make_server_app,
)
from .engine import FlowerEngine, FlowerOptions
from .engines import run_flower_deployment, run_flower_simulation, write_flower_app
from .local import LocalDeployment

__all__ = [
    "FlowerOptions",
    "FlowerEngine",
    "LocalDeployment",
    "flower_config",
    "config_from_run_config",
    "make_client_app",
    "make_server_app",
    "run_flower_deployment",
    "run_flower_simulation",
    "write_flower_app",
]
