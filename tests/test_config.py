"""Loading a config: TOML, overrides, identity (hash), the audit section, the CLI's errors."""

import dataclasses
import subprocess
import sys

import pytest

from privfed.cli import main
from privfed.config import (
    AuditConfig,
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    config_from_dict,
    load_config,
)


def test_defaults_are_the_embedded_digits_federation():
    config = load_config()
    assert (config.data.dataset, config.data.num_clients, config.data.partition) == (
        "digits", 10, "iid")
    assert config.model.name == "mlp" and config.federation.rounds == 30


def test_toml_file_and_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('name = "bc"\n[data]\ndataset = "breast_cancer"\nnum_clients = 5\n'
                    '[model]\nname = "logistic"\n')
    config = load_config(path, ["federation.rounds=7", "data.alpha=2", "model.hidden=[4, 4]",
                                "data.partition=dirichlet"])
    assert config.name == "bc" and config.data.num_clients == 5
    assert config.federation.rounds == 7 and config.data.alpha == 2.0
    assert config.model.hidden == [4, 4] and config.data.partition == "dirichlet"


def test_saved_toml_reloads_to_an_equal_config(tmp_path):
    config = load_config(overrides=["data.samples_per_client=50", "federation.fraction=0.5",
                                    "audit.quick=true", "audit.num_canaries=10"])
    path = tmp_path / "saved.toml"
    path.write_text(config.to_toml())
    assert load_config(path) == config
    assert load_config(path).short_hash() == config.short_hash()


def test_hash_ignores_where_outputs_go_but_not_what_is_trained():
    base = ExperimentConfig()
    assert load_config(overrides=["output_dir=elsewhere"]).short_hash() == base.short_hash()
    assert load_config(overrides=["seed=1"]).short_hash() != base.short_hash()


@pytest.mark.parametrize("override", ["audit.quick=true", "audit.num_reference=4",
                                      "audit.inversion_examples=2", "audit.aggregate_clients=3",
                                      "audit.multi_step=2", "audit.num_canaries=20",
                                      "audit.confidence=0.99"])
def test_the_audit_settings_change_the_identity(override):
    """A quick audit and a full one of one federation are never taken for each other."""
    assert load_config(overrides=[override]).short_hash() != ExperimentConfig().short_hash()


def test_audit_sizes_are_the_quick_or_full_ones_with_the_overrides():
    full, quick = AuditConfig().sizes(), AuditConfig(quick=True).sizes()
    assert (full.num_reference, full.num_canaries) == (16, 200)
    assert (quick.num_reference, quick.num_canaries) == (4, 50)
    mixed = load_config(overrides=["audit.quick=true", "audit.num_reference=6"]).audit.sizes()
    assert dataclasses.replace(quick, num_reference=6) == mixed


def test_old_configs_with_an_empty_attacks_section_load(tmp_path):
    path = tmp_path / "old.toml"
    path.write_text(ExperimentConfig().to_toml().replace("[audit]", "[attacks]\n\n[audit]"))
    assert "[attacks]" in path.read_text()
    assert load_config(path) == ExperimentConfig()
    with pytest.raises(ConfigError, match=r"the \[attacks\] section is now \[audit\].*'quick'"):
        config_from_dict({"attacks": {"quick": True}})


def test_samples_per_client_only_with_iid():
    with pytest.raises(ConfigError, match="samples_per_client applies only to partition 'iid'"):
        load_config(overrides=["data.partition=shards", "data.samples_per_client=10"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[data\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.colour=red", r"unknown key\(s\) data.colour in data; allowed: \['alpha'"),
        ("federation.roundz=3", "unknown key.*federation.roundz"),
        ("federation=3", "federation must be a table"),
        ("novalue", "not of the form section.key=value"),
    ],
)
def test_malformed_overrides(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


def test_overrides_do_not_mutate_the_input():
    raw = {"data": {"num_clients": 3}}
    assert apply_overrides(raw, ["data.num_clients=4"])["data"]["num_clients"] == 4
    assert raw["data"]["num_clients"] == 3


@pytest.mark.parametrize(("override", "message"), [
    ("federation.server_momentum=1.5", "federation.server_momentum must be in [0, 1), got 1.5"),
    ("federation.lr=-1", "federation.lr must be in (0, inf), got -1.0"),
])
def test_cli_prints_one_line_and_exits_2(override, message, capsys):
    assert main(["config", "--set", override]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip().splitlines() == [f"error: {message}"]


def test_audit_quick_flag_is_the_audit_quick_override(monkeypatch):
    import attacks.cli

    seen = []

    def record(config, out, **kwargs):
        seen.append(config)
        raise ConfigError("stop here")

    monkeypatch.setattr(attacks.cli, "run_audit", record)
    assert main(["audit", "--quick", "--set", "federation.rounds=2", "--out", "unused"]) == 2
    assert seen[0] == load_config(overrides=["federation.rounds=2", "audit.quick=true"])


def test_importing_the_config_loads_neither_the_core_nor_the_cryptography():
    code = ("import sys, privfed.config; print(sorted(m for m in sys.modules if m.startswith(("
            "'privfed.federated', 'privfed.privacy', 'privfed.compression', 'privfed.secure', "
            "'tenseal', 'cryptography', 'opacus'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_the_config_names_what_the_packages_offer():
    """The config lists the options of packages it must not import; they agree."""
    from privfed.compression import quantize
    from privfed.config import compression, federation, secure
    from privfed.config.privacy import PrivacyConfig
    from privfed.federated import optimizers
    from privfed.secure import AGGREGATORS, validation, wire
    from privfed.secure.he import material
    from privfed.secure.masking import quantize as ring

    assert tuple(optimizers.SERVER_OPTIMIZERS) == federation.SERVER_OPTIMIZERS
    assert tuple(AGGREGATORS) == secure.SECURE_KINDS
    assert wire.SERVER_MODELS == secure.SERVER_MODELS
    assert set(secure.RULES["out_of_range"].allowed) == set(validation.OUT_OF_RANGE_MODES)
    assert secure.HE_MAX_COEFF_BITS == material._MAX_COEFF_BITS
    assert (secure.RULES["ring_bits"].low, secure.RULES["ring_bits"].high) == (
        ring.MIN_BITS, ring.MAX_BITS)
    assert quantize.BITS == compression.BITS
    assert PrivacyConfig is load_config().privacy.__class__  # the re-export is the class
