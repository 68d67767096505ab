"""PNG plots of a run's history."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from privfed.atomic import write_bytes  # noqa: E402
from privfed.federated.history import History  # noqa: E402

__all__ = ["plot_accuracy", "save_figure"]


def plot_accuracy(history: History, path: str | Path, title: str = "") -> Path:
    """Plot test accuracy against the round number and save it as a PNG.

    Parameters
    ----------
    history : History
        The run's rounds; only the evaluated ones are plotted.
    path : str or Path
        PNG file to write.
    title : str
        The figure's title: the configuration, and what is shown.

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
    return save_figure(fig, path, dpi=100)


def save_figure(fig: plt.Figure, path: str | Path, *, dpi: int) -> Path:
    """Save ``fig`` as a PNG at ``path`` atomically (:func:`privfed.atomic.write_bytes`) and
    close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return write_bytes(path, buffer.getvalue())
