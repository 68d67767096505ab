"""An interrupted audit resumes from its finished units, with the uninterrupted result."""

import collections
import importlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from attacks.checkpoints import AUDIT_FILES, CheckpointStore
from attacks.runner import run_audit
from privfed import jsonsafe
from privfed.config import load_config

TINY = ["audit.quick=true", "data.num_clients=3", "federation.rounds=3", "model.hidden=[16]",
        "audit.num_reference=2", "audit.num_canaries=20"]
UNITS = ["membership: target trained",
         "membership: reference model 1/2 trained",
         "membership: reference model 2/2 trained",
         "inversion: single inverted",
         "inversion: multi_step inverted",
         "inversion: aggregate inverted",
         "epsilon audit: done"]


class Killed(Exception):
    """Stands for a kill between two units."""


def count_trainings(monkeypatch) -> collections.Counter:
    """Count the federations each kind of unit trains (target, reference, ...)."""
    counts: collections.Counter = collections.Counter()

    def counting(module, name, kind):
        real = getattr(module, name)

        def wrapper(*args, **kwargs):
            counts[kind] += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    module = importlib.import_module
    counting(module("attacks.membership_experiment"), "build_federation", "target")
    counting(module("attacks.membership_experiment"), "train_federation", "reference")
    counting(module("attacks.inversion_experiment"), "build_federation", "inversion")
    counting(module("attacks.audit"), "train_federation", "canary")
    return counts


def interrupt(config, out: Path, after: str) -> None:
    """Run the audit of ``config`` and stop it as soon as unit ``after`` is saved."""
    def say(message: str) -> None:
        if message == after:
            raise Killed(message)

    with pytest.raises(Killed):
        run_audit(config, out, progress=say)
    assert not out.exists()


def leakage(out: Path) -> dict:
    report = jsonsafe.loads((out / "leakage.json").read_text(encoding="utf-8"))
    report.pop("seconds")
    return report


@pytest.fixture(scope="module")
def config():
    return load_config(overrides=TINY)


@pytest.fixture(scope="module")
def complete(tmp_path_factory, config):
    """An uninterrupted audit: its directory and progress messages."""
    out = tmp_path_factory.mktemp("complete") / "audit"
    messages: list[str] = []
    run_audit(config, out, progress=messages.append)
    return out, messages


def test_complete_audit_leaves_only_its_files(complete):
    out, messages = complete
    assert [p.name for p in out.parent.iterdir()] == ["audit"]
    assert {p.name for p in out.iterdir()} == AUDIT_FILES
    assert [m for m in messages if m in UNITS] == UNITS


def test_complete_audit_is_not_redone(complete, config, monkeypatch):
    out, _ = complete
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    counts = count_trainings(monkeypatch)
    messages: list[str] = []
    report = run_audit(config, out, progress=messages.append)
    assert messages == ["audit: complete already"]
    assert not counts
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    assert report["config_hash"] == config.short_hash()


@pytest.mark.parametrize("kill_after", [1, 3])
def test_resume_loads_the_finished_units(tmp_path, complete, config, monkeypatch,
                                         kill_after):
    out = tmp_path / "audit"
    interrupt(config, out, UNITS[kill_after])
    counts = count_trainings(monkeypatch)
    messages: list[str] = []
    run_audit(config, out, progress=messages.append)
    assert [m for m in messages if m.endswith("(from checkpoint)")] == [
        f"{m} (from checkpoint)" for m in UNITS[:kill_after + 1]]
    assert [m for m in messages if m in UNITS] == UNITS[kill_after + 1:]
    finished = UNITS[:kill_after + 1]
    assert counts["target"] == 0
    assert counts["reference"] == 2 - sum("reference" in m for m in finished)
    assert counts["inversion"] == 3 - sum("inverted" in m for m in finished)
    assert counts["canary"] == 1
    assert leakage(out) == leakage(complete[0])
    assert [p.name for p in tmp_path.iterdir()] == ["audit"]


def test_truncated_checkpoint_is_recomputed(tmp_path, complete, config, monkeypatch):
    out = tmp_path / "audit"
    interrupt(config, out, UNITS[1])
    saved = CheckpointStore(out, config.short_hash()).directory / "target.npz"
    saved.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])
    counts = count_trainings(monkeypatch)
    messages: list[str] = []
    run_audit(config, out, progress=messages.append)
    assert "membership: target trained" in messages
    assert "membership: reference model 1/2 trained (from checkpoint)" in messages
    assert counts["target"] == 1 and counts["reference"] == 1
    assert leakage(out) == leakage(complete[0])


def test_checkpoint_of_an_older_audit_lacking_arrays_is_recomputed(tmp_path, complete, config,
                                                                   monkeypatch):
    out = tmp_path / "audit"
    interrupt(config, out, UNITS[1])
    store = CheckpointStore(out, config.short_hash())
    saved = store.load("reference-0")
    # As saved before RMIA: the confidences on the candidates only, not on the population.
    store.save("reference-0", {"confidence": saved.arrays["confidence"]}, saved.meta)
    counts = count_trainings(monkeypatch)
    messages: list[str] = []
    run_audit(config, out, progress=messages.append)
    assert "membership: reference model 1/2 trained" in messages
    assert counts["target"] == 0 and counts["reference"] == 2
    assert leakage(out) == leakage(complete[0])


def test_checkpoints_of_another_config_are_not_used(tmp_path, config, monkeypatch):
    out = tmp_path / "audit"
    other = load_config(overrides=[*TINY, "audit.num_canaries=22"])
    interrupt(other, out, UNITS[2])
    assert other.short_hash() != config.short_hash()
    counts = count_trainings(monkeypatch)
    messages: list[str] = []
    run_audit(config, out, progress=messages.append)
    assert not [m for m in messages if "checkpoint" in m]
    assert counts["target"] == 1 and counts["reference"] == 2
    # The other config's units stay for its own resume; this config's are gone.
    assert sorted(p.name for p in tmp_path.iterdir()) == [".audit.checkpoints", "audit"]
    assert [p.name for p in (tmp_path / ".audit.checkpoints").iterdir()] == [
        other.short_hash()]


_CHILD = """
import sys
from attacks.runner import run_audit
from privfed.config import load_config
run_audit(load_config(overrides=sys.argv[2:]), sys.argv[1],
          progress=lambda m: print(m, flush=True))
"""


@pytest.mark.slow
def test_resume_after_a_real_kill(tmp_path, complete, config, monkeypatch):
    out = tmp_path / "audit"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(out), *TINY],
                             stdout=subprocess.PIPE, text=True, env=env)
    for line in child.stdout:
        if line.strip() == UNITS[1]:
            child.send_signal(signal.SIGKILL)
            break
    child.wait(timeout=60)
    child.stdout.close()
    assert child.returncode == -signal.SIGKILL and not out.exists()
    counts = count_trainings(monkeypatch)
    run_audit(config, out)
    assert counts["target"] == 0 and counts["reference"] == 1
    assert leakage(out) == leakage(complete[0])
    assert [p.name for p in tmp_path.iterdir()] == ["audit"]
