"""privfed's Flower pieces without a running Flower: apps, options, the node's state, its
privacy record and what it sends (the engines themselves: test_flower_simulation.py and
test_flower_deployment.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("flwr")

import numpy as np  # noqa: E402
from flwr.app import RecordDict  # noqa: E402
from flwr.cli.config_utils import load_and_validate  # noqa: E402

from privfed.cli import main as cli_main  # noqa: E402
from privfed.config import ConfigError, ExperimentConfig  # noqa: E402
from privfed.experiment import build_simulation  # noqa: E402
from privfed.federated import BudgetSpent  # noqa: E402
from privfed.integrations.flower import (  # noqa: E402
    FlowerOptions,
    config_from_run_config,
    messages,  # noqa: E402
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
from privfed.secure.wire import unpack  # noqa: E402
from tests.integrations.flower_helpers import config  # noqa: E402


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
