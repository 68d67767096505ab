"""PNG plots of a run's history."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from privfed.federated.history import History  # noqa: E402

__all__ = ["plot_accuracy"]


def plot_accuracy(history: History, path: str | Path, title: str = "") -> Path:
    """Plot test accuracy against the round number and save it as a PNG.

    Raises
    ------
    ValueError
        If the history has no evaluated round.
    """
    evaluated = history.evaluated()
    if not evaluated:
        raise ValueError("the history has no evaluated round to plot")
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r.round for r in evaluated], [r.test_accuracy for r in evaluated], marker=".")
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
