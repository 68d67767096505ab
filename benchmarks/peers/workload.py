"""The workload file ``peers.py`` writes, as both sides read it (imports neither privfed nor
pfl, so either side's interpreter can load it)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Workload:
    """One workload's arrays.

    Attributes
    ----------
    arrays : numpy.lib.npyio.NpzFile
        Everything in the file (initial weights ``w0..w3``, the test set, ...).
    x, y : torch.Tensor
        The training examples and labels shared by all clients.
    shards : list of numpy.ndarray
        Client k's row indices into ``x``.
    schedule : numpy.ndarray
        ``(rounds, cohort)``: the clients of each round.
    """

    arrays: np.lib.npyio.NpzFile
    x: torch.Tensor
    y: torch.Tensor
    shards: list[np.ndarray]
    schedule: np.ndarray


def read_workload(path: str) -> Workload:
    """Read the ``.npz`` file at ``path``."""
    arrays = np.load(path)
    return Workload(arrays, torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"]),
                    np.split(arrays["shard_index"], arrays["shard_offsets"][1:-1]),
                    arrays["schedule"])
