"""Seconds per round of workload W1 on privfed's engines and on Flower 1.42's own FedAvg.

W1 (../shared/benchmarks/WORKLOADS.md): digits/16, 10 IID clients all training every round,
MLP 64-128-10, 1 local epoch, SGD lr 0.05, batch 32, 30 rounds, test accuracy after the last
round only, one torch thread per process. Five rows, each run in a fresh Python process of
its own (so Ray, imports and Flower's processes never leak from one row into the next):

* ``privfed / in-process``      -- ``build_simulation(config).run()``; s/round from
  ``History.rounds[i].seconds``;
* ``privfed / flower-sim``      -- ``run_flower_simulation(config)`` (Ray); s/round from its
  History;
* ``Flower FedAvg / flower-sim``-- Flower's ``flwr.serverapp.strategy.FedAvg`` with a ClientApp
  that trains exactly as W1 says (seeds ``100000 * r + client_id``; both in ``flower_w1.py``), in
  ``run_simulation``; a round
  is the time between two calls of the server-side ``evaluate_fn`` (called once before round
  1 and once after every round; the accuracy is computed only after the last one);
* ``privfed / deployment``      -- ``run_flower_deployment`` against a fresh
  ``LocalDeployment(10)`` (a real SuperLink and 10 SuperNodes on 127.0.0.1); s/round from the
  run directory's ``metrics.jsonl``, accuracy from its ``summary.json``;
* ``Flower FedAvg / deployment``-- the same W1 apps as row 3 shipped with ``flwr run --stream``
  to a fresh ``LocalDeployment(10)``; the ServerApp prints a timestamp per round, parsed from
  the stream.

Both simulation rows use the same Ray backend (1 CPU per ClientApp, ``--ray-cpus`` CPUs). Both
ServerApps wait for all 10 nodes before round 1. Columns: ``median`` = median s/round of rounds
2..N (steady state; round 1 carries actor or process warm-up), ``mean`` = mean over all N
rounds; ``run s`` = wall time of the training call (in-process: build + train; simulation:
``run_simulation`` including Ray start-up and tear-down; deployment: ``flwr run`` from app
submission to the end of the run); ``process s`` = wall time of the whole row process
(interpreter start, imports, deployment start-up and shut-down included).

Deployment rounds are slow (Flower starts a new ClientApp process per message), so the
deployment rows run ``--deploy-rounds`` rounds only: compare them only with each other.

A simulation round waits on two free-running 0.1 s polling loops of Flower (the ServerApp's
grid and the engine's message queue), so its s/round sits near 0.1 or 0.2 s depending on how
the two loops' phases drift, which a few milliseconds of server work between rounds change;
``--repeats`` runs the in-process and simulation rows in several processes (interleaved) and
reports the medians.

Run by hand: ``python benchmarks/engines.py [--rounds 30] [--deploy-rounds 3] [--repeats 3]
[--skip-deployment] [--verbose]`` (about 1 minute per simulation row and 3 minutes per
deployment row on 2 cores). Goals: in-process >= 5x faster per round than Flower's FedAvg in
simulation at equal accuracy; privfed on Flower <= 1.2x Flower's own FedAvg per round on the
same engine. Machines are noisy: compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import flower_w1
import numpy as np
import torch
from flower_w1 import BATCH, CLIENTS, LR, torch_threads

ACCURACY_TOLERANCE = 0.02
"""Accuracies this close count as equal (privfed's batch orders come from its experiment
seed, not W1's, so its accuracy may differ slightly from W1's 0.8611)."""
SPEEDUP_GOAL, OVERHEAD_GOAL = 5.0, 1.2
W1_ROUND = re.compile(r"\[w1\] round (\d+) at ([0-9.]+)")
W1_ACCURACY = re.compile(r"\[w1\] accuracy ([0-9.]+)")


def write_w1_app(directory: Path, rounds: int) -> Path:
    """A Flower app directory whose ServerApp/ClientApp are W1's (flower_w1.py, copied in)."""
    import tomli_w

    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(flower_w1.__file__, directory / "flower_w1.py")
    project = {
        "build-system": {"requires": ["hatchling"], "build-backend": "hatchling.build"},
        "project": {"name": "w1-flower-fedavg", "version": "1.0.0", "license": "Apache-2.0",
                    "description": "W1 with Flower's FedAvg", "dependencies": []},
        "tool": {
            "hatch": {"build": {"targets": {"wheel": {"packages": ["."]}}}},
            "flwr": {"app": {
                "publisher": "bench",
                "components": {"serverapp": "flower_w1:server_app",
                               "clientapp": "flower_w1:client_app"},
                "config": {"num-rounds": rounds},
            }},
        },
    }
    (directory / "pyproject.toml").write_text(tomli_w.dumps(project), encoding="utf-8")
    return directory


# ---------------------------------------------------------------- the five rows
def ray_backend(cpus: int) -> dict:
    return {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": cpus}}


def w1_config(rounds: int):
    """W1 as a privfed ExperimentConfig (as close as the config allows)."""
    from privfed.config import load_config

    return load_config(None, [
        "data.dataset=digits", "data.scaling=unit", "data.test_fraction=0.2",
        "data.split_seed=0", f"data.num_clients={CLIENTS}", "data.partition=iid",
        "model.name=mlp", "model.hidden=[128]", f"federation.rounds={rounds}",
        "federation.fraction=1.0", f"federation.batch_size={BATCH}", f"federation.lr={LR}",
        "federation.local_epochs=1", f"federation.eval_every={rounds}", "secure.kind=none",
    ])


def row_privfed_inprocess(args: argparse.Namespace) -> dict:
    from privfed.experiment import build_simulation

    started = time.perf_counter()
    history = build_simulation(w1_config(args.rounds)).run()
    return {"seconds": [r.seconds for r in history.rounds],
            "run_s": time.perf_counter() - started,
            "accuracy": history.rounds[-1].test_accuracy}


def row_privfed_sim(args: argparse.Namespace) -> dict:
    from privfed.integrations.flower import run_flower_simulation

    started = time.perf_counter()
    _, history = run_flower_simulation(w1_config(args.rounds),
                                       backend_config=ray_backend(args.ray_cpus))
    return {"seconds": [r.seconds for r in history.rounds],
            "run_s": time.perf_counter() - started,
            "accuracy": history.rounds[-1].test_accuracy}


def ray_workers_import_flower_w1() -> None:
    """Let Ray's workers import ``flower_w1`` (they inherit PYTHONPATH).

    Flower's Ray backend pickles the ClientApp with every message. Apps from an importable
    module, as ``flwr run`` loads them, are pickled by reference, and each worker keeps its
    data cache, as privfed's ClientApp does; apps of ``__main__`` would carry the dataset.
    """
    here = str(Path(flower_w1.__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [here, *filter(None, [os.environ.get("PYTHONPATH")])])


def row_flower_sim(args: argparse.Namespace) -> dict:
    from flwr.simulation import run_simulation

    ray_workers_import_flower_w1()
    results: list = []
    started = time.perf_counter()
    run_simulation(server_app=flower_w1.make_w1_server_app(args.rounds, results),
                   client_app=flower_w1.make_w1_client_app(), num_supernodes=CLIENTS,
                   backend_config=ray_backend(args.ray_cpus))
    run_s = time.perf_counter() - started
    if not results:
        raise RuntimeError("Flower's simulation ended without finishing W1")
    stamps, accuracy = results[0]
    return {"seconds": list(np.diff(stamps)), "run_s": run_s, "accuracy": accuracy}


def deploy_timeout(rounds: int) -> float:
    return 300.0 + 300.0 * rounds


_RUNNING: list = []
"""The LocalDeployment of this row process, stopped by :func:`stop_row` on SIGTERM."""


@contextlib.contextmanager
def local_deployment():
    """A fresh ``LocalDeployment(10)`` that a SIGTERM from the driver also stops."""
    from privfed.integrations.flower import LocalDeployment

    with LocalDeployment(CLIENTS) as deployment:
        _RUNNING.append(deployment)
        try:
            yield deployment
        finally:
            _RUNNING.remove(deployment)


def stop_row(signum: int, frame: object) -> None:
    """SIGTERM handler of a row process: stop its deployment's processes, then exit (the
    main thread may be blocked waiting for ``flwr run``, which unwinding alone would not
    stop)."""
    for deployment in list(_RUNNING):
        deployment.stop()
    sys.exit(128 + signum)


def row_privfed_deploy(args: argparse.Namespace) -> dict:
    from privfed.integrations.flower import run_flower_deployment

    with tempfile.TemporaryDirectory(prefix="bench-engines-") as tmp:
        run_dir = Path(tmp) / "run"
        with local_deployment() as deployment:
            started = time.perf_counter()
            status = run_flower_deployment(
                w1_config(args.deploy_rounds), deployment.address, run_dir=run_dir,
                insecure=True, timeout=deploy_timeout(args.deploy_rounds))
            run_s = time.perf_counter() - started
            if status != 0:
                raise RuntimeError(f"privfed's deployment run failed ({status}); SuperLink "
                                   f"log:\n{deployment.log('superlink')[-3000:]}")
        lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    return {"seconds": [json.loads(line)["seconds"] for line in lines if line.strip()],
            "run_s": run_s, "accuracy": summary["final_accuracy"]}


def row_flower_deploy(args: argparse.Namespace) -> dict:
    import tomli_w

    from privfed.integrations.flower.local import flower_executable

    with tempfile.TemporaryDirectory(prefix="bench-engines-") as tmp:
        app = write_w1_app(Path(tmp) / "app", args.deploy_rounds)
        home = Path(tmp) / "flwr-home"
        home.mkdir()
        with local_deployment() as deployment:
            connection = {"address": deployment.address, "insecure": True}
            (home / "config.toml").write_text(
                tomli_w.dumps({"superlink": {"default": "bench", "bench": connection}}),
                encoding="utf-8")
            command = [flower_executable("flwr"), "run", str(app), "bench", "--stream"]
            started = time.perf_counter()
            done = subprocess.run(command, env={**os.environ, "FLWR_HOME": str(home)},
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  errors="replace", timeout=deploy_timeout(args.deploy_rounds))
            run_s = time.perf_counter() - started
            sys.stdout.write(done.stdout)
            stamps = {int(r): float(t) for r, t in W1_ROUND.findall(done.stdout)}
            accuracy = W1_ACCURACY.findall(done.stdout)
            if len(stamps) != args.deploy_rounds + 1 or not accuracy:
                raise RuntimeError(f"Flower's deployment run did not finish W1 (flwr run exit "
                                   f"{done.returncode}); SuperLink log:\n"
                                   f"{deployment.log('superlink')[-3000:]}")
    ordered = [stamps[r] for r in sorted(stamps)]
    return {"seconds": list(np.diff(ordered)), "run_s": run_s, "accuracy": float(accuracy[-1])}


ROWS: dict[str, tuple[str, str, Callable[[argparse.Namespace], dict]]] = {
    "privfed-inprocess": ("in-process", "privfed", row_privfed_inprocess),
    "privfed-sim": ("flower-sim", "privfed", row_privfed_sim),
    "flower-sim": ("flower-sim", "Flower FedAvg", row_flower_sim),
    "privfed-deploy": ("deployment", "privfed", row_privfed_deploy),
    "flower-deploy": ("deployment", "Flower FedAvg", row_flower_deploy),
}


# ---------------------------------------------------------------- driver
def run_row(name: str, args: argparse.Namespace, workdir: Path) -> dict:
    """Run row ``name`` in a process of its own; its result plus the process's wall time."""
    result_file, log_file = workdir / f"{name}.json", workdir / f"{name}.log"
    command = [sys.executable, str(Path(__file__).resolve()), "--row", name,
               "--rounds", str(args.rounds), "--deploy-rounds", str(args.deploy_rounds),
               "--ray-cpus", str(args.ray_cpus), "--result", str(result_file)]
    env = {**os.environ, "BENCH_TORCH_THREADS": str(torch_threads()),
           "OMP_NUM_THREADS": str(torch_threads())}
    rounds = args.deploy_rounds if name.endswith("deploy") else args.rounds
    timeout = deploy_timeout(rounds) + 120 if name.endswith("deploy") else 300 + 30 * rounds
    result_file.unlink(missing_ok=True)
    with open(log_file, "w", encoding="utf-8") as log:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, start_new_session=True,
                                   stdout=None if args.verbose else log,
                                   stderr=subprocess.STDOUT)
        try:
            status = process.wait(timeout=timeout)
        except BaseException:  # timed out or interrupted: let the row stop its deployment
            status = None
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
            if not isinstance(sys.exc_info()[1], subprocess.TimeoutExpired):
                raise
        finally:
            process_s = time.perf_counter() - started
            with contextlib.suppress(ProcessLookupError):  # leftovers of this row only
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    if status != 0 or not result_file.exists():
        tail = "" if args.verbose else log_file.read_text(errors="replace")[-4000:]
        why = "timed out" if status is None else f"exit status {status}"
        raise RuntimeError(f"row {name} failed ({why}); its output ends:\n{tail}")
    result = json.loads(result_file.read_text(encoding="utf-8"))
    result["process_s"] = process_s
    return result


def summarize(result: dict) -> tuple[float, float]:
    """(median of rounds 2..N, or round 1 alone; mean of all rounds)."""
    seconds = result["seconds"]
    steady = seconds[1:] or seconds
    return statistics.median(steady), statistics.mean(seconds)


def goal(met: bool) -> str:
    return "met" if met else "MISSED"


def report(results: dict[str, list[dict]], args: argparse.Namespace) -> None:
    """Print the table (medians over the repeats of each row) and the ratios."""
    print(f"\nW1: digits/16, {CLIENTS} IID clients, MLP 64-128-10, E=1 B={BATCH} lr={LR}, "
          f"{torch_threads()} torch thread(s), Ray {args.ray_cpus} CPU(s); median = s/round "
          f"over rounds 2..N, mean = over all N rounds; in-process and simulation rows: "
          f"median of {args.repeats} process(es) each")
    print(f"{'engine':<12}{'implementation':<16}{'rounds':>7}{'median':>9}{'mean':>9}"
          f"{'run s':>9}{'process s':>11}{'accuracy':>10}")
    medians, accuracy, per_repeat = {}, {}, {}
    for name, runs in results.items():
        engine, implementation, _ = ROWS[name]
        per_repeat[name] = [summarize(r)[0] for r in runs]
        medians[name] = statistics.median(per_repeat[name])
        mean = statistics.median(summarize(r)[1] for r in runs)
        run_s = statistics.median(r["run_s"] for r in runs)
        process_s = statistics.median(r["process_s"] for r in runs)
        accuracy[name] = runs[-1]["accuracy"]
        print(f"{engine:<12}{implementation:<16}{len(runs[-1]['seconds']):>7}"
              f"{medians[name]:>9.4f}{mean:>9.4f}{run_s:>9.2f}{process_s:>11.2f}"
              f"{accuracy[name]:>10.4f}")
    if args.repeats > 1:
        for name in ("privfed-sim", "flower-sim"):
            print(f"  {name} median s/round of each process: "
                  + " ".join(f"{m:.3f}" for m in per_repeat[name]))

    print()
    speedup = medians["flower-sim"] / medians["privfed-inprocess"]
    gap = abs(accuracy["privfed-inprocess"] - accuracy["flower-sim"])
    met = speedup >= SPEEDUP_GOAL and gap <= ACCURACY_TOLERANCE
    print(f"speed-up in-process vs Flower FedAvg flower-sim: {speedup:.1f}x "
          f"(goal >= {SPEEDUP_GOAL:g}x at equal accuracy, |diff| <= {ACCURACY_TOLERANCE}: "
          f"accuracy diff {gap:.4f}) -> {goal(met)}")
    ratio = medians["privfed-sim"] / medians["flower-sim"]
    print(f"privfed / Flower FedAvg on flower-sim: {ratio:.2f} "
          f"(goal <= {OVERHEAD_GOAL:g}) -> {goal(ratio <= OVERHEAD_GOAL)}")
    if "privfed-deploy" in medians:
        ratio = medians["privfed-deploy"] / medians["flower-deploy"]
        print(f"privfed / Flower FedAvg on deployment: {ratio:.2f} "
              f"(goal <= {OVERHEAD_GOAL:g}) -> {goal(ratio <= OVERHEAD_GOAL)}")
        print(f"note: the deployment rows ran {args.deploy_rounds} round(s), not {args.rounds}: "
              "their accuracy is not comparable with the other rows; compare them only with "
              "each other")
    if min(len(runs[-1]["seconds"]) for runs in results.values()) < 2:
        print("note: with 1 round the median is round 1 alone, which is not comparable across "
              "rows: privfed's Flower server exchanges a registration message with every node "
              "before round 1 (actor or ClientApp warm-up, app install on the SuperNodes), "
              "where Flower's FedAvg pays that warm-up inside round 1; run >= 2 rounds")
    print("note: a simulation round waits on two free-running 0.1 s polling loops of Flower "
          "(the ServerApp's grid and the engine's message queue), so its s/round falls on "
          "about 0.1 or 0.2 s depending on how their phases drift, which a few ms of server "
          "work between rounds changes: the flower-sim ratio is quantised; use --repeats >= 3")
    print("note: privfed draws its batch orders from its experiment seed, not W1's "
          "100000 * r + client_id, so its accuracy may differ slightly from Flower FedAvg's "
          "(W1 reference: 0.8611 after 30 rounds)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--deploy-rounds", type=int, default=3)
    parser.add_argument("--skip-deployment", action="store_true")
    parser.add_argument("--repeats", type=int, default=1,
                        help="processes per in-process and simulation row (interleaved); the "
                             "deployment rows run once")
    parser.add_argument("--ray-cpus", type=int, default=2, help="CPUs Ray may use (W1: 2)")
    parser.add_argument("--verbose", action="store_true",
                        help="show the output of each row's process")
    parser.add_argument("--row", choices=ROWS, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(torch_threads())

    if args.row:  # one row, in the process the driver started for it
        signal.signal(signal.SIGTERM, stop_row)
        result = ROWS[args.row][2](args)
        result["accuracy"] = float(result["accuracy"])
        result["seconds"] = [float(s) for s in result["seconds"]]
        Path(args.result).write_text(json.dumps(result), encoding="utf-8")
        return

    local = [n for n in ROWS if not n.endswith("deploy")]
    deployed = [] if args.skip_deployment else [n for n in ROWS if n.endswith("deploy")]
    results: dict[str, list[dict]] = {name: [] for name in local + deployed}
    with tempfile.TemporaryDirectory(prefix="bench-engines-") as tmp:
        for name in local * max(1, args.repeats) + deployed:
            print(f"running {name} ...", flush=True)
            results[name].append(run_row(name, args, Path(tmp)))
    report(results, args)


if __name__ == "__main__":
    main()
