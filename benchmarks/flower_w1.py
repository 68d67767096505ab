"""Workload W1 (../shared/benchmarks/WORKLOADS.md) in plain Flower: Flower's own FedAvg.

The reference of ``benchmarks/engines.py``: a ServerApp running ``flwr``'s FedAvg strategy and
a ClientApp that trains exactly as W1 says (seeds ``100000 * r + client_id``). It imports only
numpy, torch, scikit-learn and flwr, because it is also the module of the Flower app that
``engines.py`` ships to a deployment (``flower_w1:server_app`` / ``flower_w1:client_app``),
imported by every ClientApp process there.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from torch import nn

CLIENTS, BATCH, LR = 10, 32, 0.05
_W1_DATA: dict[str, object] = {}


def torch_threads() -> int:
    return int(os.environ.get("BENCH_TORCH_THREADS", "1"))


def w1_data() -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor, torch.Tensor]:
    """W1's client shards and test set (built once per process)."""
    if not _W1_DATA:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        x, y = load_digits(return_X_y=True)
        x = (x / 16.0).astype(np.float32)
        y = y.astype(np.int64)
        x_train, x_test, y_train, y_test = train_test_split(
            x, y, test_size=0.2, stratify=y, random_state=0)
        perm = np.random.default_rng(0).permutation(len(y_train))
        _W1_DATA["shards"] = [(torch.from_numpy(x_train[p]), torch.from_numpy(y_train[p]))
                              for p in np.array_split(perm, CLIENTS)]
        _W1_DATA["test"] = (torch.from_numpy(x_test), torch.from_numpy(y_test))
    return _W1_DATA["shards"], *_W1_DATA["test"]


def w1_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


def make_w1_client_app() -> ClientApp:
    """W1's client: 1 epoch of SGD on shard ``partition-id`` from the received model."""
    app = ClientApp()

    @app.train()
    def train(message: Message, context: Context) -> Message:
        torch.set_num_threads(torch_threads())
        client_id = int(context.node_config["partition-id"])
        r = int(message.content["config"]["server-round"])
        shards, _, _ = w1_data()
        x, y = shards[client_id]
        model = w1_model()
        model.load_state_dict(message.content["arrays"].to_torch_state_dict())
        opt = torch.optim.SGD(model.parameters(), lr=LR)
        seed = 100_000 * r + client_id
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
        for start in range(0, len(y), BATCH):
            idx = order[start : start + BATCH]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        content = RecordDict({"arrays": ArrayRecord(model.state_dict()),
                              "metrics": MetricRecord({"num-examples": len(y)})})
        return Message(content=content, reply_to=message)

    return app


def make_w1_server_app(rounds: int | None = None, results: list | None = None) -> ServerApp:
    """W1's server: Flower's FedAvg over all 10 nodes, centralised accuracy after the last
    round. Prints ``[w1] round R at T`` (``time.time()``) at the end of every round (round 0:
    the start of round 1) and ``[w1] accuracy A``; appends ``(stamps, accuracy)`` to
    ``results`` if given. ``rounds`` defaults to the run config's ``num-rounds``."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        torch.set_num_threads(torch_threads())
        num_rounds = rounds or int(context.run_config["num-rounds"])
        _, x_test, y_test = w1_data()
        model = w1_model()
        initial = ArrayRecord(model.state_dict())
        while len(list(grid.get_node_ids())) < CLIENTS:  # as privfed's server does
            time.sleep(0.2)
        stamps: list[float] = []
        accuracy: list[float] = []

        def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
            stamps.append(time.time())
            print(f"[w1] round {server_round} at {stamps[-1]:.6f}", flush=True)
            if server_round < num_rounds:
                return None
            model.load_state_dict(arrays.to_torch_state_dict())
            with torch.no_grad():
                accuracy.append(float((model(x_test).argmax(1) == y_test).float().mean()))
            print(f"[w1] accuracy {accuracy[-1]:.6f}", flush=True)
            return MetricRecord({"accuracy": accuracy[-1]})

        strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=CLIENTS,
                          min_available_nodes=CLIENTS)
        strategy.start(grid=grid, initial_arrays=initial, num_rounds=num_rounds,
                       evaluate_fn=evaluate)
        if results is not None:
            results.append((stamps, accuracy[-1]))

    return app


server_app = make_w1_server_app()
"""The deployment ServerApp (rounds from the run config's ``num-rounds``)."""

client_app = make_w1_client_app()
