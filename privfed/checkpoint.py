"""Checkpoints of one training run, so that an interrupted run resumes where it stopped.

While :func:`privfed.rundir.train_run` trains in process, the run's in-progress directory
(:mod:`privfed.live`) holds ``checkpoint.pt``: the server's
:meth:`~privfed.federated.Server.state_dict` after the last checkpointed round (the global
model, the optimizer, sampler and schedule, every privacy ledger, the stages' server and
client state, pending updates, torch's generator, the history). It is written atomically
every ``tracking.checkpoint_every`` rounds and when the process is asked to stop (Ctrl-C,
SIGTERM) at the end of the round in progress; the next ``privfed run`` of the same config
continues from it, and ends with the model an uninterrupted run would have, bit for bit
where the run's randomness is seeded (``privacy.secure_mode`` draws its noise afresh from
OS entropy), with the same epsilon: the ledgers continue from their counts.

The file holds every party's state of the simulation (e.g. the clients' error-feedback
residuals, updates not yet aggregated), as the simulating process does: it is written
readable by its owner only, read with ``torch.load(weights_only=True)`` (no code runs from
it) and removed with the in-progress directory when the run directory is complete.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from privfed import __version__
from privfed.atomic import write_bytes
from privfed.config import ConfigError, ExperimentConfig
from privfed.federated import History, RoundRecord, Server
from privfed.model_file import model_bytes

__all__ = ["CHECKPOINT_FILE", "CHECKPOINT_FORMAT", "CheckpointError", "RunCheckpoint",
           "RunInterrupted", "StopRequest", "stop_on_signals"]

CHECKPOINT_FILE = "checkpoint.pt"
"""The checkpoint's name in the in-progress directory."""

CHECKPOINT_FORMAT = "privfed-checkpoint/1"
"""The ``format`` entry of a checkpoint this version writes and reads."""

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class CheckpointError(ConfigError):
    """A checkpoint of this config that the federation built from it cannot take."""


class RunInterrupted(KeyboardInterrupt):
    """The run stopped at a signal after saving a checkpoint; ``privfed run`` resumes it.

    A ``KeyboardInterrupt``, so that nothing that catches ``Exception`` (a sweep's failed
    point) takes a user's stop for a failure.

    Parameters
    ----------
    message : str
        The one line to print.
    checkpoint : str
        The checkpoint's path.
    round_id : int
        The last round it holds.
    signal_number : int
        The signal that asked to stop.
    """

    def __init__(self, message: str, checkpoint: str, round_id: int,
                 signal_number: int) -> None:
        super().__init__(message, checkpoint, round_id, signal_number)
        self.message = message
        self.checkpoint = checkpoint
        self.round_id = round_id
        self.signal_number = signal_number

    def __str__(self) -> str:
        return self.message

    @property
    def exit_status(self) -> int:
        """The shell's status of a process ended by the signal: ``128 + signal``."""
        return 128 + self.signal_number


@dataclass
class StopRequest:
    """Whether a stop was asked for (see :func:`stop_on_signals`).

    Attributes
    ----------
    signal_number : int or None
        The first SIGINT / SIGTERM received; None while none was.
    """

    signal_number: int | None = None


@contextlib.contextmanager
def stop_on_signals(notice: Callable[[str], None] | None = None) -> Iterator[StopRequest]:
    """Turn the first SIGINT or SIGTERM into a request to stop at the next round's end.

    The first signal is recorded in the yielded :class:`StopRequest` (and ``notice`` is
    called with one line saying so) and the previous handlers come back, so a second
    Ctrl-C interrupts at once (``KeyboardInterrupt``) and a second SIGTERM terminates.
    Outside the main thread, where Python cannot take signals, nothing is installed.
    """
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {number: signal.getsignal(number) for number in _STOP_SIGNALS}

    def restore() -> None:
        for number, handler in previous.items():
            signal.signal(number, handler)

    def handle(number: int, _frame: Any) -> None:
        request.signal_number = number
        restore()
        say = notice or (lambda line: print(line, file=sys.stderr, flush=True))
        say(f"{signal.Signals(number).name}: stopping at the end of this round to save a "
            "checkpoint (again to stop at once)")

    for number in _STOP_SIGNALS:
        signal.signal(number, handle)
    try:
        yield request
    finally:
        restore()


class RunCheckpoint:
    """The checkpoint of one run of ``config`` in its in-progress ``directory``.

    Parameters
    ----------
    directory : Path
        The in-progress directory (:func:`privfed.live.partial_dir`), whose lock the caller
        holds.
    config : ExperimentConfig
        The run's config: a checkpoint of another (:meth:`~ExperimentConfig.short_hash`)
        is never used.
    every : int
        Save after every this many rounds; 0: only when asked to stop.

    Attributes
    ----------
    path : Path
    state : dict or None
        The saved state :meth:`load` found for this config (None: start from round 0).
    ignored : str or None
        Why a checkpoint file present was not used (:meth:`load`), e.g. another version.
    """

    def __init__(self, directory: Path, config: ExperimentConfig, every: int) -> None:
        self.path = Path(directory) / CHECKPOINT_FILE
        self.config = config
        self.every = every
        self.state: dict[str, Any] | None = None
        self.ignored: str | None = None

    @property
    def round(self) -> int:
        """The last round :attr:`state` holds (0 without one)."""
        return 0 if self.state is None else int(self.state["round"])

    @property
    def history(self) -> History | None:
        """The history :attr:`state` holds, or None without one."""
        return None if self.state is None else History.from_state_dict(
            self.state["server"]["history"])

    def load(self) -> dict[str, Any] | None:
        """Read the checkpoint into :attr:`state` if it is one of this config, written by
        this version of privfed; otherwise (unreadable, another config or version, no
        file) :attr:`state` is None and :attr:`ignored` says why a file was not used."""
        self.state, self.ignored = None, None
        if not self.path.exists():
            return None
        try:
            saved = torch.load(self.path, weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable file is only ignored
            self.ignored = f"unreadable ({type(err).__name__}: {err})"
            return None
        problem = self._problem(saved)
        if problem:
            self.ignored = problem
            return None
        self.state = saved
        return saved

    def _problem(self, saved: Any) -> str | None:
        """Why ``saved`` is not a checkpoint of this config (None when it is)."""
        if not isinstance(saved, Mapping) or saved.get("format") != CHECKPOINT_FORMAT:
            return f"not a {CHECKPOINT_FORMAT} file"
        if saved.get("privfed") != __version__:
            return f"written by privfed {saved.get('privfed')}, this is {__version__}"
        if saved.get("config_hash") != self.config.short_hash():
            return (f"of config {saved.get('config_hash')}, not of "
                    f"{self.config.short_hash()}")
        rounds = saved.get("round")
        if not isinstance(rounds, int) or not 0 < rounds <= self.config.federation.rounds:
            return f"round {rounds!r} is not in 1..{self.config.federation.rounds}"
        return None

    def save(self, server: Server) -> None:
        """Write ``server``'s state between rounds (atomically, owner-only)."""
        record = {"format": CHECKPOINT_FORMAT, "privfed": __version__,
                  "config_hash": self.config.short_hash(), "round": server.round,
                  "server": server.state_dict()}
        write_bytes(self.path, model_bytes(record), private=True)

    def discard(self) -> None:
        """Remove the checkpoint (a run started over)."""
        self.state = None
        self.path.unlink(missing_ok=True)

    def train(self, server: Server, rounds: int,
              on_round: Callable[[RoundRecord], None] | None = None) -> History:
        """Train ``server`` to round ``rounds``, from :attr:`state` where there is one,
        saving a checkpoint every :attr:`every` rounds and, on SIGINT/SIGTERM, at the end
        of the round in progress (the last round is never interrupted: the run is
        written instead).

        Returns
        -------
        History
            Every round, the restored ones included.

        Raises
        ------
        RunInterrupted
            After saving the checkpoint a signal asked for.
        CheckpointError
            :attr:`state` does not fit ``server`` (e.g. a user's model module edited
            without changing the config's hash).
        """
        if self.state is not None:
            try:
                server.load_state_dict(self.state["server"])
            except (KeyError, TypeError, ValueError) as err:
                raise CheckpointError(
                    f"the checkpoint {self.path} does not fit this federation ({err}); "
                    "delete it, or run with --rerun to start over") from None
        if server.round >= rounds:
            return server.history
        with stop_on_signals() as stop:

            def after_round(record: RoundRecord) -> None:
                if on_round is not None:
                    on_round(record)
                if server.round >= rounds:
                    return
                if stop.signal_number is not None:
                    self.save(server)
                    raise RunInterrupted(
                        f"interrupted: checkpoint after round {server.round}/{rounds} in "
                        f"{self.path}; the same `privfed run` resumes it",
                        str(self.path), server.round, stop.signal_number)
                if self.every and server.round % self.every == 0:
                    self.save(server)

            return server.fit(rounds - server.round, on_round=after_round)
