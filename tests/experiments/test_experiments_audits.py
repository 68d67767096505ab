"""A run's cached audit is reused only for the audit settings it was made with."""

import json

import experiments.audits as audits
from experiments.audits import audit_run, read_leakage
from privfed.config import load_config
from privfed.integrity import write_digest


def _fake_audit(config, out_dir):
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "leakage.json").write_text(json.dumps({"config_hash": config.short_hash(),
                                                      "quick": config.audit.quick}))
    write_digest(out_dir, ["leakage.json"])


def test_an_edited_audit_is_not_used(tmp_path):
    config = load_config()
    _fake_audit(config, tmp_path / "audit")
    assert read_leakage(tmp_path, config) is not None
    leakage = tmp_path / "audit" / "leakage.json"
    leakage.write_text(leakage.read_text().replace("false", "true"))
    assert read_leakage(tmp_path, config) is None


def test_a_quick_audit_is_not_taken_for_a_full_one(tmp_path, monkeypatch):
    calls = []

    def fake_run_audit(config, out_dir, **_options):
        calls.append(config.audit.quick)
        _fake_audit(config, out_dir)

    monkeypatch.setattr(audits, "run_audit", fake_run_audit)
    full, quick = load_config(), load_config(overrides=["audit.quick=true"])
    assert audit_run(tmp_path, quick)["quick"] is True
    assert read_leakage(tmp_path, quick) is not None and read_leakage(tmp_path, full) is None
    assert audit_run(tmp_path, quick)["quick"] is True  # cached
    assert calls == [True]
    assert audit_run(tmp_path, full)["quick"] is False
    assert calls == [True, False]
