"""How many intra-op threads torch uses: the CLI's choice, ``--threads`` and ``PRIVFED_THREADS``.

privfed's built-in models are small: a training step of the MLP or logistic regression is a
few small matrix products, and splitting them over threads costs more in synchronisation
than it gains, badly so when other jobs share the cores (see ``benchmarks/threads.py`` and the
README's "Threads" table). So the rule (:func:`choose_threads`) is:

* ``logistic``, ``mlp`` and a user's own model (an import path): one thread;
* ``cnn``: the cores this process may use, at most :data:`CNN_MAX_THREADS`.

A sweep's parallel workers divide the cores between them (:func:`share_cores`). The choice
never depends on the machine's momentary load: torch's reductions may add in another order
with another thread count, so a load-dependent choice would make the same config train to
different bits on the same machine.
``--threads N`` beats ``PRIVFED_THREADS=N``, which beats the rule; either may be ``auto``.

Only the CLI (and a sweep's worker processes, which privfed owns) changes torch's threads:
torch's thread count is global to a process, so a library call that set it would change the
speed of the caller's other torch code. A Python user who wants the CLI's choice calls
``privfed.threads.set_threads(privfed.threads.auto_threads([config.model.name]))``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Mapping

import torch

from privfed.config import ConfigError

__all__ = ["CNN_MAX_THREADS", "ENV_VAR", "add_threads_argument", "auto_threads",
           "available_cores", "choose_threads", "cli_threads", "requested_threads",
           "set_threads", "share_cores"]

ENV_VAR = "PRIVFED_THREADS"
"""Environment variable: torch threads of the CLI (a positive integer or ``auto``)."""

CNN_MAX_THREADS = 4
"""The most threads the rule gives the CNN. Not measured past two cores (the machine this was
tuned on has two, shared): a guess at where a batch of 28x28 images stops scaling."""

_MULTI_THREADED = frozenset({"cnn"})


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def share_cores(cores: int, workers: int) -> int:
    """The cores each of ``workers`` parallel processes gets of ``cores``: at least one."""
    return max(1, cores // max(1, workers))


def choose_threads(model_name: str, cores: int) -> int:
    """The rule: the torch threads for training ``model_name`` on ``cores`` free cores.

    Parameters
    ----------
    model_name : str
        ``model.name`` of the config: a registered model or an import path.
    cores : int
        The cores for this process (:func:`available_cores`, :func:`share_cores`).

    Returns
    -------
    int
        1, except for the CNN: ``min(cores, CNN_MAX_THREADS)``.
    """
    if model_name in _MULTI_THREADED:
        return max(1, min(cores, CNN_MAX_THREADS))
    return 1


def auto_threads(model_names: Iterable[str], workers: int = 1) -> int:
    """The rule's threads for the models a job trains (the most any of them gets) when it
    runs in ``workers`` parallel processes on this machine."""
    cores = share_cores(available_cores(), workers)
    return max((choose_threads(name, cores) for name in model_names), default=1)


def requested_threads(option: str | None, environ: Mapping[str, str]) -> int | None:
    """The thread count asked for: ``--threads`` (``option``), else ``PRIVFED_THREADS``;
    None when neither is set or the one that decides says ``auto``.

    Raises
    ------
    ConfigError
        The deciding value is not a positive integer or ``auto`` (the message names it).
    """
    if option is not None:
        return _parse(option, "--threads")
    value = environ.get(ENV_VAR, "").strip()
    return _parse(value, ENV_VAR) if value else None


def _parse(value: str, name: str) -> int | None:
    text = value.strip().lower()
    if text == "auto":
        return None
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise ConfigError(f"{name}: must be a positive integer or 'auto', got {value!r}")
    return int(text)


def set_threads(threads: int) -> None:
    """Set torch's intra-op threads of this process (interop threads are left alone: torch
    allows setting them only before any parallel work)."""
    torch.set_num_threads(threads)


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """``--threads N|auto`` (read back by :func:`cli_threads`)."""
    parser.add_argument("--threads", metavar="N", default=None,
                        help=f"torch threads per process: a positive integer or auto (default: "
                             f"${ENV_VAR}, else auto: 1, or for the cnn the free cores up to "
                             f"{CNN_MAX_THREADS})")


def cli_threads(args: argparse.Namespace, model_names: Iterable[str], workers: int = 1) -> int:
    """The threads of each of a command's ``workers`` processes: ``--threads``, else
    ``PRIVFED_THREADS``, else :func:`auto_threads`. Sets them in this process when
    ``workers`` is 1.

    Raises
    ------
    ConfigError
        An invalid ``--threads`` or ``PRIVFED_THREADS``.
    """
    threads = requested_threads(args.threads, os.environ)
    if threads is None:
        threads = auto_threads(model_names, workers)
    if workers == 1:
        set_threads(threads)
    return threads
