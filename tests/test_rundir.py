"""The one run writer: train a config with any engine, write its run directory."""

import pytest
import torch

from privfed import jsonsafe
from privfed.config import load_config
from privfed.federated import Observer
from privfed.rundir import RUN_FILES, run_dir_for, train_in_process, train_run

SMALL = ["federation.rounds=2", "model.hidden=[8]", "data.num_clients=3"]


def test_train_run_writes_what_its_trainer_trained(tmp_path):
    config = load_config(overrides=[*SMALL, f"output_dir='{tmp_path}'"])
    calls, rounds = [], []
    observer = Observer()

    def trainer(cfg, observers, on_round):
        calls.append((cfg, tuple(observers)))
        return train_in_process(cfg, observers, on_round)

    result = train_run(config, train=trainer, observers=[observer], on_round=rounds.append)
    assert calls == [(config, (observer,))]
    assert [r.round for r in rounds] == [1, 2]
    assert result.run_dir == run_dir_for(config)
    assert sorted(p.name for p in tmp_path.iterdir()) == [result.run_dir.name]
    assert sorted(p.name for p in result.run_dir.iterdir()) == sorted(RUN_FILES)
    saved = torch.load(result.run_dir / "model.pt")["state_dict"]
    assert torch.equal(result.server.workspace.spec.flatten(saved), result.server.weights)
    summary = jsonsafe.loads((result.run_dir / "summary.json").read_text(), keep=("name",))
    assert summary == result.summary and summary["rounds"] == 2


def test_a_failed_training_writes_nothing_and_a_rerun_keeps_other_files(tmp_path):
    config = load_config(overrides=SMALL)
    run_dir = tmp_path / "runs" / "one"

    def diverges(cfg, observers, on_round):
        raise RuntimeError("diverged")

    with pytest.raises(RuntimeError, match="diverged"):
        train_run(config, run_dir, train=diverges)
    assert not (tmp_path / "runs").exists()
    train_run(config, run_dir)
    (run_dir / "audit").mkdir()
    (run_dir / "summary.json").write_text("{truncated")
    train_run(config, run_dir)
    assert sorted(p.name for p in run_dir.iterdir()) == sorted([*RUN_FILES, "audit"])
    assert jsonsafe.loads((run_dir / "summary.json").read_text(), keep=("name",))["rounds"] == 2
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["one"]  # no staging left


def test_the_flower_simulation_trainer_refuses_a_config_the_flower_engines_do_not_run():
    pytest.importorskip("flwr")
    from privfed.rundir import flower_simulation

    config = load_config(overrides=[*SMALL, "privacy.mechanism=local",
                                    "privacy.noise_multiplier=1.0"])
    with pytest.raises(ValueError, match="flower_config"):
        train_run(config, train=flower_simulation())
    with pytest.raises(ValueError, match="observers or on_round"):
        train_run(config, train=flower_simulation(), on_round=print)
