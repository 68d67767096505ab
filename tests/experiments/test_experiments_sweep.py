"""Sweeps: resume without repeating or losing points, detect corruption, tables and report."""

import csv
import json

import pytest

import privfed.rundir as rundir_module
from experiments.cli import summarize_sweep
from experiments.sweep import load_grid, run_sweep
from privfed.cli import main
from privfed.config import ConfigError

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
"""


@pytest.fixture
def grid(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(GRID)
    return path


def test_an_interrupted_sweep_resumes_with_only_the_missing_point(grid, tmp_path):
    points = load_grid(grid)
    sweep_dir = tmp_path / "sweep"

    def stop_after_first(kind, point, detail):
        if kind == "done":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(points, sweep_dir, on_event=stop_after_first)
    assert sorted(p.name for p in sweep_dir.iterdir() if p.name != "failed") == [points[0].key]

    events = []
    outcome = run_sweep(points, sweep_dir, on_event=lambda k, p, d: events.append((k, p.key)))
    assert events == [("skipped", points[0].key), ("done", points[1].key)]
    assert [p.key for p in outcome["done"]] == [points[1].key]


def test_an_interruption_inside_a_run_leaves_no_partial_directory(grid, tmp_path, monkeypatch):
    points = load_grid(grid)
    sweep_dir = tmp_path / "sweep"
    run_sweep(points[:1], sweep_dir)

    def interrupted(config, observers=(), **options):
        raise KeyboardInterrupt

    monkeypatch.setattr(rundir_module, "build_simulation", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(points, sweep_dir)
    assert sorted(p.name for p in sweep_dir.iterdir()) == ["failed", points[0].key]


def test_every_run_directory_of_a_sweep_is_complete(grid, tmp_path, check_run_dir):
    points = load_grid(grid)
    run_sweep(points, tmp_path / "sweep")
    for point in points:
        check_run_dir(tmp_path / "sweep" / point.key, point.config)


def test_a_corrupted_run_directory_is_run_again(grid, tmp_path):
    points = load_grid(grid)
    sweep_dir = tmp_path / "sweep"
    run_sweep(points, sweep_dir)
    (sweep_dir / points[1].key / "summary.json").write_text("{truncated")
    outcome = run_sweep(points, sweep_dir)
    assert [p.key for p in outcome["skipped"]] == [points[0].key]
    assert [p.key for p in outcome["done"]] == [points[1].key]
    json.loads((sweep_dir / points[1].key / "summary.json").read_text())


def test_a_failing_point_is_recorded_and_the_sweep_goes_on(grid, tmp_path, monkeypatch):
    points = load_grid(grid)
    real = rundir_module.build_simulation

    def fail_seed_0(config, observers=(), **options):
        if config.seed == 0:
            raise RuntimeError("boom")
        return real(config, observers, **options)

    monkeypatch.setattr(rundir_module, "build_simulation", fail_seed_0)
    outcome = run_sweep(points, tmp_path / "sweep")
    assert [p.config.seed for p in outcome["failed"]] == [0]
    assert [p.config.seed for p in outcome["done"]] == [1]
    record = json.loads((tmp_path / "sweep" / "failed" / f"{points[0].key}.json").read_text())
    assert record["error"] == "RuntimeError: boom" and "Traceback" in record["traceback"]


def test_results_tables_and_report(grid, tmp_path):
    points = load_grid(grid)
    sweep_dir = tmp_path / "sweep"
    run_sweep(points, sweep_dir)
    report = summarize_sweep(points, sweep_dir)
    with open(sweep_dir / "results.csv", newline="") as src:
        rows = list(csv.DictReader(src))
    assert [r["seed"] for r in rows] == ["0", "1"]
    figures = ["final_accuracy", "seconds_per_round", "bytes_up_per_client_round", "epsilon"]
    assert all(r[f] not in ("", None) for r in rows for f in figures)
    assert rows[0]["epsilon"] == "inf"
    with open(sweep_dir / "results_by_config.csv", newline="") as src:
        (by_config,) = list(csv.DictReader(src))
    accuracies = [float(r["final_accuracy"]) for r in rows]
    assert float(by_config["final_accuracy_mean"]) == pytest.approx(sum(accuracies) / 2)
    # 95% t-interval of two runs: t(0.975, 1) * |a - b| / 2.
    assert float(by_config["final_accuracy_ci95"]) == pytest.approx(
        12.7062 * abs(accuracies[0] - accuracies[1]) / 2, rel=1e-4)
    text = report.read_text()
    assert "| final_accuracy | final_loss |" in text and " ± " in text
    for png in ("cost_per_aggregator.png", "label_histograms.png"):
        data = (sweep_dir / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
        assert f"({png})" in text


def test_sweep_command_end_to_end_and_bad_grids(grid, tmp_path, capsys):
    assert main(["sweep", str(grid), "--output-dir", str(tmp_path)]) == 0
    assert (tmp_path / "tiny" / "report.md").is_file()
    assert main(["report", str(tmp_path / "tiny")]) == 0
    bad = tmp_path / "bad.toml"
    bad.write_text('[grid]\n"data.num_clients" = [0]\n')
    with pytest.raises(ConfigError, match=r"grid point \{'data.num_clients': 0\}.*num_clients"):
        load_grid(bad)
    bad.write_text('[grid]\nseed = 3\n')
    assert main(["sweep", str(bad), "--output-dir", str(tmp_path)]) == 2
    assert "must be a non-empty list" in capsys.readouterr().err


def test_sweep_overrides_apply_to_every_point_and_report_finds_them(grid, tmp_path, capsys):
    assert main(["sweep", str(grid), "--output-dir", str(tmp_path), "--set",
                 "federation.rounds=1", "--data-dir", str(tmp_path / "data")]) == 0
    points = load_grid(grid, ["federation.rounds=1", f"data.data_dir='{tmp_path / 'data'}'"])
    assert [p.config.federation.rounds for p in points] == [1, 1]
    assert [p.config.seed for p in points] == [0, 1]  # the grid's values stay
    assert {p.key for p in points} == {d.name for d in (tmp_path / "tiny").glob("tiny-*")}
    (tmp_path / "tiny" / "results.csv").unlink()
    assert main(["report", str(tmp_path / "tiny")]) == 0
    with open(tmp_path / "tiny" / "results.csv") as rows:
        assert [row["status"] for row in csv.DictReader(rows)] == ["done", "done"]
    capsys.readouterr()
    for args in (["--seed", "3"], ["--set", "seed=3"]):
        assert main(["sweep", str(grid), "--output-dir", str(tmp_path), *args]) == 2
        assert "seed is a field of the grid (grid.'seed')" in capsys.readouterr().err
    path = tmp_path / "parts.toml"
    path.write_text('[grid]\ndata = [{partition = "iid"}]\n')
    with pytest.raises(ConfigError, match=r"data.alpha is a field of the grid \(grid.'data'\)"):
        load_grid(path, ["data.alpha=0.3"])


def test_infinite_epsilon_in_a_grid_is_the_non_private_run(tmp_path):
    path = tmp_path / "eps.toml"
    path.write_text('[base.privacy]\nmechanism = "local"\n[grid]\n"privacy.epsilon" = [2.0, inf]\n')
    private, public = load_grid(path)
    assert (private.config.privacy.mechanism, private.config.privacy.epsilon) == ("local", 2.0)
    assert (public.config.privacy.mechanism, public.config.privacy.epsilon) == ("none", None)


def test_the_report_links_each_private_runs_diagnostics(tmp_path):
    path = tmp_path / "dp.toml"
    path.write_text(GRID.replace("seed = [0, 1]", '"privacy.diagnostics" = ["private", "exact"]')
                    + '[base.privacy]\nmechanism = "central"\nnoise_multiplier = 1.0\n')
    points = load_grid(path)
    sweep_dir = tmp_path / "sweep"
    run_sweep(points, sweep_dir)
    text = summarize_sweep(points, sweep_dir).read_text()
    with open(sweep_dir / "results.csv", newline="") as src:
        rows = list(csv.DictReader(src))
    assert [r["diagnostics"] for r in rows] == ["private", "exact"]
    for row in rows:
        assert (sweep_dir / row["run"] / "diagnostics.png").is_file()
        assert f"({row['run']}/diagnostics.png)" in text


def test_a_table_value_sets_several_fields_of_a_section_together(tmp_path):
    path = tmp_path / "parts.toml"
    path.write_text('[base.data]\nnum_clients = 4\n[grid]\n'
                    'data = [{partition = "iid"}, {partition = "dirichlet", alpha = 0.1}]\n')
    iid, skewed = (p.config.data for p in load_grid(path))
    assert (iid.partition, iid.num_clients) == ("iid", 4)
    assert (skewed.partition, skewed.alpha, skewed.num_clients) == ("dirichlet", 0.1, 4)


@pytest.mark.slow
def test_an_audited_sweep_reports_leakage_against_epsilon(tmp_path):
    path = tmp_path / "audited.toml"
    path.write_text(GRID.replace("seed = [0, 1]", '"privacy.epsilon" = [2.0, inf]')
                    .replace('name = "tiny"', 'name = "tiny"\n[base.privacy]\nmechanism = "local"'
                             '\n[base.audit]\nquick = true'))
    points = load_grid(path)
    sweep_dir = tmp_path / "sweep"
    run_sweep(points, sweep_dir, audit=True)
    report = summarize_sweep(points, sweep_dir).read_text()
    with open(sweep_dir / "results.csv", newline="") as src:
        rows = list(csv.DictReader(src))
    for figure in ("mia_auc", "mia_tpr_at_1pct_fpr", "epsilon_lower"):
        assert all(r[figure] != "" for r in rows)
    private = next(r for r in rows if r["epsilon"] != "inf")
    assert float(private["epsilon_lower"]) <= float(private["epsilon"])  # the audit is sound
    for png in ("accuracy_vs_epsilon.png", "mia_auc_vs_epsilon.png", "empirical_epsilon.png"):
        assert (sweep_dir / png).read_bytes()[:4] == b"\x89PNG" and f"({png})" in report
    assert report.count("/audit/reconstructions.png)") == 2
    events = []
    run_sweep(points, sweep_dir, audit=True, on_event=lambda k, p, d: events.append(k))
    assert events == ["skipped", "skipped"]


def test_every_report_plot_has_labelled_axes(grid, tmp_path, monkeypatch):
    import experiments.report as report_module

    labels = {}
    save = report_module._save

    def recording_save(fig, path):
        labels[path.name] = [(ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes]
        return save(fig, path)

    monkeypatch.setattr(report_module, "_save", recording_save)
    points = load_grid(grid)
    run_sweep(points, tmp_path / "sweep")
    summarize_sweep(points, tmp_path / "sweep")
    assert set(labels) == {"cost_per_aggregator.png", "label_histograms.png"}
    assert all(x and y for axes in labels.values() for x, y in axes)


def test_empirical_epsilon_plot_states_the_audits_confidence(tmp_path, monkeypatch):
    import experiments.report as report_module

    labels = []

    def recording_save(fig, path):
        labels.append(fig.axes[0].get_ylabel())
        report_module.plt.close(fig)
        return path

    monkeypatch.setattr(report_module, "_save", recording_save)
    table = [{"epsilon_mean": 2.0, "epsilon_lower_mean": 0.5}]
    report_module.plot_empirical_epsilon(table, tmp_path / "a.png", confidence=0.9)
    report_module.plot_empirical_epsilon(table, tmp_path / "b.png")
    assert labels == ["empirical epsilon lower bound (90%)", "empirical epsilon lower bound"]
