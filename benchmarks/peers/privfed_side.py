"""One workload in privfed (in-process engine, plain aggregator), run by ``peers.py``.

Reads the workload file ``peers.py`` wrote (the same arrays pfl's side reads), checks that
privfed's own model initialisation and client sampler give its initial weights and cohort
schedule, trains through privfed's public API as ``benchmarks/fedavg_speed.py`` does and
prints one JSON line: the CPU seconds of each round, the test accuracy after the last round
and the peak resident memory of this process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import numpy as np
import torch
from workload import read_workload

from privfed.aggregation import SecureAggregation
from privfed.federated import (
    Client,
    ClientSampler,
    FedAvg,
    InProcessEngine,
    LocalTraining,
    Server,
    SGDTrainer,
    bind_flat_parameters,
)
from privfed.models import build_model
from privfed.secure import make_aggregator

BATCH, LR = 32, 0.05


def run(path: str) -> dict:
    workload = read_workload(path)
    work, x, y = workload.arrays, workload.x, workload.y
    shards, schedule = workload.shards, workload.schedule
    rounds, cohort = schedule.shape
    hidden, features = work["w0"].shape
    model = build_model("mlp", (features,), int(work["w2"].shape[0]), seed=0, hidden=(hidden,))
    for parameter, expected in zip(model.parameters(), (work[f"w{i}"] for i in range(4)),
                                   strict=True):
        if not np.array_equal(parameter.detach().numpy(), expected):
            raise RuntimeError("privfed's initial weights differ from the workload's")
    sampler = ClientSampler(len(shards), cohort / len(shards), seed=1)
    check = ClientSampler(len(shards), cohort / len(shards), seed=1)
    if [check.sample() for _ in range(rounds)] != schedule.tolist():
        raise RuntimeError("privfed's sampler draws another schedule than the workload's")
    clients = [Client.from_rows(cid, x, y, torch.from_numpy(s).long())
               for cid, s in enumerate(shards)]
    workspace = bind_flat_parameters(model)
    engine = InProcessEngine(
        workspace, clients,
        trainer=SGDTrainer(LocalTraining(epochs=1, batch_size=BATCH, lr=LR)),
        aggregation=SecureAggregation(make_aggregator("none")),
    )
    server = Server(
        workspace, engine, sampler=sampler, optimizer=FedAvg(lr=1.0),
        test_data=(torch.from_numpy(work["x_test"]), torch.from_numpy(work["y_test"])),
        batch_seed=lambda r, client_id: 100_000 * r + client_id, eval_every=rounds,
    )
    stamps = [time.process_time()]
    server.fit(rounds, on_round=lambda record: stamps.append(time.process_time()))
    return {"round_cpu_s": list(np.diff(stamps)), "accuracy": server.history.final_accuracy,
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", help="the .npz file peers.py wrote")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("BENCH_TORCH_THREADS", "1")))
    print(json.dumps(run(args.workload)))


if __name__ == "__main__":
    main()
