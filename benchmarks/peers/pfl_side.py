"""One workload in Apple's pfl 0.6.0 (PyTorch backend), run by ``peers.py`` in pfl's own venv.

Reads the workload file ``peers.py`` wrote (data, client shards, cohort schedule, initial
weights: the same arrays privfed's side reads) and trains it with pfl's ``SimulatedBackend``,
``FederatedAveraging`` weighted by data points and a central ``SGD(lr=1)``. Each user's
dataset holds its samples in the batch order privfed uses in that round
(``torch.randperm(n, generator=manual_seed(100000 * r + client_id))``), so both sides compute
the same updates. Prints one JSON line: the CPU seconds of each round, the test accuracy
after the last round and the peak resident memory of this process.

This file must not import privfed: it runs where privfed is not installed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from workload import read_workload

BATCH, LR = 32, 0.05


class Net(nn.Module):
    """The workload's MLP with the loss and metrics pfl's ``PyTorchModel`` calls."""

    def __init__(self, weights: list[np.ndarray]) -> None:
        super().__init__()
        hidden, features = weights[0].shape
        self.body = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(),
                                  nn.Linear(hidden, weights[2].shape[0]))
        with torch.no_grad():
            for parameter, value in zip(self.parameters(), weights, strict=True):
                parameter.copy_(torch.from_numpy(value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self(x), y)

    @torch.no_grad()
    def metrics(self, x: torch.Tensor, y: torch.Tensor, eval: bool = False) -> dict:  # noqa: A002
        from pfl.metrics import Weighted

        return {"loss": Weighted(F.cross_entropy(self(x), y, reduction="sum").item(), len(y))}


def run(path: str) -> dict:
    from pfl.aggregate.simulate import SimulatedBackend
    from pfl.aggregate.weighting import WeightByDatapoints
    from pfl.algorithm import FederatedAveraging, NNAlgorithmParams
    from pfl.callback.base import TrainingProcessCallback
    from pfl.data.dataset import Dataset
    from pfl.data.federated_dataset import FederatedDataset
    from pfl.hyperparam import NNEvalHyperParams, NNTrainHyperParams
    from pfl.model.pytorch import PyTorchModel

    workload = read_workload(path)
    work, x, y = workload.arrays, workload.x, workload.y
    shards, schedule = workload.shards, workload.schedule
    rounds, cohort = schedule.shape

    def users() -> Iterator[tuple[int, int]]:
        for r, ids in enumerate(schedule, start=1):
            for cid in ids:
                yield r, int(cid)

    order = users()

    def make_dataset(user: tuple[int, int]) -> Dataset:
        r, cid = user
        shard = shards[cid]
        perm = torch.randperm(len(shard), generator=torch.Generator().manual_seed(
            100_000 * r + cid))
        chosen = torch.from_numpy(shard)[perm]
        return Dataset(raw_data=[x[chosen], y[chosen]], user_id=cid)

    data = FederatedDataset(make_dataset, lambda: next(order))
    net = Net([work[f"w{i}"] for i in range(4)])
    model = PyTorchModel(model=net, local_optimizer_create=torch.optim.SGD,
                         central_optimizer=torch.optim.SGD(net.parameters(), lr=1.0))
    stamps: list[float] = []

    class Clock(TrainingProcessCallback):
        def on_train_begin(self, *, model):  # noqa: ANN001
            from pfl.metrics import Metrics

            stamps.append(time.process_time())
            return Metrics()

        def after_central_iteration(self, aggregate_metrics, model, *,  # noqa: ANN001
                                    central_iteration):  # noqa: ANN001
            from pfl.metrics import Metrics

            stamps.append(time.process_time())
            return False, Metrics()

    backend = SimulatedBackend(training_data=data, val_data=data,
                               postprocessors=[WeightByDatapoints()])
    FederatedAveraging().run(
        algorithm_params=NNAlgorithmParams(central_num_iterations=rounds,
                                           evaluation_frequency=rounds + 1,
                                           train_cohort_size=cohort, val_cohort_size=0),
        backend=backend, model=model,
        model_train_params=NNTrainHyperParams(local_learning_rate=LR, local_num_epochs=1,
                                              local_batch_size=BATCH),
        model_eval_params=NNEvalHyperParams(local_batch_size=None),
        callbacks=[Clock()],
    )
    with torch.no_grad():
        predicted = net(torch.from_numpy(work["x_test"])).argmax(1)
    accuracy = float((predicted == torch.from_numpy(work["y_test"])).float().mean())
    return {"round_cpu_s": list(np.diff(stamps)), "accuracy": accuracy,
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", help="the .npz file peers.py wrote")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("BENCH_TORCH_THREADS", "1")))
    print(json.dumps(run(args.workload)))


if __name__ == "__main__":
    main()
