"""A run's in-progress directory: what can be followed while it trains.

While :func:`privfed.rundir.train_run` trains, ``<run_dir>.partial/`` beside the run
directory holds ``metrics.jsonl`` (one strict JSON line per round, flushed to disk as the
round ends, so ``tail -f`` follows it), with ``[tracking] tensorboard = true`` a
``tensorboard/`` event directory, the run's ``checkpoint.pt`` (:mod:`privfed.checkpoint`)
and ``lock``, which one process at a time holds. It is not a temporary: it survives a
kill, and is removed once the complete run directory is published (or when the run fails
before its first round). A run resumed from its checkpoint rewrites ``metrics.jsonl`` and
the events from the checkpoint's rounds, so that they hold each round once.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from privfed import jsonsafe
from privfed.checkpoint import RunCheckpoint
from privfed.config import ConfigError, ExperimentConfig
from privfed.federated import RoundRecord

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; two runs of one config are not refused
    fcntl = None  # type: ignore[assignment]

__all__ = ["PARTIAL_SUFFIX", "TENSORBOARD_DIR", "LiveRun", "RunInProgressError", "live_run",
           "partial_dir", "scalars"]

PARTIAL_SUFFIX = ".partial"
"""The suffix of a run directory's in-progress directory."""

TENSORBOARD_DIR = "tensorboard"
"""The event directory, in the in-progress directory and then in the run directory."""


class RunInProgressError(RuntimeError):
    """Another process is training the same run directory."""


def partial_dir(run_dir: str | os.PathLike[str]) -> Path:
    """``<run_dir>.partial``: the in-progress directory of ``run_dir``."""
    run_dir = Path(run_dir)
    return run_dir.with_name(run_dir.name + PARTIAL_SUFFIX)


def scalars(record: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Every number of a round's JSON record, by its path (``"federated/pooled/accuracy"``),
    the round number and booleans left out: what TensorBoard plots of ``metrics.jsonl``."""
    found: dict[str, float] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            found.update(scalars(value, f"{name}/"))
        elif isinstance(value, int | float) and not isinstance(value, bool) and name != "round":
            found[name] = float(value)
    return found


class LiveRun:
    """The open in-progress directory of one training run (see :func:`live_run`).

    Attributes
    ----------
    directory : Path
    metrics : Path
        ``metrics.jsonl``: one line per round recorded so far.
    rounds : int
        Rounds recorded so far.
    checkpoint : RunCheckpoint or None
        The run's checkpoint (its :attr:`~RunCheckpoint.state` loaded where the run
        resumes); None where the run is not checkpointed.
    """

    def __init__(self, directory: Path, release: Callable[[RoundRecord], RoundRecord],
                 writer_class: type | None, checkpoint: RunCheckpoint | None = None) -> None:
        self.directory = directory
        self.metrics = directory / "metrics.jsonl"
        self.rounds = 0
        self.checkpoint = checkpoint
        self._release = release
        self._out: IO[str] = open(self.metrics, "w", encoding="utf-8")  # noqa: SIM115
        shutil.rmtree(self.tensorboard_dir, ignore_errors=True)
        self._writer = (writer_class(log_dir=str(self.tensorboard_dir))
                        if writer_class is not None else None)
        restored = checkpoint.history if checkpoint is not None else None
        self.record(*(restored.rounds if restored is not None else ()))

    @property
    def tensorboard_dir(self) -> Path:
        """Where the TensorBoard events go (written only with the switch on)."""
        return self.directory / TENSORBOARD_DIR

    def record(self, *records: RoundRecord) -> None:
        """Append the released ``records`` to ``metrics.jsonl`` (flushed to disk once) and,
        with TensorBoard on, each one's :func:`scalars` at step ``record.round``."""
        if not records:
            return
        for record in records:
            released = asdict(self._release(record))
            self._out.write(jsonsafe.dumps(released) + "\n")
            if self._writer is not None:
                for name, value in scalars(released).items():
                    self._writer.add_scalar(name, value, record.round)
        self._out.flush()
        os.fsync(self._out.fileno())
        if self._writer is not None:
            self._writer.flush()
        self.rounds += len(records)

    def close(self) -> None:
        """Close ``metrics.jsonl`` and the TensorBoard writer (idempotent)."""
        self._out.close()
        if self._writer is not None:
            self._writer.close()
            self._writer = None


@contextlib.contextmanager
def live_run(run_dir: str | os.PathLike[str], config: ExperimentConfig,
             release: Callable[[RoundRecord], RoundRecord], *, checkpoints: bool = False,
             resume: bool = True) -> Iterator[LiveRun]:
    """Open ``run_dir``'s in-progress directory for a run of ``config``.

    Takes its lock (refusing a second process); with ``checkpoints`` and ``resume``, loads
    the checkpoint of ``config`` it holds (:attr:`LiveRun.checkpoint`) and records its
    rounds again; empties whatever else a previous run left. On exit it removes the
    directory where the run finished (the body returned) or recorded no round; a run
    that failed or was interrupted after some rounds keeps it (and its checkpoint).

    Parameters
    ----------
    run_dir : path
    config : ExperimentConfig
        Its ``tracking`` section: the TensorBoard switch, ``checkpoint_every``.
    release : callable
        What of a round's record may be written (:func:`privfed.rundir.release_history`'s
        rule, per record).
    checkpoints : bool, default False
        Whether the run is checkpointed (:class:`~privfed.checkpoint.RunCheckpoint`).
    resume : bool, default True
        Continue from a checkpoint of ``config``; False: remove it and start over.

    Raises
    ------
    RunInProgressError
        When another process holds the lock.
    ConfigError
        With ``tracking.tensorboard`` on and tensorboard not installed.
    """
    writer_class = _summary_writer_class() if config.tracking.tensorboard else None
    directory = partial_dir(run_dir)
    created = [p for p in directory.absolute().parents if not p.exists()]
    directory.mkdir(parents=True, exist_ok=True)
    with _locked(directory / "lock"):
        checkpoint = RunCheckpoint(directory, config, config.tracking.checkpoint_every)
        if checkpoints and resume and checkpoint.load() is None and checkpoint.ignored:
            warnings.warn(f"not resuming from {checkpoint.path}: {checkpoint.ignored}; the "
                          "run starts over", RuntimeWarning, stacklevel=3)
        if checkpoint.state is None:
            checkpoint.discard()
        live = LiveRun(directory, release, writer_class, checkpoint if checkpoints else None)
        finished = False
        try:
            yield live
            finished = True
        finally:
            live.close()
            if finished or live.rounds == 0:
                _remove(directory, created)


def _remove(directory: Path, created: list[Path]) -> None:
    """Remove ``directory`` and those of its parents it was ``created`` with, if empty."""
    shutil.rmtree(directory, ignore_errors=True)
    for parent in created:  # innermost first
        with contextlib.suppress(OSError):
            parent.rmdir()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive, non-blocking ``flock`` on ``path`` (writing this pid in it)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
                raise RunInProgressError(
                    f"another privfed process (pid {holder}) is training this run "
                    f"({path.parent})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def _summary_writer_class() -> type:
    """``torch.utils.tensorboard.SummaryWriter``, imported only when the switch is on."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("tracking.tensorboard = true needs tensorboard: "
                          "pip install 'privfed[tensorboard]'") from None
    return SummaryWriter
