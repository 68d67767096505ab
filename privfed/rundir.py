"""The run directory: resolved config, per-round metrics, summary, plot and final model.

:func:`train_run` is the one function that trains a config and writes its run directory;
``privfed run``, the sweep and the comparison call it, each with the engine it needs.
"""

from __future__ import annotations

import inspect
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from privfed import jsonsafe
from privfed.atomic import publish_dir, remove_stale_temporaries, staging_dir
from privfed.checkpoint import RunCheckpoint
from privfed.config import ConfigError, ExperimentConfig, load_config
from privfed.experiment import build_simulation
from privfed.federated import History, Observer, RoundRecord
from privfed.integrity import DIGEST_FILE, listed_files, verify_digest, write_digest
from privfed.live import TENSORBOARD_DIR, live_run
from privfed.model_file import model_bytes, model_record
from privfed.run_summary import summarize

__all__ = [
    "AUDIT_DIR", "DIAGNOSTICS_PLOT", "RUN_FILES", "RunResult", "TrainedServer", "Trainer",
    "flower_simulation",
    "read_summary", "release_history", "run_dir_for", "run_name",
    "run_problems",
    "train_in_process", "train_run", "write_run",
]

RUN_FILES = ("config.toml", "metrics.jsonl", "accuracy.png", "model.pt", "summary.json",
             DIGEST_FILE)
"""The files of a complete run directory, in the order they are written (``SHA256SUMS``,
last, holds the digest of the others; ``accuracy.png`` only where a round was evaluated,
``model.pt`` only where the trainer returned a model)."""

DIAGNOSTICS_PLOT = "diagnostics.png"
"""The plot of a DP run's per-round diagnostics (clipped fraction, signal-to-noise ratio,
epsilon; :func:`privfed.plots.plot_diagnostics`), beside :data:`RUN_FILES` and in the
digest; a run without a privacy mechanism has none."""

AUDIT_DIR = "audit"
"""The sub-directory of a run directory that holds its audit (``privfed audit``)."""


class TrainedServer(Protocol):
    """What a run directory needs of a trained server: the final global model as one flat
    float32 vector, and the workspace whose ``load`` puts it into its ``module`` (and,
    where it has one, the central ``test_data``, whose inputs give the model's input
    shape)."""

    weights: torch.Tensor
    workspace: Any


Trainer = Callable[
    [ExperimentConfig, Sequence[Observer], Callable[[RoundRecord], None] | None],
    tuple[TrainedServer, History],
]
"""Picks the engine: ``train(config, observers, on_round) -> (server, history)`` trains
``config`` to the end, calling ``on_round`` after each round, and returns the server holding
the final global model with the run's history. A trainer that cannot call ``on_round`` (the
Flower simulation) has the attribute ``reports_rounds = False``: its run has no live files.
A trainer that takes a ``checkpoint`` keyword (:func:`train_in_process`) is given the run's
:class:`~privfed.checkpoint.RunCheckpoint` to resume from and save."""


@dataclass(frozen=True)
class RunResult:
    """A trained config and its run directory.

    Attributes
    ----------
    run_dir : Path
    config : ExperimentConfig
        The config as trained and written to ``config.toml``.
    server : TrainedServer
        Holds the final global model (``server.weights``).
    history : History
        Every round, as trained (``metrics.jsonl`` holds :func:`release_history` of it).
    summary : dict
        What ``summary.json`` holds.
    """

    run_dir: Path
    config: ExperimentConfig
    server: TrainedServer
    history: History
    summary: dict[str, Any]


def train_in_process(
    config: ExperimentConfig,
    observers: Sequence[Observer] = (),
    on_round: Callable[[RoundRecord], None] | None = None,
    *,
    model: nn.Module | None = None,
    checkpoint: RunCheckpoint | None = None,
) -> tuple[TrainedServer, History]:
    """The default :data:`Trainer`: the whole federation in this process.

    ``model``, if given, is trained instead of ``config.model`` (which then only names it in
    the run directory); give it to :func:`train_run` as
    ``train=functools.partial(train_in_process, model=model)``. With a ``checkpoint``
    (:func:`train_run` passes the run's), training continues from its state and saves it
    as :meth:`~privfed.checkpoint.RunCheckpoint.train` says.
    """
    simulation = build_simulation(config, observers, model=model)
    if checkpoint is None:
        return simulation.server, simulation.run(on_round)
    return simulation.server, checkpoint.train(simulation.server, config.federation.rounds,
                                               on_round)


def flower_simulation(options: Any = None) -> Trainer:
    """A :data:`Trainer` on Flower's simulation engine (``pip install 'privfed[flower]'``).

    Parameters
    ----------
    options : privfed.integrations.flower.FlowerOptions, optional
        Default: Flower's defaults.

    Returns
    -------
    Trainer
        It refuses observers and ``on_round`` (the ServerApp prints each round itself) and a
        config other than ``flower_config(config)``, the one the Flower engines run (noise
        from OS entropy), so that ``config.toml`` is what was trained.
    """

    def train(
        config: ExperimentConfig,
        observers: Sequence[Observer],
        on_round: Callable[[RoundRecord], None] | None,
    ) -> tuple[TrainedServer, History]:
        from privfed.integrations.flower import flower_config, run_flower_simulation

        if observers or on_round is not None:
            raise ValueError("the Flower simulation engine takes no observers or on_round; "
                             "its ServerApp prints each round")
        if flower_config(config) != config:
            raise ValueError("the Flower engines run flower_config(config) (noise from OS "
                             "entropy): give train_run that config")
        return run_flower_simulation(config, options=options)

    train.reports_rounds = False  # type: ignore[attr-defined]
    return train


def train_run(
    config: ExperimentConfig,
    run_dir: str | Path | None = None,
    *,
    train: Trainer = train_in_process,
    observers: Sequence[Observer] = (),
    on_round: Callable[[RoundRecord], None] | None = None,
    resume: bool = True,
    on_resume: Callable[[int], None] | None = None,
) -> RunResult:
    """Train ``config`` and write its run directory: the one run writer.

    While it trains, ``<run_dir>.partial/`` (:mod:`privfed.live`) holds ``metrics.jsonl``,
    a line per round as it ends, with ``tracking.tensorboard`` the TensorBoard events, and,
    where the trainer takes one and no observer watches (it would miss the rounds before
    a restart), the run's checkpoint (:mod:`privfed.checkpoint`): a run interrupted after
    a checkpoint continues from it. When training ends :func:`write_run` puts the complete
    directory in place in one step and the in-progress directory is removed.

    Parameters
    ----------
    config : ExperimentConfig
        Written as trained to ``config.toml``.
    run_dir : path, optional
        Default: :func:`run_dir_for` ``(config)``.
    train : Trainer, default :func:`train_in_process`
        The engine: e.g. :func:`flower_simulation` ``(options)``. On a Flower deployment the
        ServerApp's ``main(grid, context)`` passes one that trains over the Grid::

            train_run(flower_config(config), run_dir, train=over_grid(grid, options))

        (:func:`privfed.integrations.flower.apps.over_grid`).
    observers : sequence of Observer
    on_round : callable, optional
        Called with each round's record as it finishes.
    resume : bool, default True
        Continue from the run's checkpoint where there is one; False: start over.
    on_resume : callable, optional
        Called with the checkpoint's last round before training continues from it.

    Returns
    -------
    RunResult

    Raises
    ------
    privfed.live.RunInProgressError
        When another process is training the same run directory.
    privfed.checkpoint.RunInterrupted
        SIGINT or SIGTERM stopped the run at the end of a round, after a checkpoint.
    """
    run_dir = Path(run_dir_for(config) if run_dir is None else run_dir)
    if not getattr(train, "reports_rounds", True):
        if config.tracking.tensorboard:
            raise ConfigError("tracking.tensorboard needs an engine that reports each round "
                              "(in-process or a Flower deployment, not flower-sim)")
        server, history = train(config, observers, on_round)
        return _finish(run_dir, config, server, history)
    checkpoints = not observers and "checkpoint" in inspect.signature(train).parameters
    with live_run(run_dir, config,
                  lambda done: release_history(config, History([done])).rounds[0],
                  checkpoints=checkpoints, resume=resume) as live:

        def record(round_record: RoundRecord) -> None:
            live.record(round_record)
            if on_round is not None:
                on_round(round_record)

        if not checkpoints:
            server, history = train(config, observers, record)
        else:
            if live.checkpoint.state is not None and on_resume is not None:
                on_resume(live.checkpoint.round)
            server, history = train(config, observers, record, checkpoint=live.checkpoint)
        live.close()
        return _finish(run_dir, config, server, history, tensorboard=live.tensorboard_dir)


def _finish(run_dir: Path, config: ExperimentConfig, server: TrainedServer, history: History,
            tensorboard: Path | None = None) -> RunResult:
    """Summarize the trained run and write its run directory."""
    summary = summarize(config, history, server.weights.numel(), server.test_metrics())
    server.workspace.load(server.weights)
    model = model_record(config, server.workspace.module, _input_shape(config, server))
    write_run(run_dir, config, history, summary, model=model, tensorboard=tensorboard)
    return RunResult(run_dir, config, server, history, summary)


def _input_shape(config: ExperimentConfig, server: TrainedServer) -> tuple[int, ...]:
    """One example's shape: the central test set's, else the config's declared schema (a
    deployment's), else that of the config's data (a simulation without a test set)."""
    from privfed.clientdata import declared_schema, load_configured_dataset

    test = getattr(server, "test_data", None)
    if test is not None:
        return tuple(test[0].shape[1:])
    try:
        return declared_schema(config).input_shape
    except ConfigError:
        return load_configured_dataset(config).input_shape


def run_name(config: ExperimentConfig) -> str:
    """``<name>-<short hash of the config>``: the name of the config's run directory."""
    return f"{config.name}-{config.short_hash()}"


def run_dir_for(config: ExperimentConfig, engine: str = "inprocess") -> Path:
    """``<output_dir>/<name>-<short hash of the config>``, suffixed ``-<engine>`` for a run
    on another engine than the in-process one."""
    suffix = "" if engine == "inprocess" else f"-{engine}"
    return Path(config.output_dir) / f"{run_name(config)}{suffix}"


def release_history(config: ExperimentConfig, history: History) -> History:
    """What a run directory may hold of ``history``: without client ids when user-level DP
    samples clients (amplification by sampling assumes nobody learns who took part)."""
    sampled = config.federation.fraction < 1
    return history.without_participants() if config.privacy.user_level and sampled else history


def write_run(
    run_dir: str | Path,
    config: ExperimentConfig,
    history: History,
    summary: dict[str, Any],
    *,
    model: Mapping[str, Any] | None = None,
    tensorboard: Path | None = None,
) -> Path:
    """Write ``config.toml``, ``metrics.jsonl``, ``accuracy.png``, ``diagnostics.png`` (under
    a privacy mechanism), ``model.pt`` (given the
    final global ``model``, :func:`privfed.model_file.model_record`'s dict),
    ``summary.json`` and their ``SHA256SUMS``: :func:`train_run`'s writer; a
    ``tensorboard`` event directory, where it exists, is copied in as ``tensorboard/``,
    outside the digest (event files hold wall-clock times).

    The files are written into a temporary sibling directory that then takes the place of
    ``run_dir`` in one step (:func:`privfed.atomic.publish_dir`; an existing ``run_dir`` is
    exchanged whole, its ``audit/`` carried over, since an audit depends only on the
    config). A reader never sees a half-written or mixed directory, and a kill at any
    moment leaves the old directory or the new one; the temporaries a killed writer left
    are removed by the next writer in the same parent. The JSON files are strict JSON
    (:mod:`privfed.jsonsafe`: NaN as null, infinities as ``"inf"``/``"-inf"``); read them
    with :func:`privfed.jsonsafe.loads`. ``model.pt`` is byte-identical for identical
    weights.
    """
    run_dir = Path(run_dir)
    remove_stale_temporaries(run_dir.parent)
    released = release_history(config, history)
    with staging_dir(run_dir) as staging:
        (staging / "config.toml").write_text(config.to_toml(), encoding="utf-8")
        released.write_jsonl(staging / "metrics.jsonl")
        _write_plots(staging, config, released)
        if model is not None:
            (staging / "model.pt").write_bytes(model_bytes(model))
        (staging / "summary.json").write_text(jsonsafe.dumps(summary, indent=2) + "\n",
                                              encoding="utf-8")
        write_digest(staging, [name for name in (*RUN_FILES[:-1], DIAGNOSTICS_PLOT)
                               if (staging / name).exists()])
        if tensorboard is not None and tensorboard.is_dir():
            shutil.copytree(tensorboard, staging / TENSORBOARD_DIR)
        if (run_dir / AUDIT_DIR).is_dir():
            os.replace(run_dir / AUDIT_DIR, staging / AUDIT_DIR)
        publish_dir(staging, run_dir)
    return run_dir


def _write_plots(staging: Path, config: ExperimentConfig, released: History) -> None:
    """``accuracy.png`` where a round was evaluated; ``diagnostics.png`` of the released
    history (what ``metrics.jsonl`` holds) under a privacy mechanism, where it holds a
    diagnostic (a history written by a mechanism always does: its epsilon)."""
    from privfed.plots import (  # matplotlib loads only here
        has_diagnostics,
        plot_accuracy,
        plot_diagnostics,
    )

    name = f"{config.name} ({config.short_hash()})"
    if released.evaluated():
        plot_accuracy(released, staging / "accuracy.png",
                      title=f"{name}: test accuracy per round")
    if config.privacy.mechanism != "none" and has_diagnostics(released):
        plot_diagnostics(released, staging / DIAGNOSTICS_PLOT,
                         title=f"{name}: DP diagnostics per round")


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    """``run_dir/summary.json`` as :func:`privfed.jsonsafe.loads` reads it (infinities as
    floats, the run's ``name`` kept as written).

    Raises
    ------
    OSError, ValueError
        No such file, or not strict JSON.
    """
    return jsonsafe.loads((Path(run_dir) / "summary.json").read_text(encoding="utf-8"),
                          keep=("name",))


def run_problems(run_dir: str | Path, config: ExperimentConfig) -> list[str]:
    """Why ``run_dir`` is not the complete, intact run of ``config`` (empty when it is).

    Checks every file against the directory's ``SHA256SUMS``
    (:func:`privfed.integrity.verify_digest`), that every file of :data:`RUN_FILES` but the
    optional ``accuracy.png`` and ``model.pt`` is listed there, and that ``config.toml``
    and ``summary.json`` are ``config``'s (its :meth:`short_hash`, which covers the data's
    content).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return ["no run directory"]
    problems = verify_digest(run_dir)
    if problems:
        return problems
    listed = listed_files(run_dir)
    missing = [n for n in ("config.toml", "metrics.jsonl", "summary.json") if n not in listed]
    if missing:
        return [f"{DIGEST_FILE} does not list {', '.join(missing)}"]
    expected = config.short_hash()
    try:
        summary = read_summary(run_dir)
        saved = load_config(run_dir / "config.toml").short_hash()
    except (OSError, ValueError) as err:
        return [f"unreadable: {err}"]
    if summary.get("config_hash") != expected or saved != expected:
        return [f"holds the run of config {summary.get('config_hash')} (config.toml "
                f"{saved}), not of {expected}"]
    return []
