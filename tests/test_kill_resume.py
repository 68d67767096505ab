"""The kill-test harness: sweeps and runs killed with SIGKILL at random moments and between
any two of their writes, then resumed.

After every kill the output directory may hold only complete, intact run directories (and
stale temporaries); after the resume every point is there exactly once, equal to an
uninterrupted run's (figures and ``model.pt`` byte for byte), with no temporary left. A
sweep whose parent is killed leaves no worker alive.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments.sweep import load_grid
from privfed import jsonsafe
from privfed.atomic import is_temporary
from privfed.config import load_config
from privfed.rundir import run_problems

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
HARNESS = [sys.executable, str(ROOT / "tests" / "kill_helpers.py")]

GRID = """
[base]
name = "kill"
[base.model]
hidden = [8]
[base.federation]
rounds = 3
[base.data]
num_clients = 3

[grid]
seed = [0, 1, 2]
"""

TIMINGS = ("seconds_total", "seconds_per_round", "seconds_encode_total",
           "seconds_aggregate_total", "seconds_decode_total")


def _privfed(args: list[str], cwd: Path, *, kill_at: int = 0, log: Path | None = None
             ) -> subprocess.CompletedProcess:
    env = {**os.environ, "PRIVFED_KILL_AT": str(kill_at), "PYTHONPATH": str(ROOT)}
    if log is not None:
        env["PRIVFED_EVENT_LOG"] = str(log)
    return subprocess.run([*HARNESS, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def _killed_at_random(args: list[str], cwd: Path, delay: float) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([*HARNESS, *args], cwd=cwd, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)


def _figures(run_dir: Path) -> dict:
    summary = jsonsafe.loads((run_dir / "summary.json").read_text(), keep=("name",))
    return {k: v for k, v in summary.items() if k not in TIMINGS}


def _state(out: Path) -> dict[str, tuple[dict, bytes]]:
    """Every run directory under ``out``: its figures and its model's bytes."""
    return {p.name: (_figures(p), (p / "model.pt").read_bytes())
            for p in sorted(out.iterdir()) if (p / "summary.json").is_file()}


def _temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if is_temporary(p)]


def _assert_only_intact_runs(out: Path, configs: dict) -> None:
    """Every run directory present is complete and intact (never a mix of two runs)."""
    for path in out.iterdir():
        if path.is_dir() and path.name in configs:
            assert run_problems(path, configs[path.name]) == [], path


@pytest.fixture(scope="module")
def sweep_reference(tmp_path_factory) -> tuple[Path, dict]:
    """The grid file and the state of its uninterrupted sweep."""
    root = tmp_path_factory.mktemp("reference")
    grid = root / "kill.toml"
    grid.write_text(GRID)
    result = _privfed(["sweep", str(grid), "--output-dir", str(root / "out")], root)
    assert result.returncode == 0, result.stderr
    return grid, _state(root / "out" / "kill")


def _assert_resumes_to_reference(grid: Path, cwd: Path, reference: dict) -> None:
    out = cwd / "out" / "kill"
    configs = {p.key: p.config for p in load_grid(grid)}
    if out.exists():
        _assert_only_intact_runs(out, configs)
    result = _privfed(["sweep", str(grid), "--output-dir", str(cwd / "out")], cwd)
    assert result.returncode == 0, result.stderr
    assert _state(out) == reference
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted([*reference, "failed"])
    assert _temporaries(cwd) == []


def test_a_sweep_killed_between_any_two_writes_resumes_to_the_same_results(
        sweep_reference, tmp_path):
    grid, reference = sweep_reference
    log = tmp_path / "events.log"
    counted = _privfed(["sweep", str(grid), "--output-dir", str(tmp_path / "count")],
                       tmp_path, log=log)
    assert counted.returncode == 0, counted.stderr
    events = len(log.read_text().splitlines())
    assert events > 20  # every run, record, table, plot and report is a write
    # Kills at the first writes, around the first run's publication, and at a random sample.
    chosen = sorted({1, 2, 3, 4, 5, 6, *random.Random(0).sample(range(7, events + 1), 6)})
    for kill_at in chosen:
        work = tmp_path / f"kill-{kill_at}"
        work.mkdir()
        killed = _privfed(["sweep", str(grid), "--output-dir", str(work / "out")], work,
                          kill_at=kill_at)
        assert killed.returncode == -signal.SIGKILL, (kill_at, killed.stderr)
        _assert_resumes_to_reference(grid, work, reference)


def test_a_sweep_killed_at_random_moments_resumes_to_the_same_results(sweep_reference,
                                                                      tmp_path):
    grid, reference = sweep_reference
    rng = random.Random(1)
    args = ["sweep", str(grid), "--output-dir", str(tmp_path / "out")]
    configs = {p.key: p.config for p in load_grid(grid)}
    for _ in range(4):
        _killed_at_random(args, tmp_path, rng.uniform(2.0, 8.0))
        if (tmp_path / "out" / "kill").exists():
            _assert_only_intact_runs(tmp_path / "out" / "kill", configs)
    _assert_resumes_to_reference(grid, tmp_path, reference)


def test_a_rerun_killed_between_any_two_writes_leaves_one_whole_run(tmp_path):
    """``privfed run --rerun`` over a complete directory, killed before each of its writes:
    the directory is always the old run or the new one, whole. The noise comes from OS
    entropy (``secure_mode``), so the two runs differ and a mix would fail its digest."""
    config_file = tmp_path / "c.toml"
    config_file.write_text('name = "rerun"\noutput_dir = "runs"\n[model]\nhidden = [8]\n'
                           '[federation]\nrounds = 2\n[data]\nnum_clients = 3\n'
                           '[privacy]\nmechanism = "local"\nnoise_multiplier = 1.0\n'
                           'secure_mode = true\n')
    config = load_config(config_file)
    run_dir = tmp_path / "runs" / f"rerun-{config.short_hash()}"
    first = _privfed(["run", str(config_file)], tmp_path)
    assert first.returncode == 0, first.stderr
    log = tmp_path / "events.log"
    assert _privfed(["run", str(config_file), "--rerun"], tmp_path, log=log).returncode == 0
    events = len(log.read_text().splitlines())
    models = {(run_dir / "model.pt").read_bytes()}
    for kill_at in range(1, events + 2):  # the last one is not reached: the run completes
        killed = _privfed(["run", str(config_file), "--rerun"], tmp_path, kill_at=kill_at)
        assert killed.returncode == (0 if kill_at > events else -signal.SIGKILL)
        assert run_problems(run_dir, config) == [], kill_at
        models.add((run_dir / "model.pt").read_bytes())
    assert len(models) > 1  # some kills came after the new run took the directory's place
    assert _privfed(["run", str(config_file)], tmp_path).returncode == 0
    assert _temporaries(tmp_path) == []


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_the_workers_of_a_killed_sweep_exit(tmp_path):
    grid = tmp_path / "busy.toml"
    grid.write_text(GRID.replace("rounds = 3", "rounds = 400").replace("[0, 1, 2]", "[0, 1]"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen([*HARNESS, "sweep", str(grid), "--workers", "2",
                               "--output-dir", str(tmp_path / "out")], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(workers := _children(parent.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(workers) >= 2
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=10)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in workers)


def _children(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
