"""The audit runner: one leakage report per configuration, with its files."""

import json
import math

import pytest

from attacks.report import format_table
from attacks.runner import run_audit
from privfed.config import load_config

TINY = ["data.num_clients=3", "federation.rounds=3", "model.hidden=[16]",
        "audit.num_reference=2", "audit.inversion_examples=2", "audit.aggregate_clients=3",
        "audit.multi_step=2", "audit.num_canaries=20"]


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    out = tmp_path_factory.mktemp("plain")
    messages = []
    report = run_audit(load_config(overrides=TINY), out, progress=messages.append)
    return out, report, messages


@pytest.mark.slow
def test_plain_run_attacks_every_view(plain):
    tmp_path, report, messages = plain
    for name in ("leakage.json", "roc.png", "reconstructions.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert json.loads((tmp_path / "leakage.json").read_text())["config_hash"] == \
        report["config_hash"]
    assert report["membership"]["server_client_update"]["status"] == "attacked"
    assert report["membership"]["collusion_client_update"]["status"] == "not applicable"
    assert report["inversion"]["single"]["mean_psnr_db"] >= 25
    # Each one-example update is inverted exactly, so the optimal matching pairs each
    # reconstruction with its own example.
    assert report["inversion"]["single"]["mean_matched_psnr_db"] == pytest.approx(
        report["inversion"]["single"]["mean_psnr_db"])
    outsider = report["membership"]["outsider"]
    assert list(outsider) == ["note", "loss", "lira_offline", "lira_online", "rmia_offline",
                              "rmia_online"]
    assert outsider["rmia_offline"]["offline_a"] == 1.0  # 2 reference models: not tuned
    table = format_table(report)
    assert "membership: rmia_online" in table and "matched PSNR" in table
    assert set(report["seconds"]) == {"membership_outsider", "membership_client_update",
                                      "inversion", "epsilon_audit", "user_level_estimate"}
    assert messages[-1] == "user-level estimate: done"
    user_level = report["user_level_estimate"]  # no noise: no user-level guarantee
    assert user_level["epsilon_theory"] == math.inf and user_level["epsilon_estimate"] > 5


@pytest.mark.slow
def test_he_run_reports_opaque_server_view(tmp_path, plain):
    report = run_audit(load_config(overrides=[*TINY, "secure.kind=he"]), tmp_path)
    server = report["membership"]["server_client_update"]
    assert server["status"] == "not applicable" and "opaque" in server["reason"]
    assert report["membership"]["collusion_client_update"]["status"] == "attacked"
    assert report["inversion"]["single"]["view"] == "collusion"
    # HE protects the updates, not the final model: the outsider learns exactly as much.
    for attack in ("loss", "lira_offline", "lira_online", "rmia_offline", "rmia_online"):
        assert report["membership"]["outsider"][attack]["auc"] == pytest.approx(
            plain[1]["membership"]["outsider"][attack]["auc"], abs=2e-3)
    assert "not applicable: opaque" in format_table(report)
