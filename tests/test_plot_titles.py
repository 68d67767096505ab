"""Every figure says what it shows: the configuration, the metric, the view."""

from __future__ import annotations

import math

import numpy as np

from attacks.membership import MembershipResult
from attacks.plots import ReconstructionRow, plot_reconstructions, plot_roc
from privfed.config import load_config
from privfed.rundir import train_run

SMALL = ["federation.rounds=2", "model.hidden=[8]", "data.num_clients=3"]


def _texts(fig) -> list[str]:
    """Every title, axis label and suptitle of ``fig``."""
    out = [fig._suptitle.get_text()] if fig._suptitle is not None else []
    for ax in fig.axes:
        out += [ax.get_title(), ax.get_title("left"), ax.get_xlabel(), ax.get_ylabel()]
    return [t for t in out if t]


def test_a_runs_accuracy_plot_names_its_configuration_and_metric(tmp_path, figures):
    config = load_config(overrides=SMALL)
    train_run(config, tmp_path / "run")
    (ax,) = figures["accuracy.png"].axes
    assert ax.get_title() == f"{config.name} ({config.short_hash()}): test accuracy per round"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("round", "test accuracy")


def test_the_roc_plot_carries_its_title_and_each_attacks_auc(tmp_path, figures):
    labels = np.array([1, 0, 1, 0, 1, 0])
    result = MembershipResult(labels, np.array([0.9, 0.8, 0.7, 0.1, 0.6, 0.2]))
    plot_roc({"lira_online": result}, tmp_path / "roc.png", title="cfg (abcd1234): ROC")
    (ax,) = figures["roc.png"].axes
    assert ax.get_title() == "cfg (abcd1234): ROC"
    assert "lira_online (AUC 0.778)" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_reconstructions_are_labelled_with_scenario_view_psnr_and_ssim(tmp_path, figures):
    images = np.random.default_rng(0).random((2, 1, 4, 4))
    rows = [ReconstructionRow("single", "server", images, images[::-1], [12.345, math.inf],
                              [0.456, 1.0]),
            ReconstructionRow("aggregate", "server", images[:1], images[:1], [8.0], [0.1]),
            ReconstructionRow("single", "collusion", images[:0], images[:0], [], [])]
    plot_reconstructions(rows, tmp_path / "reconstructions.png", title="cfg (abcd1234)")
    fig = figures["reconstructions.png"]
    assert fig._suptitle.get_text() == "cfg (abcd1234)"
    grid = np.array(fig.axes).reshape(4, 2)
    assert [ax.get_title() for ax in grid[0]] == ["original", "original"]
    assert [ax.get_title() for ax in grid[1]] == ["12.3 dB\nSSIM 0.46", "inf dB\nSSIM 1.00"]
    assert grid[3, 0].get_title() == "8.0 dB\nSSIM 0.10" and not grid[3, 1].get_title()
    assert [grid[r, 0].get_ylabel() for r in (0, 2)] == ["single\n(server view)",
                                                          "aggregate\n(server view)"]
    assert all("collusion" not in t for t in _texts(fig))  # the unread view has no row
