"""Helpers shared by the privfed.secure tests."""

from __future__ import annotations

import numpy as np


def weighted_mean(vectors, weights, ids):
    """Plaintext weighted mean (float64) over ``ids``."""
    total = sum(weights[c] for c in ids)
    return sum(weights[c] * np.asarray(vectors[c], dtype=np.float64) for c in ids) / total
