"""A sweep report plots each headline metric against each swept field, titled by the sweep."""

from __future__ import annotations

import math

import pytest

import experiments.report as report_module
from experiments.cli import summarize_sweep
from experiments.sweep import load_grid, run_sweep

GRID = """
[base]
name = "tiny"
[base.model]
hidden = [8]
[base.federation]
rounds = 2
[base.data]
num_clients = 3

[grid]
seed = [0, 1]
"federation.lr" = [0.001, 0.5]
"model.hidden" = [[8], [4]]
"""


@pytest.fixture
def figures(monkeypatch):
    """The figures the report saves, by file name."""
    saved = {}
    save = report_module._save

    def keep(fig, path):
        saved[path.name] = fig
        return save(fig, path)

    monkeypatch.setattr(report_module, "_save", keep)
    return saved


def _row(epsilon: float, kind: str, accuracy: float, half: float) -> dict:
    return {"privacy.epsilon": epsilon, "secure.kind": kind, "runs": 2,
            "final_accuracy_mean": accuracy, "final_accuracy_ci95": half,
            "epsilon_mean": epsilon, "epsilon_ci95": 0.0,
            "mia_auc_mean": None, "mia_auc_ci95": None}


def test_a_metric_against_a_numeric_field_spanning_decades_is_on_a_log_axis(tmp_path,
                                                                            figures):
    table = [_row(e, k, 0.5 + e / 1000, 0.01) for k in ("plain", "masking")
             for e in (0.5, 8.0, 100.0)]
    swept = ["privacy.epsilon", "secure.kind"]
    report_module.plot_metrics_vs_field(table, "privacy.epsilon", swept, tmp_path / "e.png",
                                        name="grid")
    fig = figures["e.png"]
    assert fig._suptitle.get_text() == ("grid: headline metrics against privacy.epsilon "
                                        "(mean, 95% interval over seeds)")
    accuracy, epsilon = fig.axes  # no panel for the membership AUC, which has no value
    assert [accuracy.get_title(), epsilon.get_title()] == ["test accuracy", "epsilon"]
    assert (accuracy.get_xlabel(), accuracy.get_ylabel()) == ("privacy.epsilon",
                                                              "test accuracy")
    assert accuracy.get_xscale() == "log"
    assert [t.get_text() for t in accuracy.get_xticklabels()] == ["0.5", "8", "100"]
    assert [t.get_text() for t in accuracy.get_legend().get_texts()] == [
        "secure.kind=plain", "secure.kind=masking"]
    line = accuracy.get_lines()[0]
    assert list(line.get_xdata()) == [0.5, 8.0, 100.0]
    assert list(line.get_ydata()) == pytest.approx([0.5005, 0.508, 0.6])

    report_module.plot_metrics_vs_field(table, "secure.kind", swept, tmp_path / "k.png")
    accuracy = figures["k.png"].axes[0]
    assert accuracy.get_xscale() == "linear"  # categories at 0, 1
    assert [t.get_text() for t in accuracy.get_xticklabels()] == ["plain", "masking"]
    assert len(accuracy.containers) == 3  # one error-bar line per epsilon


def test_infinite_values_make_a_categorical_axis_and_are_not_plotted(tmp_path, figures):
    table = [_row(e, "plain", 0.7, 0.0) for e in (1.0, math.inf)]
    report_module.plot_metrics_vs_field(table, "privacy.epsilon", ["privacy.epsilon"],
                                        tmp_path / "e.png")
    accuracy, epsilon = figures["e.png"].axes
    assert [t.get_text() for t in accuracy.get_xticklabels()] == ["1", "inf"]
    assert list(epsilon.get_lines()[0].get_xdata()) == [0.0]  # inf epsilon: no point


def test_the_report_links_a_plot_per_swept_field_and_titles_every_plot(tmp_path, figures):
    path = tmp_path / "lr_width.toml"
    path.write_text(GRID)
    points = load_grid(path)
    sweep_dir = tmp_path / "lr_width"
    run_sweep(points, sweep_dir)
    report = summarize_sweep(points, sweep_dir).read_text()
    for field in ("federation.lr", "model.hidden"):
        png = f"metrics_vs_{field}.png"
        assert f"{field}: ![metrics_vs_{field}]({png})" in report
        assert (sweep_dir / png).read_bytes()[:4] == b"\x89PNG"
    assert "metrics_vs_seed.png" not in report
    lr = figures["metrics_vs_federation.lr.png"]
    assert lr.axes[0].get_xscale() == "log"  # 0.001 to 0.5
    assert {ax.get_title() for ax in lr.axes} >= {"test accuracy", "seconds per round",
                                                  "bytes up per client per round"}
    assert [t.get_text() for t in figures["metrics_vs_model.hidden.png"].axes[0]
            .get_xticklabels()] == ["[8]", "[4]"]
    for name, fig in figures.items():
        titles = [fig._suptitle.get_text()] if fig._suptitle else []
        titles += [ax.get_title() for ax in fig.axes]
        assert any(t.startswith("lr_width: ") for t in titles), name
