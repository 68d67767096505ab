"""Run directories that cannot be half-written, mixed or silently edited: atomic writes and
exchanges, stale temporaries, SHA256SUMS checked on resume and by ``privfed report``,
byte-identical ``model.pt``, and ``privfed run`` over a complete run."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import torch

import privfed.rundir as rundir_module
from experiments.cli import GRID_COPY
from experiments.results import collect_rows
from experiments.sweep import load_grid, run_sweep
from privfed import jsonsafe
from privfed.atomic import (
    exchange_dirs,
    publish_dir,
    remove_stale_temporaries,
    staging_dir,
    temporary_path,
    write_bytes,
)
from privfed.cli import main
from privfed.config import load_config
from privfed.integrity import DIGEST_FILE, verify_digest, write_digest
from privfed.rundir import RUN_FILES, run_problems, train_run

SMALL = ["federation.rounds=2", "model.hidden=[8]", "data.num_clients=3"]


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_write_bytes_replaces_whole_and_leaves_nothing_beside(tmp_path):
    target = tmp_path / "f.json"
    target.write_text("old")
    write_bytes(target, b"new")
    assert target.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_only_temporaries_of_dead_processes_are_removed(tmp_path):
    dead, alive = _dead_pid(), os.getppid()
    names = [f".run.tmp-{dead}-0123abcd", f".x.json.tmp-{dead}-89abcdef",
             f".run.tmp-{alive}-0123abcd", temporary_path(tmp_path / "mine").name,
             f".run.tmp-{dead}", "run.tmp-1-0123abcd", "results.csv"]
    for name in names[:2]:
        (tmp_path / name).mkdir()
    for name in names[2:]:
        (tmp_path / name).write_text("")
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == sorted(names[:2])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[2:])


def test_publishing_over_a_directory_exchanges_it_whole(tmp_path):
    target = tmp_path / "run"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with staging_dir(target) as staging:
        (staging / "new.txt").write_text("new")
        publish_dir(staging, target)
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir(), (a / "1").write_text(""), (b / "2").write_text("")
    exchange_dirs(a, b)
    assert [p.name for p in a.iterdir()] == ["2"] and [p.name for p in b.iterdir()] == ["1"]


def test_a_digest_finds_every_change_and_sha256sum_agrees(tmp_path):
    for name, text in (("a.txt", "alpha"), ("b.json", "{}")):
        (tmp_path / name).write_text(text)
    write_digest(tmp_path, ["a.txt", "b.json"])
    assert verify_digest(tmp_path) == []
    if shutil.which("sha256sum"):
        assert subprocess.run(["sha256sum", "--quiet", "-c", DIGEST_FILE],
                              cwd=tmp_path).returncode == 0
    (tmp_path / "a.txt").write_text("alphA")
    assert verify_digest(tmp_path) == ["a.txt: content differs from SHA256SUMS"]
    (tmp_path / "b.json").unlink()
    assert verify_digest(tmp_path)[1] == "b.json: missing"
    (tmp_path / DIGEST_FILE).write_text("nonsense\n")
    assert verify_digest(tmp_path) == ["SHA256SUMS line 1 is malformed"]
    (tmp_path / DIGEST_FILE).unlink()
    assert "no SHA256SUMS" in verify_digest(tmp_path)[0]


def test_identical_runs_write_byte_identical_models(tmp_path):
    config = load_config(overrides=SMALL)
    first = train_run(config, tmp_path / "one" / "run")
    second = train_run(config, tmp_path / "two" / "elsewhere")
    assert (first.run_dir / "model.pt").read_bytes() == (second.run_dir / "model.pt").read_bytes()
    assert (first.run_dir / "config.toml").read_bytes() == \
        (second.run_dir / "config.toml").read_bytes()  # metrics.jsonl differs in its timings
    saved = torch.load(first.run_dir / "model.pt", weights_only=True)["state_dict"]
    assert torch.equal(first.server.workspace.spec.flatten(saved), first.server.weights)


def test_a_run_directory_lists_its_files_in_its_digest(tmp_path):
    config = load_config(overrides=SMALL)
    run_dir = train_run(config, tmp_path / "run").run_dir
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(RUN_FILES)
    listed = [line.split("  ")[1] for line in (run_dir / DIGEST_FILE).read_text().splitlines()]
    assert listed == list(RUN_FILES[:-1])
    assert run_problems(run_dir, config) == []
    other = load_config(overrides=[*SMALL, "seed=1"])
    assert "not of" in run_problems(run_dir, other)[0]


@pytest.fixture
def finished_sweep(tmp_path):
    grid = tmp_path / "tiny.toml"
    grid.write_text("[base]\nname = 'tiny'\n[base.model]\nhidden = [8]\n[base.federation]\n"
                    "rounds = 2\n[base.data]\nnum_clients = 3\n[grid]\nseed = [0, 1]\n")
    points = load_grid(grid)
    sweep_dir = tmp_path / "out" / "tiny"
    run_sweep(points, sweep_dir)
    shutil.copy(grid, sweep_dir / GRID_COPY)
    return points, sweep_dir


def test_an_edited_summary_is_reported_and_run_again_never_used(finished_sweep, capsys):
    points, sweep_dir = finished_sweep
    summary = sweep_dir / points[1].key / "summary.json"
    true_accuracy = summary.read_text()
    edited = true_accuracy.replace('"final_accuracy": 0.', '"final_accuracy": 1.', 1)
    assert edited != true_accuracy
    summary.write_text(edited)
    rows = collect_rows(points, sweep_dir)
    assert [r["status"] for r in rows] == ["done", "invalid"]
    assert rows[1]["final_accuracy"] is None
    assert rows[1]["error"] == "summary.json: content differs from SHA256SUMS"
    assert main(["report", str(sweep_dir)]) == 0
    assert f"invalid {points[1].key}: summary.json: content differs" in capsys.readouterr().out
    events = []
    outcome = run_sweep(points, sweep_dir, on_event=lambda k, p, d: events.append((k, p.key)))
    assert events == [("skipped", points[0].key), ("invalid", points[1].key),
                      ("done", points[1].key)]
    assert [p.key for p in outcome["done"]] == [points[1].key]
    assert jsonsafe.loads(summary.read_text(), keep=("name",))["final_accuracy"] == \
        jsonsafe.loads(true_accuracy, keep=("name",))["final_accuracy"]


def test_privfed_run_shows_a_complete_run_and_rerun_replaces_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text(load_config(overrides=SMALL).to_toml())
    args = ["run", "c.toml", "-q"]
    assert main(args) == 0
    run_dir = next((tmp_path / "runs").iterdir())
    written = (run_dir / DIGEST_FILE).stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(rundir_module, "build_simulation", no_training)
    assert main(args[:-1]) == 0
    assert "holds this config's complete run" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="trained again"):
        main([*args, "--rerun"])
    assert (run_dir / DIGEST_FILE).stat().st_mtime_ns == written
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    (run_dir / "metrics.jsonl").write_text("")
    assert main(args[:-1]) == 0
    assert "fails its checks (metrics.jsonl: content differs" in capsys.readouterr().out
    assert run_problems(run_dir, load_config(overrides=SMALL)) == []
