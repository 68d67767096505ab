"""Shared helpers for the privfed.secure tests."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def clients10():
    """10 clients, 1000 float32 parameters in [-1, 1], distinct weights."""
    rng = np.random.default_rng(7)
    vectors = {c: rng.uniform(-1, 1, 1000).astype(np.float32) for c in range(10)}
    weights = {c: float(10 * (c + 1)) for c in range(10)}
    return vectors, weights
