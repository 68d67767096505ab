"""privfed on Flower: the simulation engine and a real loopback deployment.

The deployment tests start a real ``flower-superlink`` and three ``flower-supernode``
processes on 127.0.0.1 (:class:`LocalDeployment`) and compare the final global model with
the in-process run of the same config and seed.
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("flwr")

import numpy as np  # noqa: E402
from flwr.app import RecordDict  # noqa: E402
from flwr.cli.config_utils import load_and_validate  # noqa: E402

from privfed.cli import main as cli_main  # noqa: E402
from privfed.config import ConfigError, ExperimentConfig, load_config  # noqa: E402
from privfed.experiment import build_simulation  # noqa: E402
from privfed.federated import BudgetSpent, TrainJob  # noqa: E402
from privfed.integrations.flower import (  # noqa: E402
    FlowerOptions,
    LocalDeployment,
    config_from_run_config,
    messages,  # noqa: E402
    run_flower_deployment,
    run_flower_simulation,
    write_flower_app,
)
from privfed.integrations.flower.apps import CONFIG_KEY, flower_config  # noqa: E402
from privfed.integrations.flower.node import ClientNode  # noqa: E402
from privfed.secure import (  # noqa: E402  # noqa: E402
    AuthenticationError,
    ClientIdentity,
    IdentityRegistry,
    InvalidInputError,
    RoundRequest,
    pack_registry,
    unpack_registry,
)
from privfed.secure.errors import MessageRejectedError  # noqa: E402
from privfed.secure.masking import Ring  # noqa: E402
from privfed.secure.wire import unpack  # noqa: E402

BASE = ["data.num_clients=3", "federation.rounds=3", "model.hidden=[32]"]


def config(*overrides: str, rounds: int = 3) -> ExperimentConfig:
    return load_config(None, [*BASE, f"federation.rounds={rounds}", *overrides])


def in_process(cfg: ExperimentConfig):
    simulation = build_simulation(cfg)
    history = simulation.run()
    return simulation.server, history


def masking_bound(cfg: ExperimentConfig, rounds: int, weights: torch.Tensor) -> float:
    """Max weight difference between two masking runs: each round's mean is off by at most
    n fixed-point steps per coordinate (stochastic rounding, up to one step per client), and
    that can flip the float32 rounding of the updated weight by one ulp."""
    n = cfg.data.num_clients
    ring = Ring(cfg.secure.ring_bits, cfg.secure.clip or 10.0, n)
    ulp = torch.finfo(torch.float32).eps * float(weights.abs().max())
    return rounds * (n * ring.step + ulp)


# ---------------------------------------------------------------- pieces, no processes
def test_registry_round_trip_and_garbage() -> None:
    identities = [ClientIdentity(c) for c in range(3)]
    registry = IdentityRegistry.from_identities(identities)
    assert unpack_registry(pack_registry(registry)).keys == registry.keys
    with pytest.raises(MessageRejectedError, match="multiple of 36"):
        unpack_registry(pack_registry(registry)[:-1])


def test_run_config_carries_the_config(tmp_path: Path) -> None:
    cfg = config("secure.kind='masking'", "seed=7")
    app = write_flower_app(tmp_path / "app", cfg, run_dir=tmp_path / "run",
                           options=FlowerOptions(stage_timeout=12))
    project, warnings = load_and_validate(app / "pyproject.toml")
    assert project is not None, warnings
    run_config = project["tool"]["flwr"]["app"]["config"]
    assert config_from_run_config(run_config) == cfg
    assert run_config["stage-timeout"] == 12
    assert run_config["output-dir"] == str((tmp_path / "run").resolve())
    with pytest.raises(ConfigError, match=CONFIG_KEY):
        config_from_run_config({})


def test_flower_options_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="stage_timeout must be > 0"):
        FlowerOptions(stage_timeout=0)


def test_node_rejects_a_partition_outside_the_federation() -> None:
    with pytest.raises(ConfigError, match=r"partition-id=3 .* allowed 0..2"):
        ClientNode(config(), 3, RecordDict())


def test_node_keeps_its_identity_in_the_context_state() -> None:
    state = RecordDict()
    first = ClientNode(config(), 1, state).identity
    again = ClientNode(config(), 1, state).identity
    assert first.public_bytes == again.public_bytes


def test_a_node_builds_only_its_own_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """A node holds its own partition only, and no CKKS key of its own making: under HE
    it trains and keeps its update without ever building the federation's aggregator."""
    import privfed.secure.he.key_holder as key_holder

    def no_keys(*args, **kwargs):
        raise AssertionError("a node made a CKKS key")

    monkeypatch.setattr(key_holder.HEKeyHolder, "__init__", no_keys)
    cfg = config("secure.kind='he'")
    node = ClientNode(cfg, 2, RecordDict())
    partitions = build_simulation(config()).partitions
    assert node.client.num_samples == len(partitions[2])
    reply = node.train(_train_message(config(), 0))  # the same model, built without HE
    assert int(reply[messages.RECORD]["steps"]) >= 1 and "privfed.pending" in node.state
    assert not hasattr(node, "clients") and not hasattr(node, "server")


def test_a_node_with_pinned_keys_detects_key_substitution(tmp_path: Path) -> None:
    identities = [ClientIdentity(c) for c in range(3)]
    pinned = IdentityRegistry.from_identities(identities)
    pinned.to_file(tmp_path / "pinned.json")
    identities[1].to_file(tmp_path / "site-1.pem")
    node = ClientNode(config(), 1, RecordDict(), identity_key=str(tmp_path / "site-1.pem"),
                      pinned_keys=str(tmp_path / "pinned.json"))
    assert node.identity.public_bytes == identities[1].public_bytes
    assert node.protocol._registry(pinned).keys == pinned.keys
    substituted = IdentityRegistry({**pinned.keys, 2: ClientIdentity(2).public_bytes})
    with pytest.raises(AuthenticationError, match="key substitution: .* client 2"):
        node.protocol._registry(substituted)
    with pytest.raises(ConfigError, match="does not match its entry in the pinned keys"):
        ClientNode(config(), 0, RecordDict(), identity_key=str(tmp_path / "site-1.pem"),
                   pinned_keys=str(tmp_path / "pinned.json"))
    (tmp_path / "bad.json").write_text('{"0": "abcd"}')
    with pytest.raises(InvalidInputError, match=r"bad.json', client 0: expected 64 hex"):
        IdentityRegistry.from_file(tmp_path / "bad.json")


def test_cli_engine_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["run", "--engine", "flower-sim"]) == 2
    assert "needs a CONFIG" in capsys.readouterr().err
    digits = Path(__file__).parents[2] / "experiments" / "configs" / "digits.toml"
    assert cli_main(["run", str(digits), "--engine", "flower"]) == 2
    assert "--superlink" in capsys.readouterr().err


def test_cli_error_without_flower_names_the_extra(monkeypatch, capsys) -> None:
    """The message keeps its brackets (it is not read as console markup)."""
    import sys

    import privfed.integrations

    monkeypatch.setitem(sys.modules, "flwr", None)
    monkeypatch.delitem(sys.modules, "privfed.integrations.flower")
    monkeypatch.delattr(privfed.integrations, "flower")
    digits = Path(__file__).parents[2] / "experiments" / "configs" / "digits.toml"
    assert cli_main(["run", str(digits), "--engine", "flower-sim"]) == 2
    assert "pip install 'privfed[flower]'" in capsys.readouterr().err


# ---------------------------------------------------------------- simulation engine
@pytest.mark.slow
def test_simulation_engine_equals_in_process(tmp_path: Path) -> None:
    cfg = config(f"output_dir='{tmp_path}'")
    flower, history = run_flower_simulation(cfg, run_dir=tmp_path / "sim")
    server, expected = in_process(cfg)
    torch.testing.assert_close(flower.weights, server.weights, atol=1e-5, rtol=0)
    assert [r.clients for r in history.rounds] == [r.clients for r in expected.rounds]
    assert history.rounds[-1].test_accuracy == pytest.approx(expected.rounds[-1].test_accuracy)
    saved = torch.load(tmp_path / "sim" / "model.pt")
    assert torch.equal(server.workspace.spec.flatten(saved), flower.weights)


@pytest.mark.slow
def test_simulation_keeps_the_privacy_ledger_across_rounds_with_secure_noise() -> None:
    """Local DP-SGD on the nodes: each client's ledger lives in its Context.state, so
    epsilon after 3 rounds equals the in-process run's (and exceeds round 1's); the noise
    comes from OS entropy on the Flower engines, so the model is not the seeded run's."""
    cfg = config("privacy.mechanism='local'", "privacy.noise_multiplier=1.0",
                 "secure.kind='masking'")
    flower, history = run_flower_simulation(cfg)
    server, expected = in_process(cfg)
    epsilons = [r.extra["epsilon"] for r in history.rounds]
    assert epsilons == pytest.approx([r.extra["epsilon"] for r in expected.rounds], rel=1e-9)
    assert epsilons[0] < epsilons[1] < epsilons[2]
    assert {r.extra["noise"] for r in history.rounds} == {"secure"}
    assert float((flower.weights - server.weights).abs().max()) > 1e-3


@pytest.mark.slow
def test_simulation_central_dp_with_adaptive_clipping_equals_in_process() -> None:
    """The server's moving clip norm reaches the clients every round (no noise, so the
    secure noise of the Flower engines draws nothing and both runs agree)."""
    cfg = config("privacy.mechanism='central'", "privacy.noise_multiplier=0.0",
                 "privacy.adaptive_clipping=true", "privacy.clip_norm=0.1",
                 "privacy.clipped_count_stddev=1.0")
    flower, history = run_flower_simulation(cfg)
    server, expected = in_process(cfg)
    clip_norms = [r.extra["clip_norm"] for r in history.rounds]
    assert clip_norms == pytest.approx([r.extra["clip_norm"] for r in expected.rounds])
    assert len(set(clip_norms)) > 1
    torch.testing.assert_close(flower.weights, server.weights, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_simulation_compression_with_error_feedback_equals_in_process() -> None:
    """Random-k with error feedback in front of masking: each node keeps its residual in
    its Context.state and restricts to the round's shared index set, so the model equals
    the in-process run's (within masking's fixed-point rounding)."""
    cfg = config("secure.kind='masking'", "compression.method='randomk'",
                 "compression.density=0.25", "compression.error_feedback=true",
                 "compression.rescale=false")
    flower, history = run_flower_simulation(cfg)
    server, expected = in_process(cfg)
    assert [r.bytes_up for r in history.rounds] == [r.bytes_up for r in expected.rounds]
    torch.testing.assert_close(flower.weights, server.weights,
                               atol=masking_bound(cfg, 3, server.weights), rtol=0)
    uncompensated, _ = in_process(config("secure.kind='masking'", "compression.method='randomk'",
                                         "compression.density=0.25", "compression.rescale=false"))
    assert float((uncompensated.weights - server.weights).abs().max()) > 1e-3


@pytest.mark.slow
def test_simulation_quantised_uploads_with_error_feedback_equal_in_process() -> None:
    """The plain protocol's payload codec (4-bit stochastic quantisation, the client's own
    randomness) and the residual on the node: the same bytes and model as in-process."""
    cfg = config("compression.method='quantize'", "compression.bits=4",
                 "compression.error_feedback=true")
    flower, history = run_flower_simulation(cfg)
    server, expected = in_process(cfg)
    assert [r.bytes_up for r in history.rounds] == [r.bytes_up for r in expected.rounds]
    torch.testing.assert_close(flower.weights, server.weights, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_simulation_fedbuff_equals_in_process() -> None:
    """FedBuff is a schedule: on the Flower engine the same jobs train from the same model
    versions in the same simulated-time order, with the same staleness weights."""
    cfg = config("federation.buffer_size=2", "federation.concurrency=3",
                 "federation.latency_spread=1.0", rounds=4)
    flower, history = run_flower_simulation(cfg)
    server, expected = in_process(cfg)
    assert [r.extra["sim_time"] for r in history.rounds] == [
        r.extra["sim_time"] for r in expected.rounds]
    assert [r.clients for r in history.rounds] == [r.clients for r in expected.rounds]
    assert max(r.extra["staleness_max"] for r in history.rounds) >= 1
    torch.testing.assert_close(flower.weights, server.weights, atol=1e-5, rtol=0)


def _train_message(cfg: ExperimentConfig, participations: int, round_id: int = 1):
    """What the ServerApp sends a client to train, with its record of the client (the
    message's content only: a flwr Message needs a running app's context)."""
    model = build_simulation(cfg).server.weights.numpy()
    body = messages.content(model=model, release=round_id, seed=round_id, broadcast={},
                            ledger={"participations": participations})
    return SimpleNamespace(content=body)


def _upload(cfg: ExperimentConfig, state: RecordDict, participations: int,
            round_id: int = 1) -> np.ndarray:
    """Train, then answer the plain protocol's upload stage: the update as the server reads
    it."""
    node = ClientNode(cfg, 1, state)
    node.train(_train_message(cfg, participations, round_id))
    length = node.parts.workspace.spec.numel
    request = RoundRequest(round_id, 1.0, 3.0, length).to_bytes("none")
    body = messages.content(round=round_id, stage="upload", payload=request)
    reply = ClientNode(cfg, 1, state).stage(SimpleNamespace(content=body))
    return np.frombuffer(unpack(bytes(reply[messages.RECORD]["payload"])).payload, "<f4")


def _node_count(state: RecordDict) -> int:
    return messages.json_field(state["privfed.ledger"], "ledger")["participations"]


def test_a_nodes_privacy_record_never_shrinks() -> None:
    """Fault 6: the server replaced its record of a client with whatever the node reported,
    so a node that lost its state took the server's record down (4.55 -> 5.75 -> 4.55).
    Now the server counts on its own and sends its record; each side keeps the longer."""
    cfg = flower_config(config("privacy.mechanism='local'", "privacy.noise_multiplier=1.0"))
    state = RecordDict()
    _upload(cfg, state, participations=4)
    assert _node_count(state) == 5  # the server's 4, then this round
    _upload(cfg, state, participations=1, round_id=2)  # shorter than the node's own record
    assert _node_count(state) == 6
    _upload(cfg, state, participations=0, round_id=2)  # the same round again counts once
    assert _node_count(state) == 6
    lost = RecordDict()  # a node whose state was lost resumes from the server's record
    _upload(cfg, lost, participations=6, round_id=3)
    assert _node_count(lost) == 7
    policy = build_simulation(cfg).server.policy  # the server side
    policy.record_participation(1, [1])
    policy.merge_client_ledger(1, {"participations": 0})
    assert policy.client_ledger(1) == {"participations": 1}
    policy.merge_client_ledger(1, {"participations": 3})
    assert policy.client_ledger(1) == {"participations": 3}


def test_a_node_refuses_to_train_past_its_budget() -> None:
    cfg = flower_config(config("privacy.mechanism='local'", "privacy.epsilon=1.0"))
    _upload(cfg, RecordDict(), participations=2)  # the third of 3 planned rounds
    with pytest.raises(BudgetSpent, match="exceed its privacy budget"):
        _upload(cfg, RecordDict(), participations=3)


def test_flower_nodes_draw_noise_nobody_else_can_regenerate() -> None:
    """Every node and the server build from the same config: with seeded noise any of them
    could regenerate a client's DP-SGD noise. The Flower engines force secure noise."""
    cfg = config("privacy.mechanism='local'", "privacy.noise_multiplier=1.0")
    assert not cfg.privacy.secure_mode and flower_config(cfg).privacy.secure_mode
    seeded = [_upload(cfg, RecordDict(), 0) for _ in range(2)]
    np.testing.assert_array_equal(seeded[0], seeded[1])
    secure = [_upload(flower_config(cfg), RecordDict(), 0) for _ in range(2)]
    assert np.abs(secure[0] - secure[1]).max() > 1e-3
    plain = config()
    assert flower_config(plain) is plain  # no mechanism: nothing to change


def test_nodes_send_no_private_statistics_under_dp() -> None:
    """Under DP a node registers with weight 1 (not its record count) and replies without
    its training loss; plain FedAvg keeps both."""
    for overrides, released in (((), True),
                                (("privacy.mechanism='local'", "privacy.noise_multiplier=1.0"),
                                 False)):
        cfg = flower_config(config(*overrides))
        node = ClientNode(cfg, 1, RecordDict())
        registered = node.register(SimpleNamespace(content=messages.content()))
        weight = float(registered[messages.RECORD]["weight"])
        assert (weight == node.client.num_samples) if released else weight == 1.0
        reply = ClientNode(cfg, 1, RecordDict()).train(_train_message(cfg, 0))
        assert ("train_loss" in reply[messages.RECORD]) is released
        assert ("num_samples" in reply[messages.RECORD]) is released


# ---------------------------------------------------------------- loopback deployment
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
    return spec.flatten(torch.load(run_dir / "model.pt")), run_dir


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
