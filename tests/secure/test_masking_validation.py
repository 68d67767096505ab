"""Validation of the masking threat model and round parameters: each bad value is refused
with an error naming the field (privfed.secure.masking.security)."""

from __future__ import annotations

import math

import pytest

from privfed.secure.errors import InvalidInputError, ThresholdError
from privfed.secure.masking.security import RoundParameters, ThreatModel, round_parameters

DEFAULT = ThreatModel()


def test_fewer_than_two_clients():
    for n in (1, 0, -3):
        with pytest.raises(ThresholdError):
            round_parameters(n, DEFAULT)
        with pytest.raises(ThresholdError):
            round_parameters(n, DEFAULT, degree="secagg+")


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("corrupt_fraction", 0.5),
        ("corrupt_fraction", -0.01),
        ("corrupt_fraction", float("nan")),
        ("corrupt_fraction", True),
        ("corrupt_fraction", "0.1"),
        ("dropout_fraction", 1.0),
        ("dropout_fraction", -0.1),
        ("dropout_fraction", float("inf")),
        ("security_bits", 0),
        ("security_bits", 40.0),
        ("security_bits", True),
        ("correctness_bits", 0),
        ("correctness_bits", -20),
    ],
)
def test_threat_model_validation_names_the_field(field, bad):
    with pytest.raises(InvalidInputError, match=field):
        ThreatModel(**{field: bad})


def test_threat_model_counts_use_the_decimal():
    model = ThreatModel(0.29, 0.07)
    assert model.corrupt_clients(100) == 29  # floor(0.29 * 100) is 28 in binary floating point
    assert model.dropped_clients(100) == 7
    assert model.corrupt_clients(1000) == 290


@pytest.mark.parametrize("degree", [0, 3, -2, True, "sparse", 2.0])
def test_bad_degree(degree):
    with pytest.raises(InvalidInputError, match="degree"):
        round_parameters(100, DEFAULT, degree=degree)


def test_bad_model_and_cohort_type():
    with pytest.raises(InvalidInputError, match="model"):
        round_parameters(100, None)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="n="):
        round_parameters(100.0, DEFAULT)  # type: ignore[arg-type]


def test_round_parameters_properties():
    r = RoundParameters(
        cohort_size=50, degree=10, threshold=7, privacy_log2=-41.0, correctness_log2=-21.0
    )
    assert r.group_size == 11 and not r.complete and r.neighbourhood == 10
    assert RoundParameters(5, 4, 4, -math.inf, -math.inf).complete
