"""Sweeps: a base config times a grid of field values, one run directory per point, resumable.

A grid file is TOML with two tables::

    [base]                     # any experiment config (or: base = "path/to/config.toml")
    name = "dp-grid"
    [base.federation]
    rounds = 30

    [grid]                     # dotted field -> list of values; the sweep is their product
    "privacy.epsilon" = [1.0, 3.0, 8.0, inf]     # inf: the non-private run
    seed = [0, 1, 2]
    data = [{partition = "iid"}, {partition = "dirichlet", alpha = 0.1}]  # joint settings

Each point's resolved config has a hash (of its fields and its data's content); its run
directory is ``<sweep_dir>/<name>-<hash>``. A point is done when its directory passes
:func:`privfed.rundir.run_problems`: every file as its ``SHA256SUMS`` lists it, and the
config and summary of that hash. Runs are trained and written by
:func:`privfed.rundir.train_run`: nothing is written before training ends, then a temporary
directory takes the run directory's place in one step, so an interruption at any moment
leaves finished points intact and unfinished ones absent; re-running the sweep runs exactly
the points that are not done (and a directory that fails its checks again). A point that
raises is recorded as ``<sweep_dir>/failed/<name>-<hash>.json`` (config, error, traceback),
the sweep goes on, and a later run of the sweep retries it.
"""

from __future__ import annotations

import copy
import itertools
import math
import os
import tomllib
import traceback
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.audits import audit_run, read_leakage
from privfed import jsonsafe
from privfed.atomic import exit_with_parent, remove_stale_temporaries, write_text
from privfed.config import (
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    config_from_dict,
    load_config,
    resolve_data_paths,
)
from privfed.rundir import run_name, run_problems, train_run
from privfed.threads import auto_threads, set_threads

__all__ = ["SweepPoint", "load_grid", "run_point", "run_sweep"]


@dataclass(frozen=True)
class SweepPoint:
    """One configuration of a sweep.

    Attributes
    ----------
    config : ExperimentConfig
        The resolved config of the point.
    values : dict
        The grid's dotted field -> value of this point.
    """

    config: ExperimentConfig
    values: dict[str, Any]

    @property
    def key(self) -> str:
        """``<name>-<hash>``: the name of the point's run directory."""
        return run_name(self.config)


def load_grid(path: str | Path, overrides: Sequence[str] = ()) -> list[SweepPoint]:
    """Expand a grid file into its points, each config validated.

    Parameters
    ----------
    path : str or Path
        The grid file.
    overrides : sequence of str
        ``"section.key=value"`` strings (``privfed sweep --set``) applied to the ``[base]``
        config of every point, the grid's values then set on top; one that names a gridded
        field (or a field inside a gridded table) is refused.

    Notes
    -----
    Relative data paths are made absolute
    (:func:`~privfed.config.resolve_data_paths`): those of the grid file against its
    directory, those of ``overrides`` against the working directory.

    Raises
    ------
    ConfigError
        A missing or malformed file, a missing ``[grid]`` table, a grid entry that is not a
        non-empty list, an override of a gridded field, or any point whose config is
        invalid (named by its values).
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"grid file not found: {path}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    unknown = sorted(set(raw) - {"base", "grid"})
    if unknown:
        raise ConfigError(f"{path}: unknown top-level keys {unknown}; allowed: 'base', 'grid'")
    if not isinstance(raw.get("grid"), dict) or not raw["grid"]:
        raise ConfigError(f"{path}: needs a [grid] table of dotted fields and value lists")
    base = raw.get("base", {})
    if isinstance(base, str):
        base = load_config(path.parent / base).to_dict()
    grid = raw["grid"]
    for field_name, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: grid.{field_name!r} must be a non-empty list of values, "
                              f"got {values!r}")
    _check_not_gridded(overrides, grid)
    base = resolve_data_paths(base, path.parent)
    base = resolve_data_paths(apply_overrides(base, overrides), Path.cwd())
    names = list(grid)
    points = []
    for combo in itertools.product(*(grid[n] for n in names)):
        values = dict(zip(names, combo, strict=True))
        try:
            config = config_from_dict(resolve_data_paths(_with_values(base, values), path.parent))
        except ConfigError as err:
            raise ConfigError(f"{path}: grid point {values}: {err}") from None
        points.append(SweepPoint(config, values))
    return points


def run_point(config_toml: str, run_dir: str, audit: bool = False) -> str:
    """Train one point and write its run directory (unless done), and audit it if asked
    (unless audited); the worker entry point.

    Parameters
    ----------
    config_toml : str
        The point's resolved config as TOML (plain text crosses process boundaries).
    run_dir : str
        Where :func:`privfed.rundir.train_run` writes the run directory.
    audit : bool
        Also measure its leakage (``attacks``) into ``run_dir/audit``, sized by the
        config's ``[audit]`` section.

    Returns
    -------
    str
        ``run_dir``.
    """
    config = config_from_dict(tomllib.loads(config_toml))
    if run_problems(run_dir, config):
        train_run(config, run_dir)
    if audit:
        audit_run(Path(run_dir), config)
    return run_dir


def run_sweep(
    points: Sequence[SweepPoint],
    sweep_dir: str | Path,
    *,
    workers: int = 1,
    audit: bool = False,
    on_event: Callable[[str, SweepPoint, str], None] | None = None,
    threads: int | None = None,
) -> dict[str, list[SweepPoint]]:
    """Run every point that is not done yet.

    Parameters
    ----------
    points : sequence of SweepPoint
    sweep_dir : str or Path
        Parent of the points' run directories (``output_dir`` of the configs is ignored).
    workers : int, default 1
        Points run in parallel processes when > 1.
    audit : bool
        Also audit every point (``privfed audit``'s attacks; resumable too), sized by each
        point's ``[audit]`` section (e.g. ``[base.audit] quick = true`` in the grid).
    on_event : callable, optional
        Called with ``("skipped" | "invalid" | "done" | "failed", point, detail)``.
    threads : int, optional
        Torch threads of each worker process when ``workers`` > 1 (default: the points'
        :func:`privfed.threads.auto_threads` with the free cores divided among the workers).
        With one worker the points run in this process, whose threads are left as they are.

    Returns
    -------
    dict
        Points by outcome: ``"skipped"`` (already done), ``"invalid"`` (a run directory
        that failed its checks, e.g. a file changed after it was written: run again, so
        also in ``"done"`` or ``"failed"``), ``"done"``, ``"failed"``.

    Notes
    -----
    Stale temporaries of killed writers in ``sweep_dir`` are removed first; parallel
    workers exit when this process dies.
    """
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    sweep_dir = Path(sweep_dir)
    (sweep_dir / "failed").mkdir(parents=True, exist_ok=True)
    outcome: dict[str, list[SweepPoint]] = {"skipped": [], "invalid": [], "done": [],
                                            "failed": []}

    def record(kind: str, point: SweepPoint, detail: str) -> None:
        outcome[kind].append(point)
        if on_event is not None:
            on_event(kind, point, detail)

    remove_stale_temporaries(sweep_dir)
    remove_stale_temporaries(sweep_dir / "failed")
    todo = []
    for point in _unique(points):
        run_dir = sweep_dir / point.key
        problems = run_problems(run_dir, point.config)
        if not problems and not (audit and not _audited(run_dir, point)):
            record("skipped", point, "already done")
            continue
        if run_dir.exists() and problems:
            record("invalid", point, "; ".join(problems))
        todo.append(point)
    jobs = [(p, (p.config.to_toml(), str(sweep_dir / p.key), audit))
            for p in todo]
    if workers == 1:
        for point, job in jobs:
            _settle(point, sweep_dir, lambda job=job: run_point(*job), record)
    else:
        if threads is None:
            threads = auto_threads([point.config.model.name for point in todo], workers)
        with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker,
                                 initargs=(os.getpid(), threads)) as pool:
            futures = {pool.submit(run_point, *job): point for point, job in jobs}
            for future in as_completed(futures):
                _settle(futures[future], sweep_dir, future.result, record)
    return outcome


def _init_worker(parent_pid: int, threads: int) -> None:
    """A worker process's initializer: exit with the sweep's process, use ``threads``."""
    exit_with_parent(parent_pid)
    set_threads(threads)


def _settle(point: SweepPoint, sweep_dir: Path, result: Callable[[], str],
            record: Callable[[str, SweepPoint, str], None]) -> None:
    failure = sweep_dir / "failed" / f"{point.key}.json"
    try:
        run_dir = result()
    except Exception as err:  # noqa: BLE001 - a failed point must not stop the sweep
        write_text(failure, jsonsafe.dumps({
            "values": point.values, "config": point.config.to_dict(),
            "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc(),
        }, indent=2, default=str) + "\n")
        record("failed", point, f"{type(err).__name__}: {err}")
        return
    failure.unlink(missing_ok=True)
    record("done", point, run_dir)


def _audited(run_dir: Path, point: SweepPoint) -> bool:
    return read_leakage(run_dir, point.config) is not None


def _unique(points: Iterable[SweepPoint]) -> list[SweepPoint]:
    seen: dict[str, SweepPoint] = {}
    for point in points:
        seen.setdefault(point.key, point)
    return list(seen.values())


def _check_not_gridded(overrides: Sequence[str], grid: dict[str, Any]) -> None:
    """Refuse an override of a field the grid sets (its own key, or one inside it)."""
    for item in overrides:
        key = item.partition("=")[0].strip()
        for gridded in grid:
            if key == gridded or key.startswith(gridded + ".") or gridded.startswith(key + "."):
                raise ConfigError(f"{key} is a field of the grid (grid.{gridded!r}): set it in "
                                  "the grid file, not with --set, --seed or --data-dir")


def _with_values(base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``base`` with each dotted field of ``values`` set.

    ``privacy.epsilon = inf`` stands for the non-private run (mechanism "none"), so one grid
    can sweep epsilon over {0.5, 1, ..., inf}.
    """
    result = copy.deepcopy(base)
    if values.get("privacy.epsilon") == math.inf:
        values = {k: v for k, v in values.items() if k != "privacy.epsilon"}
        result["privacy"] = {"mechanism": "none"}
    for dotted, value in values.items():
        *parents, leaf = dotted.split(".")
        target = result
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"grid field {dotted!r}: {part!r} is not a section")
        if isinstance(value, dict):  # a table sets several fields of a section together
            target.setdefault(leaf, {}).update(value)
        else:
            target[leaf] = value
    return result
