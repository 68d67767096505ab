import pytest

from privfed.config import ConfigError, ExperimentConfig, apply_overrides, load_config


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
    config = load_config(overrides=["data.samples_per_client=50", "federation.fraction=0.5"])
    path = tmp_path / "saved.toml"
    path.write_text(config.to_toml())
    assert load_config(path) == config
    assert load_config(path).short_hash() == config.short_hash()


def test_hash_ignores_where_outputs_go_but_not_what_is_trained():
    base = ExperimentConfig()
    assert load_config(overrides=["output_dir=elsewhere"]).short_hash() == base.short_hash()
    assert load_config(overrides=["seed=1"]).short_hash() != base.short_hash()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.colour=red", r"unknown key\(s\) data.colour in data; allowed: \['alpha'"),
        ("federation.roundz=3", "unknown key.*federation.roundz"),
        ("privacy.epsilon=-1", "privacy.epsilon must be > 0"),
        ("attacks.x=1", "attacks.x.*no options yet"),
        ("data.dataset=cifar", r"data.dataset: unknown value 'cifar'; allowed: \[.*'digits'"),
        ("model.name=resnet", r"model.name: unknown value 'resnet'; allowed: \['cnn'"),
        ("data.alpha=0", r"data.alpha must be in \(0, inf\], got 0.0"),
        ("data.alpha=-1", r"data.alpha must be in \(0"),
        ("federation.fraction=0", r"federation.fraction must be in \(0, 1\]"),
        ("federation.fraction=1.5", r"federation.fraction must be in \(0, 1\]"),
        ("federation.rounds=1.5", "federation.rounds must be of type int, got float"),
        ("federation.rounds=true", "federation.rounds must be an integer"),
        ("data.num_clients=0", r"data.num_clients must be in \[1"),
        ("model.hidden=[]", "model.hidden must be a non-empty list"),
        ("data.samples_per_client=10", None),  # valid with iid
        ("federation=3", "federation must be a table"),
        ("novalue", "not of the form section.key=value"),
    ],
)
def test_bad_values_name_the_field_and_what_is_allowed(override, message):
    if message is None:
        load_config(overrides=[override])
        return
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


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


def test_overrides_do_not_mutate_the_input():
    raw = {"data": {"num_clients": 3}}
    assert apply_overrides(raw, ["data.num_clients=4"])["data"]["num_clients"] == 4
    assert raw["data"]["num_clients"] == 3


def test_masking_threat_model_is_checked_against_the_planned_cohort():
    base = ["secure.kind='masking'", "data.num_clients=10", "federation.fraction=1.0"]
    cfg = load_config(None, [*base, "secure.neighbourhood_degree='secagg+'"])
    assert cfg.planned_cohort_size() == 10
    with pytest.raises(ConfigError, match=r"cohort of 10 clients\): threshold=5 is below"):
        load_config(None, [*base, "secure.threshold=5"])  # 2t must exceed n + c = 11
    with pytest.raises(ConfigError, match="secure.server_model: unknown value 'lazy'"):
        load_config(None, [*base, "secure.server_model='lazy'"])
    with pytest.raises(ConfigError, match=r"neighbourhood_degree must be of type int or str"):
        load_config(None, [*base, "secure.neighbourhood_degree=2.5"])
    assert load_config(None, [*base, "secure.cohort_size=20"]).planned_cohort_size() == 20
