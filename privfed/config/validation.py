"""Shared checks of the config sections: errors that name the field and what is allowed."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["ConfigError", "check_choice", "check_range"]


class ConfigError(ValueError):
    """An invalid configuration: the message names the field and the allowed values."""


def check_choice(field_name: str, value: str, allowed: Iterable[str]) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``allowed``."""
    allowed = sorted(allowed)
    if value not in allowed:
        raise ConfigError(f"{field_name}: unknown value {value!r}; allowed: {allowed}")


def check_range(
    field_name: str,
    value: float,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raise :class:`ConfigError` unless ``value`` lies in the interval (open or closed ends)."""
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        lower = f"{'(' if low_open else '['}{'-inf' if low is None else low}"
        upper = f"{'inf' if high is None else high}{')' if high_open else ']'}"
        interval = f"{lower}, {upper}"
        raise ConfigError(f"{field_name} must be in {interval}, got {value!r}")
