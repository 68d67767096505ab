"""Figures of an audit: log-log ROC curves and a reconstruction grid (matplotlib, Agg)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from attacks.membership import MembershipResult  # noqa: E402
from attacks.metrics import roc_curve  # noqa: E402

__all__ = ["plot_roc", "plot_reconstructions"]


def plot_roc(results: Mapping[str, MembershipResult], path: str | Path, title: str = "") -> Path:
    """Write a log-log ROC plot of membership attacks (Carlini et al.'s presentation).

    Parameters
    ----------
    results : mapping of str to MembershipResult
        Curve label to attack result.
    path : str or Path
        PNG file to write.
    title : str
    """
    fig, ax = plt.subplots(figsize=(5, 5))
    floor = 1e-4
    for name, res in results.items():
        fpr, tpr = roc_curve(res.labels, res.scores)
        ax.plot(np.maximum(fpr, floor), np.maximum(tpr, floor),
                label=f"{name} (AUC {res.metrics['auc']:.3f})")
    ax.plot([floor, 1], [floor, 1], "k--", lw=0.8, label="chance")
    ax.set(xscale="log", yscale="log", xlim=(floor, 1), ylim=(floor, 1),
           xlabel="False positive rate", ylabel="True positive rate", title=title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_reconstructions(
    rows: Sequence[tuple[str, np.ndarray, np.ndarray]], path: str | Path
) -> Path:
    """Write a grid: for each row, originals above their reconstructions.

    Parameters
    ----------
    rows : sequence of (label, originals, reconstructions)
        Images ``(N, C, H, W)`` in [0, 1]; the first channel is shown in grey.
    path : str or Path
    """
    rows = [r for r in rows if len(r[1])]
    width = max((len(r[1]) for r in rows), default=1)
    fig, axes = plt.subplots(2 * max(len(rows), 1), width, squeeze=False,
                             figsize=(1.1 * width, 2.4 * max(len(rows), 1)))
    for ax in axes.flat:
        ax.axis("off")
    for i, (label, originals, recs) in enumerate(rows):
        for j in range(len(originals)):
            for k, (img, what) in enumerate(((originals[j], "original"), (recs[j], "recon."))):
                ax = axes[2 * i + k, j]
                ax.imshow(img[0], cmap="gray", vmin=0, vmax=1)
                if j == 0:
                    ax.set_title(f"{label}: {what}", fontsize=7, loc="left")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
