"""Run the ``privfed`` command line and SIGKILL it at a chosen write: the kill-test harness.

``python tests/kill_helpers.py ARGS...`` runs ``privfed ARGS...``. Every step that makes a
write visible or durable (``os.replace``, ``os.fsync``, the atomic directory exchange) is
an event. With ``PRIVFED_KILL_AT=n`` the process kills itself with SIGKILL just before its
n-th event (1-based); with ``PRIVFED_EVENT_LOG=path`` it appends each event's name to
``path`` (to count them). A kill-test can so stop a writer between any two of its steps.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

_count = 0


def _event(name: str) -> None:
    global _count
    _count += 1
    log = os.environ.get("PRIVFED_EVENT_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as out:
            out.write(f"{name}\n")
    if _count == int(os.environ.get("PRIVFED_KILL_AT", "0")):
        os.kill(os.getpid(), signal.SIGKILL)


def _wrapped(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        _event(name)
        return function(*args, **kwargs)

    return call


def main(argv: list[str]) -> int:
    """Instrument the writes, then run ``privfed argv``."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import privfed.atomic as atomic

    os.replace = _wrapped("replace", os.replace)
    os.fsync = _wrapped("fsync", os.fsync)
    atomic._swap = _wrapped("exchange", atomic._swap)
    from privfed.cli import main as privfed_main

    return privfed_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
