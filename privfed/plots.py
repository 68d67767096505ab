"""PNG plots of a run's history."""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.ticker import MaxNLocator  # noqa: E402

from privfed.atomic import write_bytes  # noqa: E402
from privfed.federated.history import History  # noqa: E402

__all__ = ["DIAGNOSTIC_PANELS", "has_diagnostics", "plot_accuracy", "plot_diagnostics",
           "save_figure"]

DIAGNOSTIC_PANELS = (
    ("fraction clipped", ("clipped_fraction_estimate", "clipped_fraction",
                          "clipped_example_fraction")),
    ("signal / noise", ("snr_estimate", "snr")),
    ("epsilon", ("epsilon", "epsilon_outsider", "epsilon_per_client min",
                 "epsilon_per_client max")),
)
"""The panels of :func:`plot_diagnostics`: a title and the per-round figures it draws, by
their ``RoundRecord.extra`` key (``epsilon_per_client`` as its min and max over clients)."""


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


def has_diagnostics(history: History) -> bool:
    """Whether ``history`` holds a figure :func:`plot_diagnostics` draws."""
    return any(_distinct_series(history, keys) for _, keys in DIAGNOSTIC_PANELS)


def plot_diagnostics(history: History, path: str | Path, title: str = "") -> Path:
    """Plot a run's DP diagnostics against the round number and save it as a PNG: one panel
    per :data:`DIAGNOSTIC_PANELS` entry that has a figure in ``history``, one line per
    figure (labelled by its key; a round without a finite value is left out of the line, a
    line equal to an earlier one of its panel, e.g. the outsider's epsilon where it is the
    headline, is not drawn again).

    Parameters
    ----------
    history : History
        The run's rounds as released (:func:`privfed.rundir.release_history`).
    path : str or Path
        PNG file to write.
    title : str
        The figure's title.

    Raises
    ------
    ValueError
        If the history holds no diagnostic figure.
    """
    panels = [(name, lines) for name, keys in DIAGNOSTIC_PANELS
              if (lines := _distinct_series(history, keys))]
    if not panels:
        raise ValueError("the history has no DP diagnostic to plot")
    fig, axes = plt.subplots(len(panels), 1, figsize=(6, 2.6 * len(panels)), sharex=True,
                             squeeze=False)
    for ax, (name, lines) in zip(axes[:, 0], panels, strict=True):
        for rounds, values, key in lines:
            ax.plot(rounds, values, marker=".", label=key)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    axes[-1, 0].set_xlabel("round")
    axes[-1, 0].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0, 0].set_title(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def _distinct_series(history: History, keys: tuple[str, ...]
                     ) -> list[tuple[list[int], list[float], str]]:
    """:func:`_series` of each key with a figure, but one that repeats an earlier key's
    (e.g. ``epsilon_outsider`` where it is the headline ``epsilon``)."""
    lines: list[tuple[list[int], list[float], str]] = []
    for key in keys:
        rounds, values, _ = line = _series(history, key)
        if rounds and all((rounds, values) != (r, v) for r, v, _ in lines):
            lines.append(line)
    return lines


def _series(history: History, key: str) -> tuple[list[int], list[float], str]:
    """The rounds with a finite number under ``key`` and those numbers; ``"<list key> min"``
    / ``"max"`` reduce a per-client list."""
    name, _, reduce = key.partition(" ")
    rounds, values = [], []
    for record in history.rounds:
        value = record.extra.get(name)
        if reduce and value:
            value = min(value) if reduce == "min" else max(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool) \
                and math.isfinite(value):
            rounds.append(record.round)
            values.append(float(value))
    return rounds, values, key


def save_figure(fig: plt.Figure, path: str | Path, *, dpi: int) -> Path:
    """Save ``fig`` as a PNG at ``path`` atomically (:func:`privfed.atomic.write_bytes`) and
    close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return write_bytes(path, buffer.getvalue())
