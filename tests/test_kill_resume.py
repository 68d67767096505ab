"""The kill-test harness: sweeps and runs killed with SIGKILL at random moments and between
any two of their writes, then resumed.

After every kill the output directory may hold only complete, intact run directories (and
stale temporaries); after the resume every point is there exactly once, equal to an
uninterrupted run's (figures and ``model.pt`` byte for byte), with no temporary left. A
sweep whose parent is killed leaves no worker alive.
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest

from experiments.sweep import load_grid
from privfed import jsonsafe
from privfed.atomic import is_temporary
from privfed.config import load_config
from privfed.rundir import run_problems
from tests.kill_helpers import run_privfed, start_privfed

pytestmark = pytest.mark.slow

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
    assert run_privfed(["sweep", str(grid), "--output-dir", str(root / "out")], root) == 0
    return grid, _state(root / "out" / "kill")


def _assert_resumes_to_reference(grid: Path, cwd: Path, reference: dict) -> None:
    out = cwd / "out" / "kill"
    configs = {p.key: p.config for p in load_grid(grid)}
    if out.exists():
        _assert_only_intact_runs(out, configs)
    assert run_privfed(["sweep", str(grid), "--output-dir", str(cwd / "out")], cwd) == 0
    assert _state(out) == reference
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted([*reference, "failed"])
    assert _temporaries(cwd) == []


def test_a_sweep_killed_between_any_two_writes_resumes_to_the_same_results(
        sweep_reference, tmp_path):
    grid, reference = sweep_reference
    log = tmp_path / "events.log"
    assert run_privfed(["sweep", str(grid), "--output-dir", str(tmp_path / "count")],
                       tmp_path, log=log) == 0
    events = len(log.read_text().splitlines())
    assert events > 20  # every run, record, table, plot and report is a write
    # Around the first run's publication (its digest, then the rename), the second run's,
    # and at a random sample of the rest (tables, plots, report).
    chosen = sorted({2, 3, 5, *random.Random(0).sample(range(6, events + 1), 4)})
    for kill_at in chosen:
        work = tmp_path / f"kill-{kill_at}"
        work.mkdir()
        killed = run_privfed(["sweep", str(grid), "--output-dir", str(work / "out")], work,
                             kill_at=kill_at)
        assert killed == -signal.SIGKILL, kill_at
        _assert_resumes_to_reference(grid, work, reference)


def test_a_sweep_killed_at_random_moments_resumes_to_the_same_results(sweep_reference,
                                                                      tmp_path):
    grid, reference = sweep_reference
    rng = random.Random(1)
    args = ["sweep", str(grid), "--output-dir", str(tmp_path / "out")]
    configs = {p.key: p.config for p in load_grid(grid)}
    for _ in range(3):
        child = start_privfed(args, tmp_path)
        time.sleep(rng.uniform(0.2, 3.0))
        child.kill()
        child.join()
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
    assert run_privfed(["run", str(config_file)], tmp_path) == 0
    log = tmp_path / "events.log"
    assert run_privfed(["run", str(config_file), "--rerun"], tmp_path, log=log) == 0
    events = len(log.read_text().splitlines())
    models = {(run_dir / "model.pt").read_bytes()}
    for kill_at in range(1, events + 2):  # the last one is not reached: the run completes
        killed = run_privfed(["run", str(config_file), "--rerun"], tmp_path, kill_at=kill_at)
        assert killed == (0 if kill_at > events else -signal.SIGKILL)
        assert run_problems(run_dir, config) == [], kill_at
        models.add((run_dir / "model.pt").read_bytes())
    assert len(models) > 1  # some kills came after the new run took the directory's place
    assert run_privfed(["run", str(config_file)], tmp_path) == 0
    assert _temporaries(tmp_path) == []


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_the_workers_of_a_killed_sweep_exit(tmp_path):
    grid = tmp_path / "busy.toml"
    grid.write_text(GRID.replace("rounds = 3", "rounds = 400").replace("[0, 1, 2]", "[0, 1]"))
    parent = start_privfed(["sweep", str(grid), "--workers", "2",
                            "--output-dir", str(tmp_path / "out")], tmp_path)
    deadline = time.monotonic() + 60
    while len(workers := _children(parent.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(workers) >= 2
    parent.kill()
    parent.join(10)
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
