"""Reading a config: TOML file, ``section.key=value`` overrides, type checks from annotations."""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from privfed.config.audit import AuditConfig
from privfed.config.experiment import ExperimentConfig
from privfed.config.validation import ConfigError, check_number_type

__all__ = ["DATA_PATHS", "apply_overrides", "config_from_dict", "load_config", "resolve_data_paths"]


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> ExperimentConfig:
    """Load a TOML config (or the defaults when ``path`` is None) and apply overrides.

    Parameters
    ----------
    path : str or Path, optional
        A TOML file whose top-level keys and tables mirror :class:`ExperimentConfig`.
    overrides : iterable of str
        ``"section.key=value"`` strings; the value is parsed as TOML (``0.1``, ``true``,
        ``[64, 64]``, ``"text"``) and bare words are taken as strings (``data.dataset=mnist``).

    Notes
    -----
    A relative data path (:data:`DATA_PATHS`) is made absolute
    (:func:`resolve_data_paths`): one in the file against the file's directory, one of an
    override against the working directory; so a saved config reads the same data from
    anywhere. The run's identity hashes the data's content, not its path.

    Raises
    ------
    ConfigError
        On a missing or malformed file, an unknown key, a wrong type or an invalid value.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: not valid TOML: {err}") from None
        raw = resolve_data_paths(raw, Path(path).parent)
    return config_from_dict(resolve_data_paths(apply_overrides(raw, overrides), Path.cwd()))


DATA_PATHS = ("data_dir", "path", "client_paths", "test_path")
"""The ``[data]`` fields that name files or directories (but for ``dataset = "python"``,
whose ``path``, ``client_paths`` and ``test_path`` are import paths)."""


def resolve_data_paths(raw: Any, root: Path) -> Any:
    """A copy of the plain config ``raw`` with each relative data path (:data:`DATA_PATHS`,
    ``~`` expanded) made absolute against ``root``.

    Parameters
    ----------
    raw : mapping
        Nested plain data, as read from TOML (anything else, and values of the wrong type,
        are returned as they are for :func:`config_from_dict` to name).
    root : Path
        What a relative path is relative to.
    """
    data = raw.get("data") if isinstance(raw, Mapping) else None
    if not isinstance(data, Mapping):
        return raw
    result = dict(raw)
    keys = DATA_PATHS[:1] if data.get("dataset") == "python" else DATA_PATHS
    result["data"] = {key: _absolute(value, root) if key in keys else value
                      for key, value in data.items()}
    return result


def _absolute(value: Any, root: Path) -> Any:
    """``value`` (a path or a list of them) made absolute against ``root``; anything else
    unchanged."""
    if isinstance(value, list):
        return [_absolute(item, root) for item in value]
    if not isinstance(value, str):
        return value
    return os.path.abspath(os.path.join(root, os.path.expanduser(value)))


def apply_overrides(raw: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``"dotted.key=value"`` override set in it."""
    result = json.loads(json.dumps(raw))
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        *parents, leaf = key.strip().split(".")
        target = result
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        target[leaf] = _parse_value(text.strip())
    return result


def config_from_dict(raw: Mapping[str, Any]) -> ExperimentConfig:
    """Build and validate an :class:`ExperimentConfig` from nested plain data.

    An empty ``attacks`` table (what configs saved before the ``[audit]`` section held) is
    accepted and ignored; one with keys is an error that names ``[audit]``.
    """
    if isinstance(raw, Mapping) and "attacks" in raw:
        if raw["attacks"] != {}:
            raise ConfigError(
                "the [attacks] section is now [audit] (allowed keys: "
                f"{[f.name for f in dataclasses.fields(AuditConfig)]}); got attacks = "
                f"{raw['attacks']!r}"
            )
        raw = {k: v for k, v in raw.items() if k != "attacks"}
    return _build(ExperimentConfig, raw, prefix="")


def _build(cls: type, raw: Mapping[str, Any], prefix: str) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a table, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        where = prefix.rstrip(".") or "top level"
        raise ConfigError(
            f"unknown key(s) {', '.join(prefix + k for k in unknown)} in {where}; "
            f"allowed: {sorted(fields) or 'none (this section has no options yet)'}"
        )
    values = {}
    for name, value in raw.items():
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            values[name] = _build(kind, value, f"{prefix}{name}.")
        else:
            values[name] = _coerce(f"{prefix}{name}", value, kind)
    try:
        return cls(**values)
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _coerce(field_name: str, value: Any, kind: Any) -> Any:
    """Check ``value`` against the annotation ``kind``; ints are accepted as floats; a number
    must fit its type (:func:`~privfed.config.validation.check_number_type`)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _coerce(field_name, value, inner[0])
        for option in inner:
            try:
                return _coerce(field_name, value, option)
            except ConfigError:
                continue
        names = " or ".join(getattr(a, "__name__", str(a)) for a in inner)
        raise ConfigError(
            f"{field_name} must be of type {names}, got {type(value).__name__} {value!r}"
        )
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{field_name} must be a list, got {value!r}")
        return [_coerce(f"{field_name}[{i}]", v, args[0]) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{field_name} must be a table, got {value!r}")
        return {str(k): _coerce(f"{field_name}.{k}", v, args[1]) for k, v in value.items()}
    if kind is Any:
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        check_number_type(field_name, value, float)
        value = float(value)
    if kind is int and isinstance(value, bool):
        raise ConfigError(f"{field_name} must be an integer, got {value!r}")
    if not isinstance(value, kind):
        raise ConfigError(
            f"{field_name} must be of type {kind.__name__}, got {type(value).__name__} {value!r}"
        )
    check_number_type(field_name, value)
    return value


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
