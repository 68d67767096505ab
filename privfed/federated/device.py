"""Where a federation's models run: ``federation.device`` resolved on this machine."""

from __future__ import annotations

import torch

from privfed.config.federation import check_device
from privfed.config.validation import ConfigError

__all__ = ["available_devices", "resolve_device"]


def available_devices() -> list[str]:
    """The values of ``federation.device`` that this machine can run, e.g.
    ``["auto", "cpu", "cuda", "cuda:0"]``."""
    names = ["auto", "cpu"]
    if torch.cuda.is_available():
        names += ["cuda", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    if torch.backends.mps.is_available():
        names.append("mps")
    return names


def resolve_device(name: str) -> torch.device:
    """The device that ``federation.device = name`` means on this machine.

    Parameters
    ----------
    name : str
        "auto" (CUDA if available, else MPS if available, else the CPU), "cpu", "cuda",
        "cuda:N" or "mps".

    Returns
    -------
    torch.device

    Raises
    ------
    ConfigError
        Naming ``federation.device``: ``name`` is not one of those forms, or this machine
        lacks the device (no CUDA, CUDA index N out of range, no MPS); the message lists
        the values allowed here.
    """
    check_device("federation.device", name)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    if name != "cpu" and name not in available_devices():
        raise ConfigError(
            f"federation.device = {name!r} but {_missing(name)} is not available on this "
            f"machine; allowed here: {', '.join(available_devices())}"
        )
    return torch.device(name)


def _missing(name: str) -> str:
    """What this machine lacks to run on ``name``."""
    if name == "mps":
        return "MPS (Apple's Metal backend)"
    if not torch.cuda.is_available():
        return "CUDA"
    return f"CUDA device {name} (devices: {torch.cuda.device_count()})"
