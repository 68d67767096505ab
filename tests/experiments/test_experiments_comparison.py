"""The main job: every privacy configuration trained, audited and tabulated, resumably."""

import csv
import math

import pytest

import experiments.audits as audits
import experiments.comparison as comparison
from experiments.comparison import (
    CONFIGURATIONS,
    comparison_configs,
    run_comparison,
    write_comparison_report,
)

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
    configs = comparison_configs(TINY)
    results = run_comparison(configs, tmp_path, quick=True)
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
    monkeypatch.setattr(comparison, "run_point", no_more_work)
    assert [r.label for r in run_comparison(configs, tmp_path)] == [
        label for label, _ in CONFIGURATIONS]
