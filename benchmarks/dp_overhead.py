"""Cost of local DP-SGD (Opacus, ghost clipping) against the same training without DP.

Workload: digits (embedded), 10 IID clients, the MLP, 30 rounds of 1 local epoch, batch
size 32, lr 0.05, one torch thread (``BENCH_TORCH_THREADS`` overrides). Only the clients'
local training is timed (no aggregation), interleaved over ``--repeats`` runs:

* ``plain``    -- privfed's non-private :class:`~privfed.federated.trainer.SGDTrainer`
  (shuffled consecutive batches, one flat SGD update per step);
* ``poisson``  -- the same training without DP on DP-SGD's batches: Opacus's Poisson
  sampler at the public rate ``q = B / n_ref``, summed loss, ``torch.optim.SGD`` with
  ``lr / B`` (what DP-SGD does, minus the clipping and the noise);
* ``dp-sgd``   -- :class:`~privfed.privacy.DPSGDTrainer`: the same batches with per-example
  clipping (C = 1) and Gaussian noise (sigma = 1), seeded from the batch generator;
* ``dp-sgd-secure`` -- the same with ``privacy.secure_mode``: batches and noise from a
  ChaCha20 keystream keyed from OS entropy.

Run by hand: ``python benchmarks/dp_overhead.py [--repeats 5] [--hidden 128]``. Prints the
median times and the ratios ``dp-sgd / poisson`` (goal: <= 2.5), ``dp-sgd / plain`` and
``dp-sgd-secure / dp-sgd`` (the cost of noise nobody else can regenerate).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from torch import nn

from privfed.data import load_dataset, make_partitioner
from privfed.federated import Client, LocalTraining, bind_flat_parameters
from privfed.federated.trainer import SGDTrainer
from privfed.models import build_model
from privfed.privacy import (
    DPSGDParams,
    DPSGDTrainer,
    NoisePolicy,
    default_sample_rate,
    local_steps_per_round,
)

ROUNDS, CLIENTS = 30, 10
TRAINING = LocalTraining(epochs=1, batch_size=32, lr=0.05)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hidden", type=int, nargs="+", default=[128])
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("BENCH_TORCH_THREADS", "1")))

    data = load_dataset("digits")
    parts = make_partitioner("iid").split(data.y_train, CLIENTS, seed=0)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)

    def model():
        return bind_flat_parameters(build_model("mlp", data.input_shape, data.num_classes,
                                                seed=0, hidden=tuple(args.hidden)))

    plain_ws, poisson_ws, dp_ws = model(), model(), model()
    start = plain_ws.data.clone()
    plain = [Client(c, x[torch.from_numpy(i)], y[torch.from_numpy(i)])
             for c, i in enumerate(parts)]
    rate = default_sample_rate(TRAINING.batch_size, len(data.y_train) // CLIENTS)
    params = DPSGDParams(1.0, 1.0, rate, local_steps_per_round(rate, TRAINING.epochs),
                         float(TRAINING.batch_size))
    sgd = SGDTrainer(TRAINING)
    private = {secure: DPSGDTrainer(params, TRAINING, NoisePolicy(secure))
               for secure in (False, True)}

    def run(kind: str) -> float:
        began = time.perf_counter()
        for r in range(1, ROUNDS + 1):
            for client in plain:
                generator = torch.Generator().manual_seed(100_000 * r + client.client_id)
                if kind == "plain":
                    sgd.fit(client, plain_ws, start, generator)
                elif kind == "poisson":
                    _poisson_sgd(client, poisson_ws, start, generator, params)
                else:
                    private[kind == "dp-sgd-secure"].fit(client, dp_ws, start, generator)
        return time.perf_counter() - began

    kinds = ("plain", "poisson", "dp-sgd", "dp-sgd-secure")
    times: dict[str, list[float]] = {k: [] for k in kinds}
    run("dp-sgd")  # warm-up
    for _ in range(args.repeats):
        for kind in kinds:
            times[kind].append(run(kind))
    median = {k: statistics.median(v) for k, v in times.items()}
    print(f"digits, MLP hidden={args.hidden}, {CLIENTS} clients x {ROUNDS} rounds, "
          f"B={TRAINING.batch_size}, torch threads={torch.get_num_threads()}, "
          f"Opacus grad-sample mode: ghost")
    for kind in kinds:
        print(f"  {kind:14s} {median[kind]:7.3f} s")
    same = median["dp-sgd"] / median["poisson"]
    print(f"ratio dp-sgd / poisson (same batches, no DP): {same:.2f}")
    print(f"ratio dp-sgd / plain privfed client:          {median['dp-sgd'] / median['plain']:.2f}")
    secure = median["dp-sgd-secure"] / median["dp-sgd"]
    print(f"ratio dp-sgd-secure / dp-sgd (secure noise):  {secure:.2f}")


if __name__ == "__main__":
    main()
