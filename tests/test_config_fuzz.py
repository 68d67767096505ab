"""Config fuzzing: every field of every section, set to NaN, the infinities, 0, -1, a huge
number, a string, a list or an unknown value, either passes and is usable, or is refused
when the config is read with one line that names the field; never a traceback.

The fields come from the schema itself, so a new field is fuzzed without touching this file;
each section is fuzzed in the settings that make its fields matter (e.g. ``[secure]`` under
masking and CKKS, ``[privacy]`` under each mechanism).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import warnings
from collections.abc import Iterator

import pytest

from privfed.cli import CLI_ERRORS, main
from privfed.config import ConfigError, ExperimentConfig, load_config

FUZZ_VALUES = ("nan", "inf", "-inf", "0", "-1", "1000000000000000000000000000000", '"x"',
               "[1]", '"no-such-value"')
"""The values every field is set to, as ``--set`` writes them (TOML)."""

SMALL = ("federation.rounds=1", "model.hidden=[8]", "data.num_clients=4")
"""Keeps a federation that is built or trained small."""

CONTEXTS: dict[str, dict[str, tuple[str, ...]]] = {
    "": {"default": ()},
    "data": {"iid": (), "dirichlet": ("data.partition=dirichlet",),
             "shards": ("data.partition=shards",)},
    "model": {"default": ()},
    "federation": {
        "fedavg": (), "fedavgm": ("federation.server_optimizer=fedavgm",),
        "fedadam": ("federation.server_optimizer=fedadam",),
        "fedbuff": ("federation.buffer_size=2", "federation.concurrency=3"),
        "federated-eval": ("federation.federated_eval_every=1", "data.validation_fraction=0.3"),
    },
    "privacy": {
        "local": ("privacy.mechanism=local", "privacy.noise_multiplier=1.0"),
        "central": ("privacy.mechanism=central", "privacy.noise_multiplier=1.0"),
        "central-epsilon": ("privacy.mechanism=central", "privacy.epsilon=5.0"),
        "adaptive": ("privacy.mechanism=central", "privacy.noise_multiplier=1.0",
                     "privacy.adaptive_clipping=true", "privacy.clipped_count_stddev=1.0"),
        "skellam": ("privacy.mechanism=distributed", "privacy.noise_multiplier=1.0",
                    "secure.kind=masking", "privacy.noise=skellam"),
        "ftrl-banded": ("privacy.mechanism=ftrl", "privacy.epsilon=5.0",
                        "privacy.factorization=banded", "federation.cyclic_groups=2",
                        "federation.client_sampling=cyclic"),
    },
    "secure": {"masking": ("secure.kind=masking",), "he": ("secure.kind=he",)},
    "compression": {"quantize": ("compression.method=quantize",),
                    "randomk": ("compression.method=randomk",),
                    "topk": ("compression.method=topk",)},
    "audit": {"default": ()},
    "tracking": {"default": ()},
}
"""Per section, the settings its fields are fuzzed in (every one of SMALL's too)."""


def config_fields() -> Iterator[str]:
    """The dotted name of every field of every section (``seed`` for a top-level one)."""
    defaults = ExperimentConfig()
    for top in dataclasses.fields(ExperimentConfig):
        section = getattr(defaults, top.name)
        if dataclasses.is_dataclass(section):
            yield from (f"{top.name}.{f.name}" for f in dataclasses.fields(section))
        else:
            yield top.name


def fuzz_cases() -> Iterator[tuple[str, str, tuple[str, ...]]]:
    """(field, value, overrides) for every field, value and setting of its section."""
    for name in config_fields():
        section = name.partition(".")[0] if "." in name else ""
        for setting in CONTEXTS[section].values():
            for value in FUZZ_VALUES:
                yield name, value, (*SMALL, *setting, f"{name}={value}")


@functools.cache
def outcomes() -> dict[tuple[str, str, tuple[str, ...]], ExperimentConfig | ConfigError]:
    """Each fuzz case's config, or the error that refused it (validation only: fast)."""
    result: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for case in fuzz_cases():
            try:
                result[case] = load_config(overrides=case[2])
            except ConfigError as err:
                result[case] = err
    return result


def accepted(*sections: str) -> list[tuple[str, str, ExperimentConfig]]:
    """The fuzz cases of ``sections`` that validation let through, one per distinct config."""
    seen, cases = set(), []
    for (name, value, _), outcome in outcomes().items():
        section = name.partition(".")[0] if "." in name else ""
        if isinstance(outcome, ExperimentConfig) and section in sections and (
                outcome.to_toml() not in seen):
            seen.add(outcome.to_toml())
            cases.append((name, value, outcome))
    return cases


def test_the_fuzz_covers_every_field_of_every_section():
    names = list(config_fields())
    assert {"seed", "name", "data.test_fraction", "federation.server_tau", "secure.threshold",
            "secure.neighbourhood_degree", "privacy.epsilon", "audit.confidence"} <= set(names)
    assert len({case[0] for case in outcomes()}) == len(names)


def test_every_fuzzed_value_passes_or_is_refused_naming_its_field():
    """The one error names the field (section.key) and is one line."""
    unnamed = {f"{case[0]}={case[1]} ({' '.join(case[2])})": str(outcome)
               for case, outcome in outcomes().items()
               if isinstance(outcome, ConfigError) and (case[0] not in str(outcome)
                                                        or "\n" in str(outcome))}
    assert unnamed == {}


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1000000000000000000000000000000"])
def test_no_float_field_takes_nan_an_infinity_or_a_value_beyond_float32(value):
    """The kind of fault of issue 17: NaN passed every range check. ``privacy.clip_norm``
    alone documents ``inf`` (no clipping, with ``noise_multiplier = 0``)."""
    hints = {f"{top.name}.{f.name}": f.type for top in dataclasses.fields(ExperimentConfig)
             if dataclasses.is_dataclass(top.type)
             for f in dataclasses.fields(getattr(ExperimentConfig(), top.name))}
    passed = {case[0] for case, outcome in outcomes().items()
              if case[1] == value and isinstance(outcome, ExperimentConfig)
              and "float" in str(hints.get(case[0], ""))}
    assert passed <= ({"privacy.clip_norm"} if value == "inf" else set())


@pytest.mark.parametrize(("override", "field"), [
    ("federation.lr=nan", "federation.lr"),
    ("federation.mu=nan", "federation.mu"),
    ("federation.mu=30", "federation.mu"),  # lr * mu >= 2: the proximal step diverges
    ("federation.server_momentum=1", "federation.server_momentum"),
    ("federation.server_beta1=-0.1", "federation.server_beta1"),
    ("federation.server_tau=0", "federation.server_tau"),
    ("seed=-1", "seed"),
    ("seed=99999999999999999999", "seed"),
    ('name=".."', "name"),
    ('name="."', "name"),
    ('name=".hidden"', "name"),
    ('name="a\\u0000b"', "name"),
    ("secure.neighbourhood_degree=0", "secure.neighbourhood_degree"),
    ("data.test_fraction=0.999", "data.test_fraction"),
    ("data.test_fraction=0.001", "data.test_fraction"),
    ("privacy.epsilon=1e30", "privacy.epsilon"),
])
def test_the_values_of_issue_17_are_refused_naming_the_field(override, field):
    privacy = ["privacy.mechanism=central"] if override.startswith("privacy.") else []
    with pytest.raises(ConfigError, match=rf"^{field}\b"):
        load_config(overrides=[*privacy, override])


@pytest.mark.parametrize(("overrides", "field"), [
    (["secure.threshold=7"], "secure.threshold"),
    (["secure.threshold=2"], "secure.threshold"),  # below the threat model's minimum
    (["secure.dropout_fraction=0.9"], "secure.dropout_fraction"),
])
def test_the_masking_threshold_is_checked_against_the_cohort(overrides, field):
    with pytest.raises(ConfigError, match=rf"{field}.*cohort of 4 clients"):
        load_config(overrides=[*SMALL, "secure.kind=masking", *overrides])


def test_min_surviving_clients_is_at_most_the_largest_round():
    base = [*SMALL, "privacy.mechanism=distributed", "privacy.noise_multiplier=1.0",
            "secure.kind=masking"]
    load_config(overrides=[*base, "privacy.min_surviving_clients=4"])
    with pytest.raises(ConfigError, match=r"privacy.min_surviving_clients \(5\) must be at most "
                                          r"the largest round, 4 clients"):
        load_config(overrides=[*base, "privacy.min_surviving_clients=5"])


def test_the_embedded_sizes_are_those_of_the_data():
    """The config checks data.test_fraction against these sizes without loading the data."""
    import numpy as np

    from privfed.config.data import EMBEDDED_SIZES
    from privfed.data import load_dataset

    for name, (examples, classes) in EMBEDDED_SIZES.items():
        data = load_dataset(name)
        labels = np.concatenate([data.y_train, data.y_test])
        assert (len(labels), len(np.unique(labels)), data.num_classes) == (
            examples, classes, classes)
    # The bounds the config states are the ones scikit-learn's stratified split takes.
    for fraction in (0.00501, 0.9944):
        load_dataset("digits", test_fraction=fraction)
        load_config(overrides=[f"data.test_fraction={fraction}"])


def _build_or_clean_error(config: ExperimentConfig) -> None:
    from privfed.experiment import build_simulation

    with warnings.catch_warnings(), contextlib.suppress(*CLI_ERRORS):
        warnings.simplefilter("ignore")
        build_simulation(config)


@pytest.mark.slow
def test_every_accepted_value_builds_a_federation_or_gives_a_clean_error():
    """Accepted values are usable: the federation (data, partition, model, DP calibration,
    secure aggregator) builds, or fails with an error the CLI prints as one line. CKKS
    settings are left to the sample that trains."""
    cases = [c for c in accepted("", "data", "model", "federation", "privacy", "secure",
                                 "compression", "audit")
             if c[2].secure.kind != "he"]
    assert len(cases) > 50
    for _, _, config in cases:
        _build_or_clean_error(config)


def trained_sample() -> list[tuple[str, str, ExperimentConfig]]:
    """One accepted config per (field, edge value): 0 and the huge number, outside CKKS (the
    slowest protocol, left to its own tests)."""
    sample: dict[tuple[str, str], ExperimentConfig] = {}
    for name, value, config in accepted("", "data", "model", "federation", "privacy", "secure",
                                        "compression", "audit"):
        if value in ("0", FUZZ_VALUES[5]) and config.secure.kind != "he":
            sample.setdefault((name, value), config)
    return [(name, value, config) for (name, value), config in sample.items()]


@pytest.mark.slow
def test_a_sample_of_accepted_edge_values_trains_a_round_or_stops_cleanly():
    """Each trains one round, or stops with an error the CLI prints as one line (e.g.
    ``federation.lr = 1e30`` diverges)."""
    from privfed.experiment import run_experiment

    sample = trained_sample()
    assert len(sample) >= 20
    for _, _, config in sample:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                history = run_experiment(config)
            except CLI_ERRORS as err:
                assert "\n" not in str(err)
            else:
                assert len(history.rounds) == 1


@pytest.fixture
def digits_toml(tmp_path):
    path = tmp_path / "fuzz.toml"
    path.write_text('name = "fuzz"\n[federation]\nrounds = 1\n[model]\nhidden = [8]\n')
    return path


@pytest.mark.parametrize("override", [
    "federation.lr=nan", "seed=99999999999999999999", 'name=".."', "data.test_fraction=0.999",
    "federation.server_tau=0", "secure.neighbourhood_degree=0", "federation.mu=nan",
])
def test_run_refuses_a_bad_value_with_one_line_exit_2_and_no_run_directory(
        override, digits_toml, tmp_path, capsys):
    out = tmp_path / "runs"
    status = main(["run", str(digits_toml), "--set", override, "--output-dir", str(out)])
    captured = capsys.readouterr()
    field = override.partition("=")[0]
    assert status == 2
    assert captured.err.count("\n") == 1 and captured.err.startswith(f"error: {field}")
    assert "Traceback" not in captured.err + captured.out
    assert not out.exists()


def test_run_refuses_a_site_file_whose_test_split_is_empty(tmp_path, capsys):
    """Known only once the file is read: refused before anything is trained or written."""
    rows = ["a,b,label", *(f"{i % 7},{i % 5},{i % 2}" for i in range(30))]
    (tmp_path / "site.csv").write_text("\n".join(rows) + "\n")
    config = tmp_path / "site.toml"
    config.write_text(f'name = "site"\n[data]\ndataset = "csv"\npath = "{tmp_path}/site.csv"\n'
                      'num_clients = 2\n[model]\nname = "logistic"\n[federation]\nrounds = 1\n')
    out = tmp_path / "runs"
    status = main(["run", str(config), "--set", "data.test_fraction=0.01", "--output-dir",
                   str(out), "--quiet"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1
    assert err.startswith("error: data.test_fraction = 0.01 holds out no example of the 30")
    assert not out.exists()


def test_secure_aggregation_refusing_an_update_is_one_line(digits_toml, tmp_path, capsys):
    """out_of_range = 'error' (the default) with a clip below the updates: the protocol
    refuses the update; the CLI says so in one line, exit 2, and writes nothing."""
    out = tmp_path / "runs"
    status = main(["run", str(digits_toml), "--set", "secure.kind=masking", "--set",
                   "secure.clip=0.0001", "--set", "data.num_clients=4", "--output-dir",
                   str(out), "--quiet"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1
    assert err.startswith("error: secure aggregation refused the round (InvalidInputError)")
    assert "secure.clip" in err and not out.exists()
