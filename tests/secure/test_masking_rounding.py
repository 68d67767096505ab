"""Masking's fixed-point rounding: unbiased, and a warning when a clip far above the updates'
scale lets it swamp the released mean."""

import logging

import numpy as np

from privfed.secure import MaskingAggregator


def _round(clip: float, caplog) -> np.ndarray:
    rng = np.random.default_rng(0)
    vectors = {c: rng.uniform(-0.01, 0.01, 200).astype(np.float32) for c in range(4)}
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="privfed.secure.masking.server"):
        result = MaskingAggregator(clip=clip).aggregate(1, vectors, dict.fromkeys(vectors, 1.0))
    return np.asarray(result.mean) - np.mean(list(vectors.values()), axis=0, dtype=np.float64)


def test_a_clip_near_the_updates_scale_rounds_finely_and_silently(caplog):
    error = _round(1.0, caplog)
    assert np.abs(error).max() < 1e-8
    assert not caplog.records


def test_a_clip_far_above_the_updates_scale_warns_with_the_numbers(caplog):
    _round(1e30, caplog)
    (record,) = caplog.records
    assert "masking's fixed-point rounding" in record.message
    assert "lower secure.clip (now 1e+30)" in record.message
