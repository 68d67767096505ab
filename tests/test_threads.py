import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
import torch

import experiments.cli
from experiments.sweep import _init_worker
from privfed import threads
from privfed.cli import main
from privfed.config import ConfigError

CONFIGS = Path(__file__).parents[1] / "experiments" / "configs"
DIGITS, GRID = str(CONFIGS / "digits.toml"), str(CONFIGS / "partition_grid.toml")


@pytest.fixture
def restore_threads():
    yield
    torch.set_num_threads(1)  # the suite's setting (conftest)


@pytest.mark.parametrize("name", ["logistic", "mlp", "my_models:Net"])
@pytest.mark.parametrize("cores", [1, 2, 16])
def test_small_and_user_models_get_one_thread(name, cores):
    assert threads.choose_threads(name, cores) == 1


@pytest.mark.parametrize(("cores", "expected"), [(1, 1), (2, 2), (3, 3), (16, 4)])
def test_the_cnn_gets_the_cores_up_to_the_cap(cores, expected):
    assert threads.CNN_MAX_THREADS == 4
    assert threads.choose_threads("cnn", cores) == expected


@pytest.mark.parametrize(("cores", "workers", "expected"),
                         [(16, 1, 16), (16, 4, 4), (16, 3, 5), (2, 4, 1), (3, 2, 1)])
def test_sweep_workers_divide_the_cores(cores, workers, expected):
    assert threads.share_cores(cores, workers) == expected


def test_a_sweep_workers_threads_follow_its_models_and_its_share(monkeypatch):
    monkeypatch.setattr(threads, "available_cores", lambda: 16)
    assert threads.auto_threads(["mlp", "cnn"], workers=1) == 4
    assert threads.auto_threads(["mlp", "cnn"], workers=8) == 2
    assert threads.auto_threads(["mlp", "logistic"], workers=1) == 1
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (14.2, 14.2, 14.2), raising=False)
    assert threads.auto_threads(["cnn"], workers=1) == 4  # never the load: reproducible bits


def test_the_sweep_worker_initializer_sets_the_workers_threads():
    with ProcessPoolExecutor(max_workers=1, initializer=_init_worker,
                             initargs=(os.getpid(), 3)) as pool:
        assert pool.submit(torch.get_num_threads).result() == 3


@pytest.mark.parametrize(("option", "env", "expected"), [
    ("3", {"PRIVFED_THREADS": "5"}, 3),
    (None, {"PRIVFED_THREADS": "5"}, 5),
    (None, {"PRIVFED_THREADS": " auto "}, None),
    ("auto", {"PRIVFED_THREADS": "5"}, None),
    (None, {}, None),
    (None, {"PRIVFED_THREADS": ""}, None),
])
def test_threads_option_beats_the_environment_which_beats_the_rule(option, env, expected):
    assert threads.requested_threads(option, env) == expected


@pytest.mark.parametrize("value", ["0", "-1", "two", "2.5", "", "\u00b2"])
def test_bad_values_name_their_source(value):
    with pytest.raises(ConfigError, match="^--threads: must be a positive integer or 'auto'"):
        threads.requested_threads(value, {"PRIVFED_THREADS": "2"})
    with pytest.raises(ConfigError, match="^PRIVFED_THREADS: must be a positive integer"):
        threads.requested_threads(None, {"PRIVFED_THREADS": value or "0"})


def test_run_threads_sets_torchs_threads(tmp_path, monkeypatch, restore_threads):
    monkeypatch.setenv("PRIVFED_THREADS", "2")
    status = main(["run", DIGITS, "--set", "federation.rounds=1", "--set", "model.hidden=[8]",
                   "--output-dir", str(tmp_path), "--quiet", "--threads", "3"])
    assert status == 0 and torch.get_num_threads() == 3


def test_run_without_threads_uses_the_rule(tmp_path, monkeypatch, restore_threads):
    monkeypatch.delenv("PRIVFED_THREADS", raising=False)
    torch.set_num_threads(2)
    status = main(["run", DIGITS, "--set", "federation.rounds=1", "--set", "model.hidden=[8]",
                   "--output-dir", str(tmp_path), "--quiet"])
    assert status == 0 and torch.get_num_threads() == 1  # the MLP: one thread


@pytest.mark.parametrize(("args", "env", "message"), [
    (["run", DIGITS, "--threads", "0"], None, "error: --threads: must be a positive integer"),
    (["audit", DIGITS, "--threads", "x"], None, "error: --threads: must be a positive integer"),
    (["run", DIGITS], "many", "error: PRIVFED_THREADS: must be a positive integer"),
    (["compare", "--threads", "-2"], None, "error: --threads: must be a positive integer"),
    (["sweep", GRID, "--workers", "2", "--threads", "1.5"], None,
     "error: --threads: must be a positive integer"),
])
def test_bad_threads_exit_2_with_one_line(args, env, message, tmp_path, monkeypatch, capsys):
    if env is not None:
        monkeypatch.setenv("PRIVFED_THREADS", env)
    assert main([*args, "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
    assert not any(tmp_path.iterdir())  # refused before any work


def test_run_without_config_passes_threads_to_the_main_job(monkeypatch):
    seen = []
    monkeypatch.setattr(experiments.cli, "run_main_job", lambda args: seen.append(args) or 0)
    assert main(["run", "--threads", "2"]) == 0
    assert seen[0].threads == "2"
