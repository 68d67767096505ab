"""Every field of every section rejects an invalid value when the config is loaded, naming
the field and what is allowed; the constructors that take the same values share the rules."""

import dataclasses
import re

import pytest

from privfed.config import ConfigError, ExperimentConfig, check_field, load_config
from privfed.federated import (
    ClientSampler,
    FedAdam,
    FedAvg,
    FedAvgM,
    LocalTraining,
    make_server_optimizer,
)

INVALID = [
    # top level
    ('name=""', r"name must be 1 to 100 characters of letters, digits, spaces and -_.\+=@"),
    ('name="a/b"', r"name must be 1 to 100 characters .*got 'a/b'"),
    ("seed=-1", r"seed must be in \[0, 2\*\*63 - 1\], got -1"),
    ("seed=1.5", r"seed must be of type int, got float"),
    ("output_dir=1", r"output_dir must be of type str, got int"),
    # data
    ("data.dataset=cifar", r"data.dataset: unknown value 'cifar'; allowed: \[.*'digits'"),
    ("data.data_dir=1", r"data.data_dir must be of type str"),
    ("data.num_clients=0", r"data.num_clients must be in \[1, inf\), got 0"),
    ("data.partition=random", r"data.partition: unknown value 'random'; allowed: \['dirichlet'"),
    ("data.alpha=0", r"data.alpha must be in \(0, inf\), got 0.0"),
    ("data.alpha=nan", r"data.alpha must be in \(0, inf\), got nan"),
    ("data.min_partition_size=0", r"data.min_partition_size must be in \[1, inf\), got 0"),
    ("data.shards_per_client=0", r"data.shards_per_client must be in \[1, inf\), got 0"),
    ("data.samples_per_client=0", r"data.samples_per_client must be in \[1, inf\), got 0"),
    ("data.test_fraction=0", r"data.test_fraction must be in \(0, 1\), got 0.0"),
    ("data.test_fraction=1", r"data.test_fraction must be in \(0, 1\), got 1.0"),
    ("data.split_seed=-1", r"data.split_seed must be in \[0, 4294967295\], got -1"),
    ("data.scaling=minmax", r"data.scaling: unknown value 'minmax'; allowed: \["),
    ("data.path=1", r"data.path must be of type str, got int"),
    ("data.path='x.csv'", r"data.path applies only to a site's own files"),
    ("data.client_paths=['a.csv']", r"data.client_paths applies only to a site's own files"),
    ("data.test_path=1", r"data.test_path must be of type str, got int"),
    ("data.label_column=1", r"data.label_column must be of type str, got int"),
    ("data.feature_columns=[1]", r"data.feature_columns\[0\] must be of type str, got int"),
    ("data.categorical=1", r"data.categorical must be a table, got 1"),
    ("data.classes=['a']", r"data.classes applies only to a site's own files"),
    ("data.group_column='site'", r"data.group_column applies only to a site's own files"),
    ("data.image_size=[28]", r"data.image_size applies only to a site's own files"),
    ("data.channels=3", r"data.channels applies only to a site's own files"),
    ("data.options=1", r"data.options must be a table, got 1"),
    ("data.validation_fraction=1", r"data.validation_fraction must be in \[0, 1\), got 1.0"),
    # model
    ("model.name=resnet", r"model.name: unknown value 'resnet'; allowed: \['cnn'.*'mlp'\] "
                          r"or an import path 'package.module:factory'"),
    ("model.hidden=[]", r"model.hidden must be a non-empty list of widths >= 1"),
    ("model.hidden=[8, 0]", r"model.hidden\[1\] must be in \[1, inf\), got 0"),
    ("model.name='pkg.:make'",
     r"model.name = 'pkg.:make': an import path must have the form 'package.module:factory'"),
    ("model.options=1", r"model.options must be a table, got 1"),
    ("model.options={width=3}", r"model.options are keyword arguments of a user's factory"),
    ("model.fix_for_dp=1", r"model.fix_for_dp must be of type bool, got int"),
    # federation
    ("federation.rounds=0", r"federation.rounds must be in \[1, inf\), got 0"),
    ("federation.rounds=1.5", r"federation.rounds must be of type int, got float"),
    ("federation.rounds=true", r"federation.rounds must be an integer"),
    ("federation.fraction=0", r"federation.fraction must be in \(0, 1\], got 0.0"),
    ("federation.fraction=1.5", r"federation.fraction must be in \(0, 1\], got 1.5"),
    ("federation.vectorise=\"yes\"",
     r"federation.vectorise must be of type bool, got str 'yes'"),
    ("federation.drop_last=1", r"federation.drop_last must be of type bool, got int 1"),
    ("federation.device=gpu",
     r"federation.device: unknown device 'gpu'; allowed: auto, cpu, cuda, cuda:N, mps"),
    ("federation.federated_eval_every=-1",
     r"federation.federated_eval_every must be in \[0, inf\), got -1"),
    ("federation.federated_eval_fraction=0",
     r"federation.federated_eval_fraction must be in \(0, 1\], got 0.0"),
    ("federation.client_sampling=random",
     r"federation.client_sampling: unknown value 'random'; allowed: \['fixed', 'poisson', "
     r"'cyclic'\]"),
    ("federation.cyclic_groups=0", r"federation.cyclic_groups must be in \[1, inf\), got 0"),
    ("federation.cyclic_groups=2",
     r"federation.cyclic_groups is set exactly when federation.client_sampling is 'cyclic', "
     r"got client_sampling 'fixed' with cyclic_groups 2"),
    ("federation.client_sampling=cyclic",
     r"federation.cyclic_groups is set exactly when federation.client_sampling is 'cyclic', "
     r"got client_sampling 'cyclic' with cyclic_groups None"),
    ("federation.local_epochs=0", r"federation.local_epochs must be in \[1, 10000\], got 0"),
    ("federation.batch_size=0", r"federation.batch_size must be in \[1, inf\), got 0"),
    ("federation.lr=-1", r"federation.lr must be in \(0, inf\), got -1.0"),
    ("federation.lr=inf", r"federation.lr must be in \(0, inf\), got inf"),
    ("federation.mu=-0.1", r"federation.mu must be in \[0, inf\), got -0.1"),
    ("federation.server_optimizer=fedsgd",
     r"federation.server_optimizer: unknown value 'fedsgd'; allowed: \['fedavg', 'fedavgm'"),
    ("federation.server_lr=0", r"federation.server_lr must be in \(0, inf\), got 0.0"),
    ("federation.server_momentum=1.5", r"federation.server_momentum must be in \[0, 1\), got 1.5"),
    ("federation.server_momentum=-0.1", r"federation.server_momentum must be in \[0, 1\)"),
    ("federation.server_beta1=1", r"federation.server_beta1 must be in \[0, 1\), got 1.0"),
    ("federation.server_beta2=-0.1", r"federation.server_beta2 must be in \[0, 1\), got -0.1"),
    ("federation.server_tau=0", r"federation.server_tau must be in \(0, inf\), got 0.0"),
    ("federation.eval_every=0", r"federation.eval_every must be in \[1, inf\), got 0"),
    ("federation.buffer_size=0", r"federation.buffer_size must be in \[1, inf\), got 0"),
    ("federation.concurrency=0", r"federation.concurrency must be in \[1, inf\), got 0"),
    ("federation.latency_spread=-1", r"federation.latency_spread must be in \[0, 10\], got -1"),
    ("federation.staleness_exponent=-0.5",
     r"federation.staleness_exponent must be in \[0, 10\], got -0.5"),
    # privacy
    ("privacy.mechanism=dp", r"privacy.mechanism: unknown value 'dp'; allowed: \['none', 'local'"
                             r", 'central', 'distributed', 'ftrl'\]"),
    ("privacy.epsilon=-1", r"privacy.epsilon must be in \(0, 100\], got -1.0"),
    ("privacy.epsilon=inf", r"privacy.epsilon must be in \(0, 100\], got inf"),
    ("privacy.delta=0", r"privacy.delta must be in \(0, 1\), got 0.0"),
    ("privacy.delta=1", r"privacy.delta must be in \(0, 1\), got 1.0"),
    ("privacy.noise_multiplier=-0.5", r"privacy.noise_multiplier must be in \[0, inf\), got -0.5"),
    ("privacy.max_grad_norm=0", r"privacy.max_grad_norm must be in \(0, inf\), got 0.0"),
    ("privacy.max_grad_norm=inf", r"privacy.max_grad_norm must be in \(0, inf\), got inf"),
    ("privacy.sample_rate=0", r"privacy.sample_rate must be in \(0, 1\], got 0.0"),
    ("privacy.sample_rate=1.5", r"privacy.sample_rate must be in \(0, 1\], got 1.5"),
    ("privacy.clip_norm=-1", r"privacy.clip_norm must be in \(0, inf\], got -1.0"),
    ("privacy.adaptive_clipping=1", r"privacy.adaptive_clipping must be of type bool, got int"),
    ("privacy.target_quantile=1.5", r"privacy.target_quantile must be in \[0, 1\], got 1.5"),
    ("privacy.clip_lr=0", r"privacy.clip_lr must be in \(0, inf\), got 0.0"),
    ("privacy.clipped_count_stddev=0",
     r"privacy.clipped_count_stddev must be in \(0, inf\), got 0.0"),
    ("privacy.accountant=moments",
     r"privacy.accountant: unknown value 'moments'; allowed: \['pld', 'prv', 'rdp'\]"),
    ("privacy.accountant=gdp", r"privacy.accountant 'gdp' is not offered.*allowed: \['pld'"),
    ("privacy.diagnostics=full",
     r"privacy.diagnostics: unknown value 'full'; allowed: \['private', 'exact'\]"),
    ("privacy.noise=laplace",
     r"privacy.noise: unknown value 'laplace'; allowed: \['gaussian', 'skellam'\]"),
    ("privacy.quantization_step=0", r"privacy.quantization_step must be in \(0, inf\), got 0.0"),
    ("privacy.min_surviving_clients=0",
     r"privacy.min_surviving_clients must be in \[1, inf\), got 0"),
    ("privacy.noise_cohort_size=0", r"privacy.noise_cohort_size must be in \[1, inf\), got 0"),
    ("privacy.factorization=toeplitz",
     r"privacy.factorization: unknown value 'toeplitz'; allowed: \['tree', 'banded'\]"),
    ("privacy.bands=0", r"privacy.bands must be in \[1, inf\), got 0"),
    ("privacy.secure_mode=1", r"privacy.secure_mode must be of type bool, got int"),
    # secure
    ("secure.kind=fhe", r"secure.kind: unknown value 'fhe'; allowed: \['none', 'he', 'masking'\]"),
    ("secure.clip=0", r"secure.clip must be in \(0, inf\), got 0.0"),
    ("secure.clip=inf", r"secure.clip must be in \(0, inf\), got inf"),
    ("secure.out_of_range=wrap",
     r"secure.out_of_range: unknown value 'wrap'; allowed: \['error', 'clip'\]"),
    ("secure.ring_bits=4", r"secure.ring_bits must be in \[8, 62\], got 4"),
    ("secure.ring_bits=63", r"secure.ring_bits must be in \[8, 62\], got 63"),
    ("secure.threshold=1", r"secure.threshold must be in \[2, inf\), got 1"),
    ("secure.neighbourhood_degree=3",
     r"secure.neighbourhood_degree: 3 is not allowed; allowed: 'full', 'secagg\+' or an even"),
    ("secure.neighbourhood_degree='complete'", r"secure.neighbourhood_degree: 'complete' is not"),
    ("secure.neighbourhood_degree=2.5", r"neighbourhood_degree must be of type int or str"),
    ("secure.cohort_size=0", r"secure.cohort_size must be in \[1, inf\), got 0"),
    ("secure.corrupt_fraction=0.5", r"secure.corrupt_fraction must be in \[0, 0.5\), got 0.5"),
    ("secure.dropout_fraction=1", r"secure.dropout_fraction must be in \[0, 1\), got 1.0"),
    ("secure.security_bits=0", r"secure.security_bits must be in \[1, inf\), got 0"),
    ("secure.server_model=lazy", r"secure.server_model: unknown value 'lazy'; allowed: \["),
    ("secure.poly_modulus_degree=1000",
     r"secure.poly_modulus_degree: unknown value 1000; allowed: \[4096, 8192, 16384, 32768\]"),
    ("secure.coeff_mod_bit_sizes=[60]", r"secure.coeff_mod_bit_sizes must hold at least 2"),
    ("secure.coeff_mod_bit_sizes=[60, 10]",
     r"secure.coeff_mod_bit_sizes\[1\] must be in \[20, 60\], got 10"),
    ("secure.coeff_mod_bit_sizes=[60, 60, 60, 60]",
     r"secure.coeff_mod_bit_sizes must total at most 218 bits .*poly_modulus_degree 8192, "
     r"got .*\(240 bits"),
    ("secure.scale_bits=19", r"secure.scale_bits must be in \[20, 50\]"),
    ("secure.scale_bits=55", r"secure.scale_bits must be in \[20, 50\] .* got 55"),
    # compression
    ("compression.method=gzip", r"compression.method: unknown value 'gzip'; allowed: \['none'"),
    ("compression.bits=3", r"compression.bits: unknown value 3; allowed: \[1, 2, 4, 8\]"),
    ("compression.block_size=0", r"compression.block_size must be in \[1, inf\), got 0"),
    ("compression.density=0", r"compression.density must be in \(0, 1\], got 0.0"),
    ("compression.density=1.5", r"compression.density must be in \(0, 1\], got 1.5"),
    ("compression.rescale=1", r"compression.rescale must be of type bool, got int"),
    ("compression.error_feedback=1", r"compression.error_feedback must be of type bool"),
    # audit
    ("audit.quick=1", r"audit.quick must be of type bool, got int"),
    ("audit.num_reference=0", r"audit.num_reference must be in \[2, inf\), got 0"),
    ("audit.num_reference=3", r"audit.num_reference must be even .*got 3"),
    ("audit.inversion_examples=0", r"audit.inversion_examples must be in \[1, inf\), got 0"),
    ("audit.aggregate_clients=1", r"audit.aggregate_clients must be in \[2, inf\), got 1"),
    ("audit.multi_step=0", r"audit.multi_step must be in \[1, inf\), got 0"),
    ("audit.num_canaries=0", r"audit.num_canaries must be in \[1, inf\), got 0"),
    ("audit.one_shot_canaries=1", r"audit.one_shot_canaries must be in \[2, inf\), got 1"),
    ("audit.confidence=0", r"audit.confidence must be in \(0, 1\), got 0.0"),
    ("audit.confidence=1", r"audit.confidence must be in \(0, 1\), got 1.0"),
    # tracking
    ("tracking.tensorboard=1", r"tracking.tensorboard must be of type bool, got int"),
    ("tracking.mlflow=true", r"unknown key\(s\) tracking.mlflow in tracking"),
    ("tracking.checkpoint_every=-1", r"tracking.checkpoint_every must be in \[0, inf\), got -1"),
    ("tracking.checkpoint_every=2.5", r"tracking.checkpoint_every must be of type int"),
]


@pytest.mark.parametrize(("override", "message"), INVALID)
def test_an_invalid_value_is_rejected_at_load_time_naming_the_field(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


def test_every_field_of_every_section_has_an_invalid_case():
    names = {re.split(r"[=\[]", override)[0] for override, _ in INVALID}
    fields = set()
    for top in dataclasses.fields(ExperimentConfig):
        section = getattr(ExperimentConfig(), top.name)
        if dataclasses.is_dataclass(section):
            fields |= {f"{top.name}.{f.name}" for f in dataclasses.fields(section)}
        else:
            fields.add(top.name)
    assert fields - names == set()


@pytest.mark.parametrize("override", [
    "federation.server_momentum=0", "federation.server_beta2=0.999", "federation.fraction=1",
    "data.split_seed=4294967295", "secure.ring_bits=62", "secure.neighbourhood_degree=4",
    "secure.neighbourhood_degree='full'", "secure.corrupt_fraction=0.49", "audit.num_reference=2",
    "audit.confidence=0.999", "secure.coeff_mod_bit_sizes=[60, 40, 40, 60]",
    "data.samples_per_client=10", "privacy.target_quantile=0",
])
def test_values_on_the_boundary_are_accepted(override):
    load_config(overrides=[override])


@pytest.mark.parametrize(("build", "message"), [
    (lambda: FedAvg(lr=0.0), r"federation.server_lr must be in \(0, inf\), got 0.0"),
    (lambda: FedAvgM(momentum=1.5), r"federation.server_momentum must be in \[0, 1\), got 1.5"),
    (lambda: FedAdam(beta1=1.0), r"federation.server_beta1 must be in \[0, 1\)"),
    (lambda: FedAdam(tau=0.0), r"federation.server_tau must be in \(0, inf\)"),
    (lambda: make_server_optimizer("fedsgd"), r"federation.server_optimizer: unknown value"),
    (lambda: ClientSampler(10, 1.5, seed=0), r"federation.fraction must be in \(0, 1\]"),
    (lambda: ClientSampler(0, 0.5, seed=0), r"data.num_clients must be in \[1, inf\)"),
    (lambda: LocalTraining(epochs=0), r"federation.local_epochs must be in \[1, 10000\]"),
    (lambda: LocalTraining(lr=float("nan")), r"federation.lr must be in \(0, inf\), got nan"),
    (lambda: LocalTraining(mu=-1.0), r"federation.mu must be in \[0, inf\)"),
])
def test_constructors_share_the_config_rules(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


def test_check_field_knows_only_config_fields():
    check_field("federation.server_momentum", 0.5)
    check_field("seed", 3)
    with pytest.raises(ConfigError, match=r"seed must be a number in \[0, 2\*\*63 - 1\], got 'x'"):
        check_field("seed", "x")
    with pytest.raises(KeyError, match="no rule for config field 'federation.momentum'"):
        check_field("federation.momentum", 0.5)
