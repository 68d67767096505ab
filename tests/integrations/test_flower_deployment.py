"""privfed on a real loopback Flower deployment: ``flower-superlink`` and three
``flower-supernode`` processes on 127.0.0.1 (:class:`LocalDeployment`), compared with the
in-process run of the same config and seed."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("flwr")

import os  # noqa: E402
import re  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from privfed.config import ExperimentConfig  # noqa: E402
from privfed.experiment import build_simulation  # noqa: E402
from privfed.federated import TrainJob  # noqa: E402
from privfed.integrations.flower import (  # noqa: E402
    FlowerOptions,
    LocalDeployment,
    run_flower_deployment,
)
from privfed.secure import ClientIdentity, IdentityRegistry  # noqa: E402
from tests.integrations.flower_helpers import config, in_process, masking_bound  # noqa: E402


def _flower_processes(flwr_home: Path) -> list[int]:
    marker = f"FLWR_HOME={flwr_home}".encode() + b"\0"
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if marker in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory):
    """A SuperLink and 3 SuperNodes on 127.0.0.1, stopped after the module's tests."""
    workdir = tmp_path_factory.mktemp("flower")
    with LocalDeployment(3, workdir=workdir) as running:
        yield running
    assert _flower_processes(running.flwr_home) == []


def _deploy(cfg: ExperimentConfig, deployment: LocalDeployment, run_dir: Path,
            stage_timeout: float = 120.0):
    status = run_flower_deployment(cfg, deployment.address, run_dir=run_dir, insecure=True,
                                   options=FlowerOptions(stage_timeout=stage_timeout),
                                   timeout=540)
    assert status == 0, deployment.log("superlink")[-3000:]
    spec = build_simulation(cfg).server.workspace.spec
    return spec.flatten(torch.load(run_dir / "model.pt")["state_dict"]), run_dir


@pytest.mark.slow
def test_deployment_plain_equals_in_process(deployment: LocalDeployment, tmp_path: Path) -> None:
    cfg = config()
    weights, run_dir = _deploy(cfg, deployment, tmp_path / "run")
    server, _ = in_process(cfg)
    torch.testing.assert_close(weights, server.weights, atol=1e-5, rtol=0)
    assert (run_dir / "summary.json").exists()


@pytest.mark.slow
def test_deployment_he_equals_in_process(deployment: LocalDeployment, tmp_path: Path) -> None:
    """CKKS at scale 2^40 decrypts each round's mean to ~1e-9; 3 rounds stay far below 1e-6."""
    cfg = config("secure.kind='he'")
    weights, _ = _deploy(cfg, deployment, tmp_path / "run")
    server, _ = in_process(cfg)
    torch.testing.assert_close(weights, server.weights, atol=1e-6, rtol=0)


def _kill_at(deployment: LocalDeployment, node: int, pattern: str, stop: threading.Event):
    """Kill SuperNode ``node`` as soon as its log matches ``pattern``."""
    regex = re.compile(pattern, re.DOTALL)
    while not stop.is_set():
        if regex.search(deployment.log(f"supernode-{node}")):
            deployment.kill_node(node)
            return
        time.sleep(0.05)


@pytest.mark.slow
def test_deployment_masking_survives_a_killed_supernode(tmp_path: Path) -> None:
    """SuperNode 2 is SIGKILLed when it receives round 2's masked-input request (after it
    shared its keys); round 2 completes with the masked sum of clients 0 and 1 (threshold
    t = 2 of 3), through the consistency round, with every site's key pinned."""
    cfg = config("secure.kind='masking'", "secure.threshold=2", rounds=2)
    stop = threading.Event()
    # The sites' keys are pinned (exchanged out of band): the server relays nothing trusted.
    identities = [ClientIdentity(c) for c in range(3)]
    IdentityRegistry.from_identities(identities).to_file(tmp_path / "pinned.json")
    for identity in identities:
        identity.to_file(tmp_path / f"site-{identity.client_id}.pem")
    node_config = {c: {"identity-key": str(tmp_path / f"site-{c}.pem"),
                       "pinned-keys": str(tmp_path / "pinned.json")} for c in range(3)}
    with LocalDeployment(3, workdir=tmp_path / "flower", node_config=node_config) as deployment:
        killer = threading.Thread(target=_kill_at, args=(
            deployment, 2, r"ROUND 2\].*Receiving: query\.masked", stop), daemon=True)
        killer.start()
        try:
            weights, run_dir = _deploy(cfg, deployment, tmp_path / "run", stage_timeout=150)
        finally:
            stop.set()
            killer.join()
    assert _flower_processes(deployment.flwr_home) == []
    assert deployment.nodes == []

    rounds = [line for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    assert '"clients": [0, 1, 2]' in rounds[0] and '"clients": [0, 1]' in rounds[1]
    reference = build_simulation(cfg).server
    reference.run_round()
    start = reference.weights.clone()
    survivors = [reference.engine.train_client(TrainJob(c, 2, start, reference.batch_seed(2, c)))
                 for c in (0, 1)]
    total = sum(u.num_samples for u in survivors)
    mean = sum(u.delta * (u.num_samples / total) for u in survivors)
    reference.optimizer.step(reference.weights, mean)
    bound = masking_bound(cfg, 2, reference.weights)
    torch.testing.assert_close(weights, reference.weights, atol=bound, rtol=0)


def test_no_stray_processes_when_the_deployment_fails_to_start(tmp_path: Path) -> None:
    """Exiting the context manager after an error inside it stops everything."""
    with pytest.raises(RuntimeError, match="inside"), LocalDeployment(
            1, workdir=tmp_path) as deployment:
        raise RuntimeError("failure inside the with block")
    assert _flower_processes(deployment.flwr_home) == []
    assert os.path.exists(tmp_path / "superlink.log")
