"""Rules between fields and between sections: privacy's combinations, compression with
secure aggregation and DP, CKKS and masking parameters, FedBuff, user-level DP's sampling."""

import math

import pytest

from privfed.config import (
    CompressionConfig,
    ConfigError,
    PrivacyConfig,
    check_compatible,
    load_config,
)


def test_default_privacy_is_non_private():
    assert PrivacyConfig().mechanism == "none"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mechanism": "central", "noise_multiplier": 1.0, "clip_norm": math.inf},
         r"privacy\.clip_norm = inf is allowed only with privacy\.noise_multiplier = 0"),
        ({"mechanism": "local"}, r"needs exactly one of privacy\.epsilon and privacy\.noise_mult"),
        ({"mechanism": "local", "epsilon": 1.0, "noise_multiplier": 1.0}, r"exactly one of"),
        ({"epsilon": 1.0}, r"privacy\.mechanism is 'none'"),
        ({"mechanism": "central", "epsilon": 1.0, "sample_rate": 0.1},
         r"privacy\.sample_rate applies only to mechanism 'local'"),
        ({"mechanism": "local", "epsilon": 1.0, "adaptive_clipping": True},
         r"privacy\.adaptive_clipping applies to mechanisms 'central' and 'distributed'"),
        ({"factorization": "banded"},
         r"privacy\.factorization 'banded' applies only to mechanism 'ftrl', not 'none'"),
        ({"mechanism": "ftrl", "noise_multiplier": 1.0, "bands": 4},
         r"privacy\.bands applies only to privacy\.factorization 'banded' \(mechanism 'ftrl'\), "
         r"not 'tree'"),
        ({"mechanism": "ftrl", "noise_multiplier": 1.0, "adaptive_clipping": True},
         r"privacy\.adaptive_clipping applies to mechanisms 'central' and 'distributed', "
         r"not 'ftrl'"),
        ({"mechanism": "central", "noise_multiplier": 0.0, "clip_norm": math.inf,
          "adaptive_clipping": True}, r"adaptive_clipping needs a finite initial"),
        ({"mechanism": "central", "epsilon": 1.0, "noise": "skellam"},
         r"privacy\.noise 'skellam' applies only to mechanism 'distributed'"),
        ({"mechanism": "distributed", "epsilon": 1.0, "noise": "skellam",
          "adaptive_clipping": True}, r"'skellam' needs a fixed, finite privacy\.clip_norm"),
    ],
)
def test_privacy_combinations(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        PrivacyConfig(**kwargs)


def test_inf_clip_with_zero_noise_is_allowed():
    config = PrivacyConfig(mechanism="central", noise_multiplier=0.0, clip_norm=math.inf)
    assert config.user_level


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"error_feedback": True}, r"compression\.error_feedback needs a lossy"),
        ({"method": "randomk", "error_feedback": True}, r"compression\.rescale = false"),
    ],
)
def test_compression_combinations(fields, message):
    with pytest.raises(ConfigError, match=message):
        CompressionConfig(**fields)


@pytest.mark.parametrize(
    ("method", "secure", "privacy", "message"),
    [
        ("topk", "masking", "none", r"'topk' cannot be combined with secure\.kind 'masking'.*"
                                    r"supported with masking: compression\.method 'randomk'"),
        ("quantize", "masking", "none", r"lower secure\.ring_bits"),
        ("quantize", "he", "none", r"secure\.kind 'he'"),
        ("quantize", "none", "central", r"longer than privacy\.clip_norm"),
        ("randomk", "none", "central", r"rescale = false"),
        ("topk", "none", "distributed", r"privacy\.mechanism 'distributed'"),
    ],
)
def test_incompatible_compression_is_rejected(method, secure, privacy, message):
    with pytest.raises(ConfigError, match=message):
        check_compatible(CompressionConfig(method=method), secure, privacy)


@pytest.mark.parametrize(
    ("fields", "secure", "privacy"),
    [
        ({"method": "quantize", "bits": 1, "error_feedback": True}, "none", "local"),
        ({"method": "topk", "error_feedback": True}, "none", "none"),
        ({"method": "topk"}, "none", "central"),
        ({"method": "randomk", "rescale": False}, "masking", "central"),
        ({"method": "randomk"}, "masking", "distributed"),
        ({"method": "none"}, "he", "central"),
    ],
)
def test_supported_compression_passes(fields, secure, privacy):
    check_compatible(CompressionConfig(**fields), secure, privacy)


USER_LEVEL = ["privacy.mechanism=central", "privacy.noise_multiplier=1.0"]
FTRL = ["privacy.mechanism=ftrl", "privacy.noise_multiplier=1.0"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["compression.method=topk", "secure.kind=masking"], "cannot be combined with secure"),
        (["federation.concurrency=11", "federation.buffer_size=2"],
         r"federation.concurrency \(11\) must be at most data.num_clients \(10\)"),
        (["federation.buffer_size=2", *USER_LEVEL],
         r"buffer_size \(asynchronous FedBuff\) is not supported with privacy.mechanism 'central'"),
        ([*FTRL, "federation.fraction=0.5"],
         r"privacy.mechanism 'ftrl' accounts a public schedule without sampling: it needs "
         r"federation.fraction = 1 \(every client every round, or with "
         r"federation.client_sampling 'cyclic' and federation.cyclic_groups one group per "
         r"round\), got 'fixed'"),
        ([*FTRL, "federation.fraction=0.5", "federation.client_sampling=poisson"],
         r"'ftrl' accounts a public schedule .* got 'poisson' sampling"),
        (["federation.buffer_size=2", *FTRL],
         r"buffer_size \(asynchronous FedBuff\) is not supported with privacy.mechanism 'ftrl'"),
        ([*FTRL, "compression.method=quantize"],
         r"central DP noise would no longer cover it; with privacy.mechanism 'ftrl'"),
        (["federation.client_sampling=cyclic", "federation.cyclic_groups=11"],
         r"federation.cyclic_groups \(11\) must be at most data.num_clients \(10\)"),
        (["federation.client_sampling=cyclic", "federation.cyclic_groups=2",
          "federation.fraction=0.5"],
         r"federation.client_sampling 'cyclic' trains the whole group of each round: "
         r"federation.fraction must be 1, got 0.5"),
        (["federation.client_sampling=cyclic", "federation.cyclic_groups=2",
          "federation.buffer_size=2"],
         r"'cyclic' is for synchronous rounds: unset federation.buffer_size"),
        (["federation.client_sampling=cyclic", "federation.cyclic_groups=3",
          "privacy.mechanism=distributed", "privacy.noise_multiplier=1.0", "secure.kind=he",
          "privacy.min_surviving_clients=4"],
         r"privacy.min_surviving_clients \(4\) must be at most the largest round, 3 clients "
         r"\(cyclic: the smallest group; .*federation.cyclic_groups, data.num_clients\)"),
        (["privacy.mechanism=distributed", "privacy.noise_multiplier=1.0"],
         r"'distributed' needs secure aggregation: .* allowed secure.kind: \['masking', 'he'\]"),
        (["secure.kind=he", "secure.clip=1e6"],
         r"secure.clip \(1e\+06\) exceeds what CKKS can sum .* = 262144"),
        (["secure.kind=masking", "secure.ring_bits=8", "data.num_clients=100",
          "federation.client_sampling=poisson", "federation.fraction=0.1"],
         r"secure.ring_bits \(8\) is too small for rounds of 100 clients"),
    ],
)
def test_cross_section_rules(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=overrides)


def test_ftrl_with_full_participation_or_cyclic_groups_passes():
    load_config(overrides=[*FTRL, "federation.client_sampling=cyclic",
                           "federation.cyclic_groups=2"])
    load_config(overrides=FTRL)


def test_user_level_dp_with_each_client_participation_passes():
    load_config(overrides=[*USER_LEVEL, "federation.fraction=0.5",
                           "federation.client_sampling=poisson"])
    load_config(overrides=[*USER_LEVEL, "federation.fraction=0.5"])  # fixed size
    load_config(overrides=[*USER_LEVEL, "federation.client_sampling=cyclic",
                           "federation.cyclic_groups=3"])
    load_config(overrides=[*USER_LEVEL, "data.num_clients=3", "federation.fraction=0.9"])
    load_config(overrides=["secure.kind=he", "secure.clip=1e5"])


def test_masking_threat_model_is_checked_against_the_planned_cohort():
    base = ["secure.kind='masking'", "data.num_clients=10", "federation.fraction=1.0"]
    cfg = load_config(None, [*base, "secure.neighbourhood_degree='secagg+'"])
    assert cfg.planned_cohort_size() == 10
    with pytest.raises(ConfigError, match=r"cohort of 10 clients\): threshold=5 is below"):
        load_config(None, [*base, "secure.threshold=5"])  # 2t must exceed n + c = 11
    assert load_config(None, [*base, "secure.cohort_size=20"]).planned_cohort_size() == 20
    assert load_config(None, [*base, "federation.buffer_size=4"]).planned_cohort_size() == 4


def test_masking_default_graph_follows_the_cohort_and_enters_the_identity():
    """Unset, secure.neighbourhood_degree means the complete graph up to 200 clients per
    round and SecAgg+ above; a run's identity names the graph the default picked."""
    def config(clients, *more):
        return load_config(None, ["secure.kind='masking'", f"data.num_clients={clients}",
                                  "federation.fraction=1.0", *more])

    small, large = config(200), config(201)
    assert small.secure.aggregator_params()["neighbourhood"] == "auto"
    assert large.short_hash() == config(201, "secure.neighbourhood_degree='secagg+'").short_hash()
    assert large.short_hash() != config(201, "secure.neighbourhood_degree='full'").short_hash()
    assert small.short_hash() != config(200, "secure.neighbourhood_degree='secagg+'").short_hash()
    assert small.to_dict()["secure"]["neighbourhood_degree"] is None


@pytest.mark.parametrize(("overrides", "field"), [
    (["privacy.mechanism=distributed", "privacy.noise_multiplier=1.0", "secure.kind=masking",
      "privacy.quantization_step=0.01"], "privacy.quantization_step"),
    (["privacy.mechanism=central", "privacy.noise_multiplier=1.0",
      "privacy.min_surviving_clients=2"], "privacy.min_surviving_clients"),
    (["federation.concurrency=3"], "federation.concurrency"),
])
def test_a_setting_that_would_be_silently_unused_is_refused(overrides, field):
    with pytest.raises(ConfigError, match=f"^{field} applies only to"):
        load_config(overrides=overrides)


def test_drop_last_is_refused_with_dpsgd_and_named_in_the_run_identity():
    with pytest.raises(ConfigError, match=r"federation\.drop_last applies to plain local SGD.*"
                                          r"privacy\.mechanism 'local'"):
        load_config(overrides=["federation.drop_last=true", "privacy.mechanism=local",
                               "privacy.noise_multiplier=1.0"])
    dropping = load_config(overrides=["federation.drop_last=true"])
    assert load_config(overrides=["federation.drop_last=false"]).short_hash() == "e22b83ea"
    assert dropping.short_hash() != "e22b83ea"
    assert load_config(overrides=["federation.drop_last=true", "privacy.mechanism=central",
                                  "privacy.noise_multiplier=1.0"]).federation.drop_last


def test_a_client_that_took_no_step_leaves_the_rounds_loss_to_the_others():
    from privfed.federated.engine import TrainReport
    from privfed.federated.server import weighted_loss

    reports = [TrainReport(0, 3, num_samples=30, train_loss=0.5),
               TrainReport(1, 0, num_samples=5, train_loss=math.nan)]
    assert weighted_loss(reports, {0, 1}) == 0.5
    assert weighted_loss(reports[1:], {1}) is None
