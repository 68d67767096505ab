"""FedAvg simulation speed on workload W1 (../shared/benchmarks/WORKLOADS.md).

Times, in one process and interleaved, three loops that do the same per-sample gradient work:

* ``centralised``  -- the compute floor: plain PyTorch on the pooled training data,
  30 epochs (43,110 sample-gradients), ``torch.optim.SGD``;
* ``plain FedAvg`` -- a plain sequential PyTorch FedAvg loop written as in WORKLOADS.md
  (a reference for the accuracy and for what a straightforward FL loop costs);
* ``privfed sequential`` -- privfed's Server with the plain aggregator, the clients trained
  one after another (``vectorise=False``);
* ``privfed vectorised`` -- the same with the round's clients trained as one batched
  computation (:mod:`privfed.federated.cohort`, the default).

Run by hand: ``python benchmarks/fedavg_speed.py [--repeats 5]``. Prints a table of the
median times and the ratio of each to the centralised loop. Goals: sequential <= 1.05x
centralised, vectorised <= 0.5x, both with the reference accuracy (0.8611).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from privfed.aggregation import SecureAggregation
from privfed.data import load_dataset, make_partitioner
from privfed.federated import (
    Client,
    ClientSampler,
    FedAvg,
    InProcessEngine,
    LocalTraining,
    Server,
    SGDTrainer,
    bind_flat_parameters,
    evaluate,
)
from privfed.models import build_model
from privfed.secure import make_aggregator

ROUNDS, CLIENTS, BATCH, LR = 30, 10, 32, 0.05


def reference_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return evaluate(model, x.reshape(len(x), -1), y)[1]


def centralised(x, y, x_test, y_test) -> tuple[float, float]:
    x = x.reshape(len(x), -1)
    model = reference_model()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    started = time.perf_counter()
    for epoch in range(1, ROUNDS + 1):
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(epoch))
        for start in range(0, len(y), BATCH):
            idx = order[start : start + BATCH]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return time.perf_counter() - started, accuracy(model, x_test, y_test)


def plain_fedavg(x, y, parts, x_test, y_test) -> tuple[float, float]:
    x = x.reshape(len(x), -1)
    model = reference_model()
    shards = [(x[p], y[p]) for p in parts]
    sizes = torch.tensor([len(p) for p in parts], dtype=torch.float32)
    started = time.perf_counter()
    for r in range(1, ROUNDS + 1):
        global_state = {k: v.clone() for k, v in model.state_dict().items()}
        states = []
        for client_id, (cx, cy) in enumerate(shards):
            model.load_state_dict(global_state)
            opt = torch.optim.SGD(model.parameters(), lr=LR)
            order = torch.randperm(len(cy), generator=torch.Generator().manual_seed(
                100_000 * r + client_id))
            for start in range(0, len(cy), BATCH):
                idx = order[start : start + BATCH]
                opt.zero_grad()
                F.cross_entropy(model(cx[idx]), cy[idx]).backward()
                opt.step()
            states.append({k: v.clone() for k, v in model.state_dict().items()})
        weights = sizes / sizes.sum()
        model.load_state_dict(
            {k: sum(w * s[k] for w, s in zip(weights, states, strict=True)) for k in global_state}
        )
    return time.perf_counter() - started, accuracy(model, x_test, y_test)


def privfed_fedavg(x, y, parts, x_test, y_test, vectorise: bool) -> tuple[float, float]:
    model = build_model("mlp", tuple(x.shape[1:]), 10, seed=0, hidden=(128,))
    clients = [Client(client_id, x[p], y[p]) for client_id, p in enumerate(parts)]
    workspace = bind_flat_parameters(model)
    engine = InProcessEngine(
        workspace, clients,
        trainer=SGDTrainer(LocalTraining(epochs=1, batch_size=BATCH, lr=LR)),
        aggregation=SecureAggregation(make_aggregator("none")),
        vectorise=vectorise,
    )
    server = Server(
        workspace,
        engine,
        sampler=ClientSampler(CLIENTS, 1.0, seed=0),
        optimizer=FedAvg(lr=1.0),
        test_data=(x_test, y_test),
        batch_seed=lambda r, client_id: 100_000 * r + client_id,
        eval_every=ROUNDS,
    )
    started = time.perf_counter()
    server.fit(ROUNDS)
    elapsed = time.perf_counter() - started
    return elapsed, server.history.final_accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("BENCH_TORCH_THREADS", "1")))

    data = load_dataset("digits", scaling="unit")  # X / 16, stratified 80/20 split, seed 0
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    x_test, y_test = torch.from_numpy(data.x_test), torch.from_numpy(data.y_test)
    parts = [torch.from_numpy(p) for p in make_partitioner("iid").split(data.y_train, CLIENTS, 0)]

    loops = {
        "centralised (floor)": lambda: centralised(x, y, x_test, y_test),
        "plain PyTorch FedAvg": lambda: plain_fedavg(x, y, parts, x_test, y_test),
        "privfed sequential": lambda: privfed_fedavg(x, y, parts, x_test, y_test, False),
        "privfed vectorised": lambda: privfed_fedavg(x, y, parts, x_test, y_test, True),
    }
    for run in loops.values():  # warm-up: lazy imports, allocator
        run()
    times: dict[str, list[float]] = {name: [] for name in loops}
    accuracies: dict[str, float] = {}
    for _ in range(args.repeats):
        for name, run in loops.items():
            seconds, acc = run()
            times[name].append(seconds)
            accuracies[name] = acc

    floor = statistics.median(times["centralised (floor)"])
    print(f"W1: digits/16, {CLIENTS} IID clients, MLP 64-128-10, E=1 B={BATCH} lr={LR}, "
          f"{ROUNDS} rounds, {torch.get_num_threads()} torch thread(s), "
          f"median of {args.repeats}")
    print(f"{'loop':<24}{'30 rounds (s)':>14}{'s/round':>10}{'x floor':>9}{'accuracy':>10}")
    for name in loops:
        median = statistics.median(times[name])
        print(f"{name:<24}{median:>14.3f}{median / ROUNDS:>10.4f}{median / floor:>9.2f}"
              f"{accuracies[name]:>10.4f}")
    for name, goal in (("privfed sequential", 1.05), ("privfed vectorised", 0.5)):
        ratio = statistics.median(times[name]) / floor
        print(f"{name} / centralised = {ratio:.2f} (goal <= {goal}); accuracy "
              f"{accuracies[name]:.4f} vs reference {accuracies['plain PyTorch FedAvg']:.4f}")


if __name__ == "__main__":
    main()
