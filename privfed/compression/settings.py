"""Moved to :mod:`privfed.config.compression`; re-exported until every caller imports it there."""
from privfed.config.compression import METHODS, CompressionConfig, check_compatible  # noqa: F401
