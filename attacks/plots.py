"""Figures of an audit: log-log ROC curves and a reconstruction grid (matplotlib, Agg)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from attacks.membership import MembershipResult  # noqa: E402
from attacks.metrics import roc_curve  # noqa: E402
from privfed.plots import save_figure  # noqa: E402

__all__ = ["ReconstructionRow", "plot_reconstructions", "plot_roc"]


class ReconstructionRow(NamedTuple):
    """One inversion scenario of the reconstruction grid.

    Attributes
    ----------
    scenario : str
        E.g. ``"single"``, ``"multi_step"``, ``"aggregate"``.
    view : str
        The party whose view was inverted (``"server"``, ``"collusion"``).
    originals, reconstructions : numpy.ndarray
        Images ``(N, C, H, W)`` in [0, 1]; the first channel is shown in grey.
    psnr, ssim : sequence of float
        PSNR (dB) and SSIM of each reconstruction against its original.
    """

    scenario: str
    view: str
    originals: np.ndarray
    reconstructions: np.ndarray
    psnr: Sequence[float]
    ssim: Sequence[float]


def plot_roc(results: Mapping[str, MembershipResult], path: str | Path, title: str = "") -> Path:
    """Write a log-log ROC plot of membership attacks (Carlini et al.'s presentation).

    Parameters
    ----------
    results : mapping of str to MembershipResult
        Curve label to attack result.
    path : str or Path
        PNG file to write.
    title : str
        The figure's title: the configuration, and the view the attacks had.
    """
    fig, ax = plt.subplots(figsize=(5, 5))
    floor = 1e-4
    for name, res in results.items():
        fpr, tpr = roc_curve(res.labels, res.scores)
        ax.plot(np.maximum(fpr, floor), np.maximum(tpr, floor),
                label=f"{name} (AUC {res.metrics['auc']:.3f})")
    ax.plot([floor, 1], [floor, 1], "k--", lw=0.8, label="chance")
    ax.set(xscale="log", yscale="log", xlim=(floor, 1), ylim=(floor, 1),
           xlabel="False positive rate", ylabel="True positive rate")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def plot_reconstructions(rows: Sequence[ReconstructionRow], path: str | Path,
                         title: str = "") -> Path:
    """Write a grid: for each scenario, its originals above their reconstructions.

    The first image of each pair of lines is labelled with the scenario and the view it was
    attacked from, every original "original" and every reconstruction its PSNR in dB and
    its SSIM.

    Parameters
    ----------
    rows : sequence of ReconstructionRow
        Scenarios without images (the view could not read an update) are left out.
    path : str or Path
        PNG file to write.
    title : str
        The figure's title (the configuration).
    """
    rows = [r for r in rows if len(r.originals)]
    width = max((len(r.originals) for r in rows), default=1)
    fig, axes = plt.subplots(2 * max(len(rows), 1), width, squeeze=False,
                             figsize=(max(1.2 * width, 4.0), 0.4 + 2.6 * max(len(rows), 1)))
    for ax in axes.flat:
        ax.axis("off")
    for i, row in enumerate(rows):
        for j in range(len(row.originals)):
            _show(axes[2 * i, j], row.originals[j], "original")
            _show(axes[2 * i + 1, j], row.reconstructions[j],
                  _quality_label(row.psnr[j], row.ssim[j]))
        axes[2 * i, 0].set_ylabel(f"{row.scenario}\n({row.view} view)", fontsize=7)
        axes[2 * i, 0].axis("on")
        axes[2 * i, 0].set(xticks=[], yticks=[])
    fig.suptitle(title or "reconstructions", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def _show(ax: plt.Axes, image: np.ndarray, label: str) -> None:
    """Draw the first channel of ``image`` in grey with ``label`` above it."""
    ax.imshow(image[0], cmap="gray", vmin=0, vmax=1)
    ax.set_title(label, fontsize=6)


def _quality_label(psnr: float, ssim: float) -> str:
    """``"23.4 dB\nSSIM 0.91"``; ``"inf dB"`` for a perfect reconstruction's PSNR."""
    return ("inf dB" if math.isinf(psnr) else f"{psnr:.1f} dB") + f"\nSSIM {ssim:.2f}"
