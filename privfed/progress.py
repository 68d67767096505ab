"""One progress display for every long command: rounds, configurations, sweep points, audit
units, with the time elapsed and an estimate of the time left.

On a terminal it is a live rich bar; otherwise (a log file, a pipe) one plain line per step,
e.g. ``round 3/30  acc 0.812  elapsed 4.1s  eta 37s``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["Steps", "format_seconds", "steps"]


def format_seconds(seconds: float) -> str:
    """A short duration: ``"4.1s"``, ``"37s"``, ``"2m05s"``, ``"1h02m"``."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


class Steps:
    """A display of ``total`` steps (see :func:`steps`): call :meth:`update` as each
    starts or ends."""

    def __init__(self, console: Console, total: int, progress: Progress | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.console = console
        self.total = total
        self.done = 0
        self._progress = progress
        self._task = progress.add_task("starting", total=total) if progress else None
        self._clock = clock
        self._started = clock()
        self._resumed = 0

    def eta(self, elapsed: float) -> float | None:
        """Seconds left after ``elapsed`` seconds at the mean pace of the steps done so far
        in this process (None before the first)."""
        timed = self.done - self._resumed
        if timed <= 0:
            return None
        return elapsed / timed * max(0, self.total - self.done)

    def resume(self, done: int, message: str) -> None:
        """Count ``done`` steps finished by an earlier process (a run resumed from its
        checkpoint) without timing them, and print ``message`` as a line."""
        self.done = self._resumed = done
        self._started = self._clock()
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=done, description=escape(message))
        self.console.print(message, highlight=False, markup=False, soft_wrap=True)

    def update(self, message: str, advance: bool = True, keep: bool = False) -> None:
        """Show ``message``; ``advance``: a step has ended (counted in the ETA); ``keep``:
        on a terminal, also print it as a line above the bar."""
        self.done += int(advance)
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, description=escape(message), advance=int(advance))
            if keep:
                self.console.print(message, highlight=False, markup=False)
            return
        elapsed = self._clock() - self._started
        eta = self.eta(elapsed)
        self.console.print(f"{message}  elapsed {format_seconds(elapsed)}  eta "
                           f"{'?' if eta is None else format_seconds(eta)}",
                           highlight=False, markup=False, soft_wrap=True)


@contextlib.contextmanager
def steps(console: Console, total: int,
          clock: Callable[[], float] = time.monotonic) -> Iterator[Steps]:
    """A progress display of ``total`` steps on ``console``: a live bar with the elapsed and
    remaining time on a terminal, else one plain line per :meth:`Steps.update` (its times
    read from ``clock``)."""
    if not console.is_terminal:
        yield Steps(console, total, None, clock)
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                  console=console) as progress:
        yield Steps(console, total, progress)
