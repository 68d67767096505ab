"""Flower ServerApp and ClientApp built from a privfed config.

The same two apps run in Flower's simulation engine (:func:`make_server_app` and
:func:`make_client_app` given the config) and on Flower's deployment runtime (the module-level
:data:`server_app` and :data:`client_app`, which read the config from the run config that
``privfed run --engine flower`` ships with the app; see :mod:`.engines`).

Run-config keys (``flwr run --run-config``): ``privfed-config`` (the experiment config as
TOML text), ``output-dir`` (where the ServerApp writes the run directory),
``stage-timeout`` and ``connect-timeout`` (seconds, see :class:`FlowerOptions`). SuperNode
node-config keys: ``partition-id`` (which client of the federation the node is), optionally
``data-dir`` (where that node finds a built-in dataset's files) or ``data-path`` (the site's
own data file, read with the config's ``[data]`` format, label column and declared
features; the node then reads nothing else), and, to pin the sites' keys instead
of trusting the server to relay them, ``pinned-keys`` (a JSON file ``client id -> Ed25519
public key``, see :meth:`privfed.secure.IdentityRegistry.from_file`) with ``identity-key``
(this site's PEM private key, see :meth:`privfed.secure.ClientIdentity.to_file`).
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from privfed.clientdata import declared_schema, load_configured_dataset
from privfed.config import ConfigError, ExperimentConfig, config_from_dict
from privfed.experiment import build_parts, build_server
from privfed.federated import History, Observer, RoundRecord, Server
from privfed.federated.metrics import format_metrics
from privfed.rundir import Trainer, train_run
from privfed.secure import CLIENT_STAGES

from . import messages
from .engine import FlowerEngine, FlowerOptions
from .node import ClientNode

__all__ = [
    "CONFIG_KEY",
    "FAILED",
    "FINISHED",
    "client_app",
    "config_from_run_config",
    "flower_config",
    "make_client_app",
    "make_server_app",
    "over_grid",
    "run_server",
    "server_app",
]

CONFIG_KEY = "privfed-config"
FINISHED = "[privfed] finished:"
"""The ServerApp's last line of output after a successful run."""
FAILED = "[privfed] failed:"
"""The ServerApp's last line of output when the run failed."""
_ROUTES: dict[str, Callable[[ClientNode, Message], RecordDict]] = {
    messages.REGISTER: ClientNode.register,
    messages.TRAIN: ClientNode.train,
    messages.EVALUATE: ClientNode.evaluate,
    **{messages.stage_type(stage): ClientNode.stage for stage in CLIENT_STAGES},
}


def flower_config(config: ExperimentConfig) -> ExperimentConfig:
    """``config`` as the Flower engines run it: with a privacy mechanism, its noise and DP
    sampling always come from OS entropy (``privacy.secure_mode = true``). Across
    processes every node builds from the same config, so seeded noise could be regenerated
    by the server and every other node."""
    privacy = config.privacy
    if privacy.mechanism == "none" or privacy.secure_mode:
        return config
    return dataclasses.replace(config, privacy=dataclasses.replace(privacy, secure_mode=True))


def config_from_run_config(run_config: Mapping[str, Any]) -> ExperimentConfig:
    """The experiment config shipped in a Flower run config under :data:`CONFIG_KEY`."""
    if CONFIG_KEY not in run_config:
        raise ConfigError(
            f"the Flower run config has no {CONFIG_KEY!r}: start privfed's apps with "
            "`privfed run CONFIG --engine flower` (which ships the config)"
        )
    return config_from_dict(tomllib.loads(str(run_config[CONFIG_KEY])))


def _options(run_config: Mapping[str, Any]) -> FlowerOptions:
    names = {"stage-timeout": "stage_timeout", "connect-timeout": "connect_timeout"}
    return FlowerOptions(**{attr: float(run_config[key])
                            for key, attr in names.items() if key in run_config})


def over_grid(grid: Grid, options: FlowerOptions) -> Trainer:
    """A :data:`privfed.rundir.Trainer` that trains a config over ``grid``: the server's
    parts on a :class:`FlowerEngine`, whose clients are the grid's SuperNodes. With a
    site's own files the server opens no data file: it builds from the config's declared
    schema (:func:`privfed.clientdata.declared_schema`) and evaluates on the clients."""

    def train(
        config: ExperimentConfig,
        observers: Sequence[Observer] = (),
        on_round: Callable[[RoundRecord], None] | None = None,
    ) -> tuple[Server, History]:
        if config.data.is_site_data:  # the sites hold the data; the server reads none
            dataset, parts = None, build_parts(config, declared_schema(config))
        else:
            dataset = load_configured_dataset(config)
            parts = build_parts(config, dataset)
        engine = FlowerEngine(grid, config, parts, options)
        server = build_server(config, parts, engine, dataset, observers)
        engine.connect()
        return server, server.fit(config.federation.rounds, on_round)

    return train


def run_server(
    grid: Grid,
    config: ExperimentConfig,
    options: FlowerOptions,
    *,
    run_dir: str | Path | None = None,
    on_round: Callable[[RoundRecord], None] | None = None,
) -> tuple[Server, History]:
    """Train ``config``'s federation over ``grid``; write the run directory if given
    (through :func:`privfed.rundir.train_run`, the one run writer).

    Returns
    -------
    server : Server
        On a :class:`FlowerEngine`, holding the final global model (and no client's data).
    history : History
    """
    config, train = flower_config(config), over_grid(grid, options)
    if run_dir is None:
        return train(config, (), on_round)
    result = train_run(config, run_dir, train=train, on_round=on_round)
    return result.server, result.history


def _print_round(record: RoundRecord) -> None:
    accuracy = "" if record.test_accuracy is None else f"  acc {record.test_accuracy:.4f}"
    loss = "-" if record.train_loss is None else f"{record.train_loss:.4f}"
    print(f"[privfed] round {record.round}: {len(record.clients)} clients  loss {loss}"
          f"{accuracy}  {record.seconds:.2f} s", flush=True)
    pooled = (record.federated or {}).get("pooled")
    if pooled:
        print(f"[privfed] round {record.round} federated evaluation: "
              f"{format_metrics(pooled)}", flush=True)


def make_server_app(
    config: ExperimentConfig | None = None,
    options: FlowerOptions | None = None,
    *,
    run_dir: str | Path | None = None,
    results: list | None = None,
) -> ServerApp:
    """privfed's ServerApp.

    Parameters
    ----------
    config : ExperimentConfig, optional
        The federation; default: read from the run config (:data:`CONFIG_KEY`).
    options : FlowerOptions, optional
        Default: from the run config, else the defaults.
    run_dir : path, optional
        Where to write the run directory; default: the run config's ``output-dir``, else
        none is written.
    results : list, optional
        If given, ``(server, history)`` is appended to it when training ends (to read
        the results in the process that started a simulation).
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_config = context.run_config
        target = run_dir or run_config.get("output-dir")
        try:
            outcome = run_server(
                grid,
                config or config_from_run_config(run_config),
                options or _options(run_config),
                run_dir=target,
                on_round=_print_round,
            )
        except Exception as err:
            print(f"{FAILED} {type(err).__name__}: {err}", flush=True)
            raise
        where = f"run directory {target}" if target is not None else "no run directory"
        print(f"{FINISHED} {where}", flush=True)
        if results is not None:
            results.append(outcome)

    return app


def make_client_app(config: ExperimentConfig | None = None) -> ClientApp:
    """privfed's ClientApp: each SuperNode is client ``node_config["partition-id"]``.

    Parameters
    ----------
    config : ExperimentConfig, optional
        The federation; default: read from the run config (:data:`CONFIG_KEY`).
    """
    app = ClientApp()
    for message_type, action in _ROUTES.items():
        category, name = message_type.split(".")
        register = getattr(app, category)(name)
        register(_handler(config, action))
    return app


def _handler(
    config: ExperimentConfig | None, action: Callable[[ClientNode, Message], Any]
) -> Callable[[Message, Context], Message]:
    def handle(message: Message, context: Context) -> Message:
        node_config = context.node_config
        if "partition-id" not in node_config:
            raise ConfigError(
                "the SuperNode has no partition-id: start it with --node-config "
                "'partition-id=<client id>'"
            )
        federation = flower_config(config or config_from_run_config(context.run_config))
        if "data-dir" in node_config:
            federation = dataclasses.replace(
                federation,
                data=dataclasses.replace(federation.data, data_dir=str(node_config["data-dir"])),
            )
        node = ClientNode(
            federation, int(node_config["partition-id"]), context.state,
            identity_key=node_config.get("identity-key"),
            pinned_keys=node_config.get("pinned-keys"),
            data_path=node_config.get("data-path"),
        )
        return Message(action(node, message), reply_to=message)

    return handle


server_app = make_server_app()
"""The deployment ServerApp: config from the run config."""

client_app = make_client_app()
"""The deployment ClientApp: config from the run config."""
