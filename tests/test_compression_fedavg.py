"""Compression and asynchronous aggregation configured from TOML keys, end to end."""

import pytest

from privfed.config import ConfigError, load_config
from privfed.experiment import build_simulation

SMALL = ["model.hidden=[32]", "federation.rounds=3", "data.num_clients=5"]


def _history(*overrides):
    return build_simulation(load_config(overrides=[*SMALL, *overrides])).run()


def test_quantised_uploads_are_about_32_over_b_times_smaller():
    plain = _history().rounds[0].bytes_up
    for bits in (8, 4):
        small = _history("compression.method=quantize", f"compression.bits={bits}")
        ratio = plain / small.rounds[0].bytes_up
        # 32/b, less a little for the per-message header and float32 scale.
        assert 0.95 * 32 / bits < ratio <= 32 / bits


def test_fedbuff_from_config_records_simulated_time():
    history = _history("federation.buffer_size=2", "federation.concurrency=4",
                       "federation.latency_spread=1.0", "federation.rounds=6")
    times = [r.extra["sim_time"] for r in history.rounds]
    assert times == sorted(times) and times[0] > 0
    assert all(len(r.clients) == 2 for r in history.rounds)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["compression.method=topk", "secure.kind=masking"], "cannot be combined with secure"),
        (["compression.method=quantize", "secure.kind=he"], "secure.kind 'he'"),
        (["compression.method=quantize", "compression.bits=3"],
         r"compression.bits: unknown value 3; allowed: \[1, 2, 4, 8\]"),
        (["federation.buffer_size=2", "privacy.mechanism=central",
          "privacy.noise_multiplier=1"], "not supported with privacy.mechanism 'central'"),
        (["federation.buffer_size=2", "federation.concurrency=9"],
         r"concurrency \(9\) must be at most data.num_clients"),
    ],
)
def test_invalid_combinations_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[*SMALL, *overrides])
