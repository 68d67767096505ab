"""Cost of local DP-SGD (the fast path and Opacus's ghost clipping) against training without DP.

Workload: digits (embedded), 10 IID clients, 1 local epoch per round, batch size 32,
lr 0.05, one torch thread (``BENCH_TORCH_THREADS`` overrides), and a model:

* ``--model mlp`` (default): the MLP (hidden 128) on the 8 x 8 images, 30 rounds;
* ``--model cnn``: McMahan's CNN on the same digits upsampled (bilinear) to MNIST's
  1 x 28 x 28, 2 rounds (no download: the images are the embedded digits).

Only the clients' local training is timed (no aggregation), interleaved over ``--repeats``
runs:

* ``plain``    -- privfed's non-private :class:`~privfed.federated.trainer.SGDTrainer`
  (shuffled consecutive batches, one flat SGD update per step);
* ``poisson``  -- the same training without DP on DP-SGD's batches: Opacus's Poisson
  sampler at the public rate ``q = B / n_ref``, summed loss, ``torch.optim.SGD`` with
  ``lr / B`` (what DP-SGD does, minus the clipping and the noise);
* ``dp-sgd-opacus`` -- :class:`~privfed.privacy.DPSGDTrainer` with ``backend="opacus"``:
  the same batches with per-example clipping (C = 1) and Gaussian noise (sigma = 1), seeded
  from the batch generator;
* ``dp-sgd-fast`` -- the same with ``backend="fast"`` (closed-form per-example clipping);
* ``dp-sgd-secure`` -- the fast path with ``privacy.secure_mode``: batches and noise from a
  ChaCha20 keystream keyed from OS entropy;
* ``plain-batched`` and ``dp-sgd-batched`` -- ``plain`` and ``dp-sgd-fast`` with the round's
  10 clients trained as one batched computation (:mod:`privfed.federated.cohort`, what the
  in-process engine does by default; the MLP only: the CNN's clients train one after
  another).

Run by hand: ``python benchmarks/dp_overhead.py [--model cnn] [--repeats 5]``. Prints the
median wall and CPU times (``time.process_time``: with one torch thread, the process's own
time, which other processes on a shared machine disturb less) and each row's CPU-time
ratios to ``plain`` and to ``poisson`` (same batches, no DP); goal for DP-SGD:
<= 1.5 x non-private on the MLP, <= 2 x on the CNN (batched DP-SGD against batched plain
training, where the model allows it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from torch import nn

from privfed.data import load_dataset, make_partitioner
from privfed.federated import Client, LocalTraining, bind_flat_parameters
from privfed.federated.cohort import StackedModel
from privfed.federated.trainer import SGDTrainer
from privfed.models import build_model
from privfed.privacy import (
    DPSGDParams,
    DPSGDTrainer,
    NoisePolicy,
    default_sample_rate,
    local_steps_per_round,
)

CLIENTS = 10
ROUNDS = {"mlp": 30, "cnn": 2}
TRAINING = LocalTraining(epochs=1, batch_size=32, lr=0.05)
KINDS = ("plain", "poisson", "dp-sgd-opacus", "dp-sgd-fast", "dp-sgd-secure")
BATCHED = {"plain-batched": "plain", "dp-sgd-batched": "dp-sgd-fast"}
"""Rows that train the round's clients as one batched computation, and the trainer each
uses."""


def _poisson_sgd(client: Client, workspace, start, generator, params: DPSGDParams) -> None:
    """Local training on DP-SGD's Poisson batches, without clipping or noise."""
    workspace.load(start)
    module = workspace.module
    optimizer = torch.optim.SGD(module.parameters(), lr=TRAINING.lr / params.normaliser)
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    sampler = UniformWithReplacementSampler(num_samples=client.num_samples,
                                            sample_rate=params.sample_rate, generator=generator)
    for _ in range(TRAINING.epochs):
        for batch in sampler:
            index = torch.as_tensor(batch, dtype=torch.long)
            optimizer.zero_grad()
            loss_fn(module(client.x[index]), client.y[index]).backward()
            optimizer.step()


def _images(model: str) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...], int, list]:
    """Training images, labels, input shape, class count and the clients' index sets."""
    data = load_dataset("digits")
    parts = make_partitioner("iid").split(data.y_train, CLIENTS, seed=0)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    if model == "cnn":
        x = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)
    return x, y, tuple(x.shape[1:]), data.num_classes, parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", choices=sorted(ROUNDS), default="mlp")
    parser.add_argument("--rounds", type=int, help="default: 30 (mlp), 2 (cnn)")
    parser.add_argument("--hidden", type=int, nargs="+", default=[128], help="mlp only")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("BENCH_TORCH_THREADS", "1")))
    rounds = args.rounds or ROUNDS[args.model]
    x, y, shape, classes, parts = _images(args.model)
    options = {"hidden": tuple(args.hidden)} if args.model == "mlp" else {}

    def model():
        return bind_flat_parameters(build_model(args.model, shape, classes, seed=0, **options))

    stacked = StackedModel.of(model())
    kinds = KINDS + (tuple(BATCHED) if stacked is not None else ())
    spaces = {kind: model() for kind in kinds}
    start = spaces["plain"].data.clone()
    clients = [Client(c, x[torch.from_numpy(i)], y[torch.from_numpy(i)])
               for c, i in enumerate(parts)]
    rate = default_sample_rate(TRAINING.batch_size, len(y) // CLIENTS)
    params = DPSGDParams(1.0, 1.0, rate, local_steps_per_round(rate, TRAINING.epochs),
                         float(TRAINING.batch_size))
    trainers = {
        "plain": SGDTrainer(TRAINING),
        "dp-sgd-opacus": DPSGDTrainer(params, TRAINING, NoisePolicy(False), backend="opacus"),
        "dp-sgd-fast": DPSGDTrainer(params, TRAINING, NoisePolicy(False), backend="fast"),
        "dp-sgd-secure": DPSGDTrainer(params, TRAINING, NoisePolicy(True), backend="fast"),
    }

    def run(kind: str) -> tuple[float, float]:
        began, cpu = time.perf_counter(), time.process_time()
        for r in range(1, rounds + 1):
            if kind in BATCHED:
                generators = [torch.Generator().manual_seed(100_000 * r + c.client_id)
                              for c in clients]
                starts = start.expand(len(clients), -1)
                trainers[BATCHED[kind]].fit_cohort(stacked, clients, starts, generators)
                continue
            for client in clients:
                generator = torch.Generator().manual_seed(100_000 * r + client.client_id)
                if kind == "poisson":
                    _poisson_sgd(client, spaces[kind], start, generator, params)
                else:
                    trainers[kind].fit(client, spaces[kind], start, generator)
        return time.perf_counter() - began, time.process_time() - cpu

    times: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
    for kind in kinds:  # warm-up
        run(kind)
    for _ in range(args.repeats):
        for kind in kinds:
            times[kind].append(run(kind))
    wall = {k: statistics.median(w for w, _ in v) for k, v in times.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in times.items()}
    what = f"MLP hidden={args.hidden}" if args.model == "mlp" else "CNN, 1x28x28"
    print(f"digits, {what}, {CLIENTS} clients x {rounds} rounds x "
          f"{params.steps_per_round} steps, B={TRAINING.batch_size}, "
          f"torch threads={torch.get_num_threads()}, median of {args.repeats}")
    print("  ratios of CPU time (this process's, steadier than wall time on a shared machine)")
    print(f"  {'kind':14s} {'wall':>9s} {'CPU':>9s} {'/ plain':>8s} {'/ poisson':>10s}")
    for kind in kinds:
        print(f"  {kind:14s} {wall[kind]:7.3f} s {cpu[kind]:7.3f} s "
              f"{cpu[kind] / cpu['plain']:8.2f} {cpu[kind] / cpu['poisson']:10.2f}")


if __name__ == "__main__":
    main()
