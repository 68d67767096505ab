"""Shared checks of config fields: errors that name the field and what is allowed.

Standard library only, so that any constructor of privfed can check its arguments with the
same functions (and the same wording) as the config: ``check_range``, ``check_choice``, and
the rule objects :class:`Range` and :class:`OneOf` that each section module lists per field
in its ``RULES`` (:func:`privfed.config.fields.check_field` looks one up by dotted name).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Set
from dataclasses import dataclass
from numbers import Real
from typing import Any

__all__ = ["FLOAT_MAX", "INT_MAX", "ConfigError", "OneOf", "Range", "Rule", "check_choice",
           "check_number_type", "check_range", "check_rules"]

INT_MAX = 2**63 - 1
"""The largest integer a config holds: TOML's integers are 64-bit (``-2**63 .. 2**63 - 1``),
so a saved ``config.toml`` reads back, and ``torch`` and ``numpy`` take every such seed."""

FLOAT_MAX = 3.4028234663852886e38
"""The largest finite float a config holds: float32's, the precision the models compute in (a
larger learning rate or clip norm overflows when it meets a float32 tensor)."""


class ConfigError(ValueError):
    """An invalid configuration: the message names the field and the allowed values."""


def check_choice(field_name: str, value: Any, allowed: Collection[Any]) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``allowed``.

    Parameters
    ----------
    field_name : str
        Dotted name of the field, e.g. ``"federation.client_sampling"``.
    value : object
        The value given.
    allowed : collection
        The allowed values; listed in the error in their order, or sorted when they are the
        keys of a registry (a mapping) or a set.
    """
    if isinstance(value, bool) or not any(value == a for a in allowed):
        shown = sorted(allowed) if isinstance(allowed, Mapping | Set) else list(allowed)
        raise ConfigError(f"{field_name}: unknown value {value!r}; allowed: {shown}")


def check_range(
    field_name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a number in the interval.

    A missing bound is an open infinite end: ``low=0`` alone is ``[0, inf)``, so neither NaN
    nor an infinity passes unless a bound says so (``high=math.inf`` gives ``[low, inf]``).

    Parameters
    ----------
    field_name : str
        Dotted name of the field, e.g. ``"federation.server_momentum"``.
    value : int or float
    low, high : float, optional
        The bounds.
    low_open, high_open : bool
        Whether the bound itself is excluded.

    Examples
    --------
    >>> check_range("federation.server_momentum", 1.5, low=0, high=1, high_open=True)
    Traceback (most recent call last):
    ...
    privfed.config.validation.ConfigError: federation.server_momentum must be in [0, 1), got 1.5
    """
    lower = "(-inf" if low is None else f"{'(' if low_open else '['}{_number(low)}"
    upper = "inf)" if high is None else f"{_number(high)}{')' if high_open else ']'}"
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ConfigError(f"{field_name} must be a number in {lower}, {upper}, got {value!r}")
    too_low = (math.isinf(value) and value < 0) if low is None else (
        value <= low if low_open else value < low)
    too_high = (math.isinf(value) and value > 0) if high is None else (
        value >= high if high_open else value > high)
    if too_low or too_high or math.isnan(value):
        raise ConfigError(f"{field_name} must be in {lower}, {upper}, got {value!r}")


def check_number_type(field_name: str, value: Any, kind: type | None = None) -> None:
    """Raise :class:`ConfigError` if ``value`` is beyond what a number of its type holds in a
    config: an int outside TOML's 64-bit range (:data:`INT_MAX`), or a finite float beyond
    float32's (:data:`FLOAT_MAX`). NaN and the infinities are left to the field's range.

    Parameters
    ----------
    field_name : str
        Dotted name of the field.
    value : object
        The value; anything but an int or a float passes.
    kind : {int, float}, optional
        The field's type (an int given to a float field is checked as a float); default:
        the value's own.

    Examples
    --------
    >>> check_number_type("seed", 10**20)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    privfed.config.validation.ConfigError: seed must be a 64-bit integer (TOML's), ...
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    kind = kind or type(value)
    if kind is int and not -INT_MAX - 1 <= value <= INT_MAX:
        raise ConfigError(f"{field_name} must be a 64-bit integer (TOML's), at most 2**63 - 1 "
                          f"in magnitude, got {value!r}")
    if kind is float and abs(value) > FLOAT_MAX and abs(value) != math.inf:
        raise ConfigError(f"{field_name} must be at most {FLOAT_MAX:.4g} in magnitude (float32's "
                          f"largest, the models' precision), got {value!r}")


@dataclass(frozen=True)
class Range:
    """The rule "a number in this interval" of one field (see :func:`check_range`)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def check(self, field_name: str, value: Any) -> None:
        """Raise :class:`ConfigError` naming ``field_name`` unless ``value`` is in range."""
        check_range(field_name, value, low=self.low, high=self.high, low_open=self.low_open,
                    high_open=self.high_open)


@dataclass(frozen=True)
class OneOf:
    """The rule "one of these values" of one field (see :func:`check_choice`)."""

    allowed: tuple[Any, ...]

    def check(self, field_name: str, value: Any) -> None:
        """Raise :class:`ConfigError` naming ``field_name`` unless ``value`` is allowed."""
        check_choice(field_name, value, self.allowed)


Rule = Range | OneOf
"""The rule of one field."""


def check_rules(section: str, values: object, rules: Mapping[str, Rule]) -> None:
    """Check each field of ``values`` named in ``rules`` against its rule; None is skipped
    (the fields that may be None mean "not set" by it).

    Parameters
    ----------
    section : str
        The section's name in the config (``""`` for the top level), which prefixes the
        field names in errors.
    values : object
        A section (a dataclass instance) holding the fields as attributes.
    rules : mapping of str to Range or OneOf
        Field name to rule.
    """
    for name, rule in rules.items():
        value = getattr(values, name)
        if value is not None:
            rule.check(f"{section}.{name}" if section else name, value)


def _number(bound: float) -> str:
    """A bound as written in a config: ``1.0`` as ``1``, ``1e-05`` as is, :data:`INT_MAX` as
    ``2**63 - 1``."""
    if bound == INT_MAX:
        return "2**63 - 1"
    return str(int(bound)) if float(bound).is_integer() and abs(bound) < 2**53 else repr(bound)
