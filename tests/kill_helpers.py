"""Run the ``privfed`` command line in a child process and SIGKILL it at a chosen write: the
kill-test harness.

:func:`run_privfed` forks this (test) process, so the child starts with privfed already
imported, and runs ``privfed ARGS...`` there. Every step that makes a write visible or
durable (``os.replace``, ``os.fsync``, the atomic directory exchange) is an event. With
``kill_at=n`` the child kills itself with SIGKILL just before its n-th event (1-based); with
``log`` it appends each event's name to that file (to count them). A kill-test can so stop
a writer between any two of its steps, or at a random moment (:func:`start_privfed`).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

_FORK = multiprocessing.get_context("fork")


def start_privfed(args: list[str], cwd: Path, *, kill_at: int = 0,
                  log: Path | None = None) -> multiprocessing.process.BaseProcess:
    """Start ``privfed args`` in a forked child working in ``cwd``; return the child."""
    child = _FORK.Process(target=_child, args=(args, cwd, kill_at, log), daemon=False)
    child.start()
    return child


def run_privfed(args: list[str], cwd: Path, *, kill_at: int = 0, log: Path | None = None,
                timeout: float = 300) -> int:
    """Run ``privfed args`` in a forked child to its end; its exit code (``-SIGKILL``
    when it was killed)."""
    child = start_privfed(args, cwd, kill_at=kill_at, log=log)
    child.join(timeout)
    if child.exitcode is None:
        child.kill()
        raise TimeoutError(f"privfed {' '.join(args)} ran past {timeout} s")
    return child.exitcode


def _child(args: list[str], cwd: Path, kill_at: int, log: Path | None) -> None:
    import privfed.atomic as atomic
    from privfed.cli import main

    os.chdir(cwd)
    events = [0]

    def event(name: str) -> None:
        events[0] += 1
        if log is not None:
            with open(log, "a", encoding="utf-8") as out:
                out.write(f"{name}\n")
        if events[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def wrapped(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def call(*call_args: Any, **kwargs: Any) -> Any:
            event(name)
            return function(*call_args, **kwargs)

        return call

    os.replace = wrapped("replace", os.replace)
    os.fsync = wrapped("fsync", os.fsync)
    atomic._swap = wrapped("exchange", atomic._swap)
    os._exit(main(args))
