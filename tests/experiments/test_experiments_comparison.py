"""The main job: every privacy configuration trained, audited and tabulated, resumably."""

import csv
import math

import pytest

import experiments.audits as audits
import experiments.comparison as comparison
from experiments.audits import read_leakage
from experiments.comparison import (
    CONFIGURATIONS,
    Comparison,
    comparison_configs,
    run_comparison,
    write_comparison_report,
)
from privfed import jsonsafe
from privfed.integrity import write_digest

TINY = ["federation.rounds=2", "model.hidden=[8]", "data.num_clients=4"]


def test_configurations_differ_only_where_they_say():
    configs = dict(comparison_configs(TINY))
    assert list(configs) == [label for label, _ in CONFIGURATIONS]
    assert configs["plain FedAvg"].privacy.mechanism == "none"
    assert configs["HE (CKKS)"].secure.kind == "he"
    assert configs["masking + distributed DP"].privacy.mechanism == "distributed"
    assert {c.model.hidden[0] for c in configs.values()} == {8}  # user overrides win
    assert len({c.short_hash() for c in configs.values()}) == len(CONFIGURATIONS)


@pytest.mark.slow
def test_main_job_tabulates_every_configuration_and_resumes(tmp_path, monkeypatch):
    configs = comparison_configs([*TINY, "audit.quick=true"])
    results = run_comparison(configs, tmp_path)
    rows = {r.label: r.row() for r in results}
    assert rows["plain FedAvg"]["epsilon"] == math.inf
    assert rows["local DP-SGD"]["epsilon_unit"] == "record"
    assert rows["user-level DP-FedAvg"]["epsilon_unit"] == "user"
    # The plain server reads one client's update and inverts it almost exactly; under HE
    # or masking it decodes only the aggregate, whose inversion is far worse.
    plain = rows["plain FedAvg"]["server_inversion_psnr_db"]
    assert plain > 40
    for label in ("HE (CKKS)", "masking"):
        assert rows[label]["server_inversion_psnr_db"] < plain - 20
    assert all(not r["dp_violation"] for r in rows.values())

    report = write_comparison_report(results, tmp_path)
    with open(tmp_path / "comparison.csv", newline="") as src:
        table = list(csv.DictReader(src))
    assert [r["configuration"] for r in table] == [label for label, _ in CONFIGURATIONS]
    assert "| masking + distributed DP |" in report.read_text()

    def no_more_work(*args, **kwargs):
        raise AssertionError("a finished configuration was redone")

    monkeypatch.setattr(audits, "run_audit", no_more_work)
    monkeypatch.setattr(comparison, "train_run", no_more_work)
    results = run_comparison(configs, tmp_path)
    assert [r.label for r in results] == [
        label for label, _ in CONFIGURATIONS]
    # A full audit is not served from the quick one's leakage.json.
    full = dict(comparison_configs(TINY))
    assert all(read_leakage(r.run_dir, full[r.label]) is None for r in results)


def test_every_run_directory_of_the_comparison_is_complete(tmp_path, monkeypatch,
                                                          check_run_dir):
    configs = comparison_configs(TINY)
    monkeypatch.setattr(comparison, "audit_run", lambda run_dir, config, **_options:
                        _fake_result(tmp_path, "", config, 0.95).leakage)
    results = run_comparison(configs, tmp_path / "compare")
    assert sorted(p.name for p in (tmp_path / "compare").iterdir()) == sorted(
        r.run_dir.name for r in results)
    for result in results:
        check_run_dir(result.run_dir, result.config)


def _fake_result(tmp_path, label, config, confidence):
    summary = {"final_accuracy": 0.9, "privacy_mechanism": "none", "epsilon": None,
               "privacy_unit": None, "delta": None, "seconds_per_round": 0.1,
               "bytes_up_per_client_round": 2048}
    leakage = {
        "config_hash": config.short_hash(),
        "membership": {"outsider": {"lira_online": {"auc": 0.6, "tpr_at_1%_fpr": 0.02}}},
        "epsilon_audit": {"epsilon_lower": 1.5, "confidence": confidence,
                          "epsilon_theory": math.inf, "violation": False},
        "inversion": {"single": {"status": "attacked", "view": "server",
                                 "mean_psnr_db": math.inf}},
    }
    return Comparison(label, config, tmp_path / label, summary, leakage)


def test_report_states_the_confidence_of_the_audits(tmp_path):
    configs = comparison_configs(TINY)[:2]
    results = [_fake_result(tmp_path, label, config, 0.9) for label, config in configs]
    text = write_comparison_report(results, tmp_path).read_text()
    assert "the epsilon lower bound is the 90% canary audit;" in text and "95%" not in text
    with open(tmp_path / "comparison.csv", newline="") as src:
        assert [r["epsilon_lower_confidence"] for r in csv.DictReader(src)] == ["0.9", "0.9"]
    mixed = [_fake_result(tmp_path, "a", configs[0][1], 0.9),
             _fake_result(tmp_path, "b", configs[1][1], 0.99)]
    text = write_comparison_report(mixed, tmp_path).read_text()
    assert "the epsilon lower bound is the canary audit;" in text


def test_leakage_is_read_back_with_its_infinities(tmp_path):
    label, config = comparison_configs(TINY)[0]
    leakage = _fake_result(tmp_path, label, config, 0.95).leakage
    leakage["config"] = "inf"
    (tmp_path / "audit").mkdir()
    (tmp_path / "audit" / "leakage.json").write_text(jsonsafe.dumps(leakage))
    write_digest(tmp_path / "audit", ["leakage.json"])
    back = read_leakage(tmp_path, config)
    assert back["epsilon_audit"]["epsilon_theory"] == math.inf
    assert back["inversion"]["single"]["mean_psnr_db"] == math.inf
    assert back["config"] == "inf"
    assert audits.leakage_figures(back)["server_inversion_psnr_db"] == math.inf


def test_the_table_flags_a_configuration_that_does_not_beat_the_majority():
    from experiments.comparison import format_cells

    row = {"configuration": "local DP", "accuracy": 0.62, "beats_majority": False,
           "majority_baseline": 0.627, "epsilon_text": "1.00 record", "mia_auc": 0.5,
           "mia_tpr_at_1pct_fpr": 0.01, "epsilon_lower": None, "server_inversion_psnr_db": None,
           "seconds_per_round": 0.1, "bytes_up_per_client_round": 2048.0}
    assert format_cells(row)[1] == "0.620 (<= majority 0.627)"
    assert format_cells({**row, "beats_majority": True})[1] == "0.620"


def test_the_main_job_refuses_a_sites_files_before_writing_anything(tmp_path, site_files,
                                                                     capsys):
    from privfed.cli import main

    args = ["run", "--output-dir", str(tmp_path / "runs"), "--set", "data.dataset=csv",
            "--set", f"data.path='{site_files['all']}'", "--set", "data.label_column=diagnosis",
            "-q"]
    assert main(args) == 2
    assert "needs a built-in dataset" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
