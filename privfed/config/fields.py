"""One field's rule by its dotted name, for constructors that take the same value.

The public constructors of privfed (server optimizers, the client sampler, local training)
check their arguments with :func:`check_field`, so that an argument and the config field it
comes from obey one rule with one wording::

    check_field("federation.server_momentum", momentum)
    # ConfigError: federation.server_momentum must be in [0, 1), got 1.5
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from privfed.config import audit, compression, data, experiment, federation, privacy, secure
from privfed.config.validation import Rule

__all__ = ["check_field"]

_RULES: Mapping[str, Mapping[str, Rule]] = {
    "": experiment.RULES,
    "data": data.RULES,
    "federation": federation.RULES,
    "privacy": privacy.RULES,
    "secure": secure.RULES,
    "compression": compression.RULES,
    "audit": audit.RULES,
}


def check_field(name: str, value: Any) -> None:
    """Raise :class:`ConfigError` naming ``name`` unless ``value`` obeys the field's rule.

    Parameters
    ----------
    name : str
        Dotted name of a config field with a range or a set of values, e.g.
        ``"federation.fraction"`` or ``"seed"``.
    value : object
        The value to check.

    Raises
    ------
    ConfigError
        If ``value`` breaks the rule.
    KeyError
        If ``name`` is not such a field (a programming error, not a user's).
    """
    section, _, key = name.rpartition(".")
    try:
        rule = _RULES[section][key]
    except KeyError:
        raise KeyError(f"no rule for config field {name!r}") from None
    rule.check(name, value)
