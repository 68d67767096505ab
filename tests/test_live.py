"""A run followed while it trains: live metrics.jsonl, the lock, TensorBoard."""

import os

import pytest

from privfed import jsonsafe
from privfed.cli import main
from privfed.config import load_config
from privfed.federated import History
from privfed.live import RunInProgressError, partial_dir, scalars
from privfed.rundir import release_history, run_dir_for, run_problems, train_run

fcntl = pytest.importorskip("fcntl")

SMALL = ["federation.rounds=3", "model.hidden=[8]", "data.num_clients=3"]


def _config(tmp_path, *extra):
    return load_config(overrides=[*SMALL, f"output_dir='{tmp_path}'", *extra])


def test_metrics_jsonl_has_k_lines_after_round_k_and_the_partial_goes_at_the_end(tmp_path):
    config = _config(tmp_path, "federation.fraction=0.67", "federation.client_sampling='poisson'",
                     "privacy.mechanism='central'",
                     "privacy.noise_multiplier=1.0")
    live = partial_dir(tmp_path / "run") / "metrics.jsonl"
    seen = []

    def on_round(record):
        lines = live.read_text().splitlines()
        seen.append(len(lines))
        line = jsonsafe.loads(lines[-1])
        assert line["round"] == record.round
        assert line["clients"] == [] and "num_clients" in line["extra"]  # released, redacted

    train_run(config, tmp_path / "run", on_round=on_round)
    assert seen == [1, 2, 3]
    assert not partial_dir(tmp_path / "run").exists()
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count("\n") == 3


def test_a_run_that_fails_after_a_round_keeps_its_partial(tmp_path):
    config = _config(tmp_path)

    def on_round(record):
        if record.round == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(config, tmp_path / "run", on_round=on_round)
    assert len((partial_dir(tmp_path / "run") / "metrics.jsonl").read_text().splitlines()) == 2
    assert not (tmp_path / "run").exists()
    train_run(config, tmp_path / "run")  # a new run starts the partial afresh, then removes it
    assert not partial_dir(tmp_path / "run").exists()


def test_a_second_process_training_the_same_run_gets_one_line(tmp_path, capsys):
    config = _config(tmp_path)
    lock = partial_dir(run_dir_for(config)) / "lock"
    lock.parent.mkdir()
    ready_r, ready_w = os.pipe()
    release_r, release_w = os.pipe()
    child = os.fork()
    if child == 0:  # holds the lock until the parent closes the release pipe
        os.close(release_w)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.write(ready_w, b"x")
        os.read(release_r, 1)
        os._exit(0)
    os.close(release_r)
    try:
        os.read(ready_r, 1)
        with pytest.raises(RunInProgressError, match=f"pid {child}"):
            train_run(config)
        (tmp_path / "run.toml").write_text(config.to_toml())
        assert main(["run", str(tmp_path / "run.toml")]) == 2
    finally:
        os.close(release_w)
        os.waitpid(child, 0)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another privfed process" in err[0]


def test_scalars_are_every_number_of_a_record_but_the_round():
    found = scalars({"round": 3, "clients": [1, 2], "train_loss": 0.5, "test_loss": None,
                     "federated": {"pooled": {"accuracy": 0.75}}, "extra": {"flag": True}})
    assert found == {"train_loss": 0.5, "federated/pooled/accuracy": 0.75}


def test_tensorboard_holds_one_scalar_per_metric_per_round(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = _config(tmp_path, "tracking.tensorboard=true")
    assert config.short_hash() == _config(tmp_path).short_hash()
    result = train_run(config, tmp_path / "run")
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    expected = [scalars(jsonsafe.loads(line)) for line in lines]
    assert set(events.Tags()["scalars"]) == set().union(*expected)
    for name in events.Tags()["scalars"]:
        steps = {e.step: e.value for e in events.Scalars(name)}
        assert steps == pytest.approx({r + 1: row[name] for r, row in enumerate(expected)
                                       if name in row})
    assert "test_accuracy" in events.Tags()["scalars"]
    assert run_problems(tmp_path / "run", config) == []  # tensorboard/ is outside the digest
    assert len(result.history.rounds) == 3


def test_release_rule_per_record_is_the_history_rule(tmp_path):
    config = _config(tmp_path, "federation.fraction=0.67", "federation.client_sampling='poisson'",
                     "privacy.mechanism='central'",
                     "privacy.noise_multiplier=1.0")
    result = train_run(config, tmp_path / "run")
    whole = release_history(config, result.history).rounds
    assert whole == [release_history(config, History([r])).rounds[0]
                     for r in result.history.rounds]
