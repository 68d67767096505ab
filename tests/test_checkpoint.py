"""Checkpoint and resume of one run (``privfed run``): killed, interrupted or terminated
after round k of N, the run resumes from its last checkpoint and ends with the model and
the epsilon of an uninterrupted run, bit for bit (its randomness is seeded here)."""

import os
import signal
import stat
import time

import pytest
import torch

from privfed import jsonsafe
from privfed.checkpoint import CHECKPOINT_FILE, CHECKPOINT_FORMAT, RunCheckpoint
from privfed.config import load_config
from privfed.federated import Observer
from privfed.live import partial_dir
from privfed.rundir import run_dir_for, train_run
from tests.kill_helpers import run_privfed, start_privfed

pytest.importorskip("fcntl")

ROUNDS = 60
EVERY = 4

CONFIG = f"""
name = "resume"
output_dir = "{{output}}"
[data]
dataset = "digits"
num_clients = 10
[model]
name = "mlp"
hidden = [16]
[federation]
rounds = {ROUNDS}
fraction = 0.5
server_optimizer = "fedavgm"
[privacy]
mechanism = "local"
noise_multiplier = 1.0
[tracking]
checkpoint_every = {EVERY}
"""


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of the config: its run directory."""
    root = tmp_path_factory.mktemp("reference")
    path = _write_config(root, "reference")
    assert run_privfed(["run", str(path), "-q"], root) == 0
    return run_dir_for(load_config(path))


def _write_config(root, output):
    path = root / f"{output}.toml"
    path.write_text(CONFIG.format(output=root / output))
    return path


def _lines(path):
    return path.read_text().count("\n") if path.exists() else 0


def _stop_after(args, root, live, rounds, how):
    """Start ``privfed args``; once ``live`` (metrics.jsonl) holds ``rounds`` lines, stop it
    with the signal ``how``; its exit code."""
    child = start_privfed(args, root)
    deadline = time.monotonic() + 120
    while _lines(live) < rounds:
        assert child.is_alive(), "the run ended before it could be stopped"
        assert time.monotonic() < deadline
        time.sleep(0.002)
    os.kill(child.pid, how)
    child.join(60)
    return child.exitcode


def _saved_round(run_dir):
    saved = torch.load(partial_dir(run_dir) / CHECKPOINT_FILE, weights_only=True)
    assert saved["format"] == CHECKPOINT_FORMAT
    return saved["round"]


def _assert_same_run(run_dir, reference):
    assert (run_dir / "model.pt").read_bytes() == (reference / "model.pt").read_bytes()
    ours = jsonsafe.loads((run_dir / "summary.json").read_text())
    theirs = jsonsafe.loads((reference / "summary.json").read_text())
    assert ours["epsilon"] == theirs["epsilon"] and ours["final_accuracy"] == \
        theirs["final_accuracy"]
    rounds = [jsonsafe.loads(line)["round"]
              for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rounds == list(range(1, ROUNDS + 1))
    assert not partial_dir(run_dir).exists()


@pytest.mark.slow
def test_a_run_killed_after_round_k_resumes_to_the_uninterrupted_model_and_epsilon(
        tmp_path, reference):
    path = _write_config(tmp_path, "runs")
    run_dir = run_dir_for(load_config(path))
    live = partial_dir(run_dir) / "metrics.jsonl"
    assert _stop_after(["run", str(path), "-q"], tmp_path, live, 2 * EVERY + 2,
                       signal.SIGKILL) == -signal.SIGKILL
    saved, recorded = _saved_round(run_dir), _lines(live)
    assert EVERY <= saved < ROUNDS and saved % EVERY == 0 and recorded >= saved
    checkpoint = partial_dir(run_dir) / CHECKPOINT_FILE
    assert stat.S_IMODE(checkpoint.stat().st_mode) == 0o600  # every party's state
    assert run_privfed(["run", str(path), "-q"], tmp_path) == 0
    _assert_same_run(run_dir, reference)


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_saves_a_checkpoint_and_exits_with_one_line(
        tmp_path, reference, capfd, how):
    path = _write_config(tmp_path, "runs")
    run_dir = run_dir_for(load_config(path))
    live = partial_dir(run_dir) / "metrics.jsonl"
    assert _stop_after(["run", str(path), "-q"], tmp_path, live, 3, how) == 128 + how
    err = capfd.readouterr().err
    assert "Traceback" not in err
    saved = _saved_round(run_dir)
    assert 3 <= saved < ROUNDS and _lines(live) == saved  # the round in progress finished
    line = f"interrupted: checkpoint after round {saved}/{ROUNDS} in "
    assert line in err and str(partial_dir(run_dir) / CHECKPOINT_FILE) in err
    assert run_privfed(["run", str(path)], tmp_path) == 0
    out = capfd.readouterr().out
    assert f"resuming from the checkpoint after round {saved}/{ROUNDS}" in out
    _assert_same_run(run_dir, reference)


def _config(tmp_path, *extra):
    return load_config(overrides=["federation.rounds=6", "model.hidden=[8]",
                                  "data.num_clients=3", f"output_dir='{tmp_path}'",
                                  "tracking.checkpoint_every=2", *extra])


def _interrupted(config, run_dir, after):
    """Train ``config`` into ``run_dir`` and fail after round ``after`` (as a kill would
    stop it, without the signal): its checkpoint and live metrics stay."""

    class Stop(Exception):
        pass

    def on_round(record):
        if record.round == after:
            raise Stop

    with pytest.raises(Stop):
        train_run(config, run_dir, on_round=on_round)


def test_a_resumed_run_rewrites_the_live_metrics_from_its_checkpoint(tmp_path):
    config = _config(tmp_path)
    _interrupted(config, tmp_path / "run", after=3)  # checkpoint after round 2
    assert _lines(partial_dir(tmp_path / "run") / "metrics.jsonl") == 3
    seen, resumed = [], []

    def on_round(record):
        seen.append(_lines(partial_dir(tmp_path / "run") / "metrics.jsonl"))

    result = train_run(config, tmp_path / "run", on_round=on_round, on_resume=resumed.append)
    assert resumed == [2] and seen == [3, 4, 5, 6]  # round 3 once, not twice
    straight = train_run(config, tmp_path / "straight")
    assert torch.equal(result.server.weights, straight.server.weights)


def test_rerun_or_another_config_s_checkpoint_starts_over(tmp_path):
    config = _config(tmp_path)
    _interrupted(config, tmp_path / "run", after=3)
    resumed = []
    train_run(config, tmp_path / "run", resume=False, on_resume=resumed.append)
    assert resumed == []
    _interrupted(config, tmp_path / "run", after=3)
    other = _config(tmp_path, "seed=1")
    with pytest.warns(RuntimeWarning, match="of config .* not of"):
        train_run(other, tmp_path / "run", on_resume=resumed.append)
    assert resumed == []


def test_an_unreadable_or_foreign_checkpoint_is_ignored(tmp_path):
    config = _config(tmp_path)
    directory = tmp_path / "partial"
    directory.mkdir()
    checkpoint = RunCheckpoint(directory, config, every=2)
    checkpoint.path.write_bytes(b"not a zip archive")
    assert checkpoint.load() is None and checkpoint.ignored.startswith("unreadable")
    torch.save({"format": CHECKPOINT_FORMAT, "privfed": "0.0.1"}, checkpoint.path)
    assert checkpoint.load() is None and "written by privfed 0.0.1" in checkpoint.ignored
    torch.save({"format": "other"}, checkpoint.path)
    assert checkpoint.load() is None and "not a privfed-checkpoint/1" in checkpoint.ignored


def test_a_pickled_object_in_a_checkpoint_never_runs(tmp_path):
    """A checkpoint is read with ``weights_only=True``: a file crafted to run code when
    unpickled is refused as unreadable, and the code does not run."""
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    checkpoint = RunCheckpoint(tmp_path, _config(tmp_path), every=2)
    torch.save({"format": CHECKPOINT_FORMAT, "x": Payload()}, checkpoint.path)
    assert checkpoint.load() is None and checkpoint.ignored.startswith("unreadable")
    assert not marker.exists()


def test_no_checkpoint_with_observers_or_with_checkpoint_every_zero(tmp_path):
    config = _config(tmp_path, "tracking.checkpoint_every=1")
    checkpoint = partial_dir(tmp_path / "watched") / CHECKPOINT_FILE
    seen = []
    train_run(config, tmp_path / "watched", observers=[Observer()],
              on_round=lambda record: seen.append(checkpoint.exists()))
    assert seen == [False] * 6  # an observer would miss the rounds before a restart
    never = _config(tmp_path, "tracking.checkpoint_every=0")
    checkpoint = partial_dir(tmp_path / "never") / CHECKPOINT_FILE
    seen.clear()
    train_run(never, tmp_path / "never", on_round=lambda record: seen.append(checkpoint.exists()))
    assert seen == [False] * 6


def test_a_resumed_run_s_tensorboard_holds_each_round_once(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = _config(tmp_path, "tracking.tensorboard=true")
    _interrupted(config, tmp_path / "run", after=3)
    train_run(config, tmp_path / "run")
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    steps = [e.step for e in events.Scalars("test_accuracy")]
    assert steps == [1, 2, 3, 4, 5, 6]
