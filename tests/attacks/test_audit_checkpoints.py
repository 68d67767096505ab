"""Audit checkpoints: atomic, of one config only, never used when damaged; temporaries."""

import math
import os
import subprocess

import numpy as np
import pytest

from attacks.checkpoints import CheckpointStore, check_replaceable
from attacks.runner import run_audit
from privfed.atomic import publish_dir, remove_stale_temporaries, staging_dir
from privfed.config import load_config


@pytest.fixture
def store(tmp_path):
    return CheckpointStore(tmp_path / "audit", "aaaa1111")


def dead_pid() -> int:
    """The id of a process that has exited."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_saved_unit_reads_back_as_returned(store):
    arrays = {"confidence": np.array([0.5, -1.25, 3.0])}
    saved = store.save("reference-0", arrays, {"eps": math.inf, "loss": math.nan, "n": 3})
    loaded = store.load("reference-0")
    assert loaded is not None
    np.testing.assert_array_equal(loaded.arrays["confidence"], arrays["confidence"])
    assert loaded.meta == saved.meta == {"eps": math.inf, "loss": None, "n": 3}
    assert [p.name for p in store.directory.iterdir()] == ["reference-0.npz"]


def test_missing_unit_is_none(store):
    assert store.load("target") is None


def test_unit_of_another_config_is_not_used(store, tmp_path):
    store.save("target", {"logits": np.ones((2, 3))}, {})
    other = CheckpointStore(tmp_path / "audit", "bbbb2222")
    other.directory.mkdir(parents=True)
    os.replace(store.directory / "target.npz", other.directory / "target.npz")
    assert other.load("target") is None


def test_unit_saved_under_another_name_is_not_used(store):
    store.save("reference-0", {"confidence": np.zeros(3)}, {})
    os.replace(store.directory / "reference-0.npz", store.directory / "reference-1.npz")
    assert store.load("reference-1") is None


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty"])
def test_damaged_unit_is_not_used(store, damage):
    store.save("target", {"logits": np.arange(600.0)}, {"epsilon": 1.0})
    path = store.directory / "target.npz"
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) - 30]
    elif damage == "flip":
        data[len(data) // 2] ^= 0xFF  # inside the array's bytes: a CRC error
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    assert store.load("target") is None


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path, store):
    out = tmp_path / "audit"
    dead, alive = dead_pid(), os.getppid()
    for pid in (dead, alive):
        (tmp_path / f".audit.tmp-{pid}-0123abcd").mkdir()
    (tmp_path / f".audit.staging-{dead}").mkdir()  # not a privfed temporary's name: kept
    store.save("target", {}, {})
    for pid in (dead, alive):
        (store.directory / f".reference-0.npz.tmp-{pid}-0123abcd").write_bytes(b"partial")
    remove_stale_temporaries(out.parent)
    store.remove_stale()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [".audit.checkpoints", f".audit.tmp-{alive}-0123abcd", f".audit.staging-{dead}"])
    assert sorted(p.name for p in store.directory.iterdir()) == [
        f".reference-0.npz.tmp-{alive}-0123abcd", "target.npz"]


def test_publish_replaces_an_audit_of_another_config(tmp_path):
    out = tmp_path / "audit"
    out.mkdir()
    (out / "leakage.json").write_text("{}")
    (out / "roc.png").write_bytes(b"old")
    with staging_dir(out) as staging:
        (staging / "leakage.json").write_text('{"new": 1}')
        check_replaceable(out)
        publish_dir(staging, out)
    assert [p.name for p in tmp_path.iterdir()] == ["audit"]
    assert [p.name for p in out.iterdir()] == ["leakage.json"]


def test_a_directory_of_other_files_is_never_replaced(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not an audit directory"):
        check_replaceable(out)
    with pytest.raises(FileExistsError):
        run_audit(load_config(overrides=["audit.quick=true"]), out)
    assert (out / "notes.txt").read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]
