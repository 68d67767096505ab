"""The whole experiment configuration: every section, its identity and its TOML form."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import tomli_w

from privfed.config.audit import AuditConfig
from privfed.config.compression import CompressionConfig
from privfed.config.data import DataConfig
from privfed.config.federation import FederationConfig
from privfed.config.model import ModelConfig
from privfed.config.privacy import PrivacyConfig
from privfed.config.rules import check_cross_section
from privfed.config.secure import SecureConfig
from privfed.config.tracking import TrackingConfig
from privfed.config.validation import INT_MAX, ConfigError, Range, Rule, check_rules
from privfed.data.digest import module_token
from privfed.models import is_import_path

__all__ = ["FIELDS_SINCE_IDENTITIES", "ExperimentConfig", "RULES", "check_name", "default_name"]

_NAME_MAX = 100
_NAME = re.compile(rf"[\w\-+=@,][\w\-+=@,. ]{{0,{_NAME_MAX - 1}}}")

RULES: dict[str, Rule] = {"seed": Range(0, INT_MAX)}
"""The rule of each top-level field but ``name`` (checked by :class:`ExperimentConfig`)."""



FIELDS_SINCE_IDENTITIES: dict[str, tuple[str, ...]] = {
    "federation": ("drop_last", "cyclic_groups"),
    "privacy": ("diagnostics", "noise_cohort_size", "factorization", "bands"),
    "audit": ("one_shot_canaries",),
}
"""Fields added after run identities existed, by section: :meth:`ExperimentConfig.short_hash`
leaves each out at its default (which is what a run from before it trained), so every
earlier run keeps its identity; set to anything else, it is part of the identity."""

@dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines one run; a run is reproducible from its saved config.

    Every section checks its own fields when it is created, and this class the rules
    between sections (:func:`privfed.config.rules.check_cross_section`), so an invalid
    config never exists.

    Attributes
    ----------
    name : str
        Prefix of the run directory's name: one visible path component (letters, digits and
        ``-_.+=@,`` and spaces; not starting with a dot or a space, at most 100 characters).
        Unset (None): ``<dataset>-<model>`` (:func:`default_name`), set when the config is
        created, so the saved config holds it.
    seed : int
        The one seed, in [0, 2**63 - 1], every random stream is derived from (model init,
        partition, client sampling, batch order).
    output_dir : str
        Parent directory of run directories.
    data, model, federation, privacy, secure, compression, audit, tracking
        The sections (``tracking`` is not part of :meth:`short_hash`).
    """

    name: str | None = None
    seed: int = 0
    output_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    secure: SecureConfig = field(default_factory=SecureConfig)
    compression: CompressionConfig = field(default_factory=CompressionConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        if self.name is None:
            object.__setattr__(self, "name", default_name(self.data.dataset, self.model.name))
        check_name(self.name)
        check_rules("", self, RULES)
        check_cross_section(self)

    def clients_per_round(self) -> int:
        """Clients of a synchronous round: ``round(fraction * num_clients)``, at least 1
        (under Poisson sampling, the expected number, rounded; cyclic: the largest group,
        ``ceil(num_clients / cyclic_groups)``)."""
        fed, total = self.federation, self.data.num_clients
        if fed.cyclic_groups is not None:
            return -(-total // fed.cyclic_groups)
        return max(1, min(total, math.floor(fed.fraction * total + 0.5)))

    def planned_cohort_size(self) -> int:
        """The clients a secure-aggregation round is planned for: ``secure.cohort_size``,
        else FedBuff's buffer size, else :meth:`clients_per_round`."""
        if self.secure.cohort_size is not None:
            return self.secure.cohort_size
        if self.federation.buffer_size is not None:
            return self.federation.buffer_size
        return self.clients_per_round()

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of every field (None values included)."""
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        """TOML text that :func:`~privfed.config.load_config` reads back into an equal
        config: every key of every section, in order, an unset one (None) as a comment
        ``# key = <unset>``."""
        tree = self.to_dict()
        sections = [f.name for f in dataclasses.fields(self) if isinstance(tree[f.name], dict)]
        top = {k: v for k, v in tree.items() if k not in sections}
        parts = [_toml_keys(top)] + [_toml_section(name, tree[name]) for name in sections]
        return "\n".join(parts)

    def short_hash(self) -> str:
        """8 hex digits identifying everything that affects the results: every field (the
        audit's settings included), the content of the data files read
        (:meth:`DataConfig.content_tokens`) and of a user's model module; not where the
        data and the outputs live, nor which device computes, nor the ``[tracking]`` section.

        Reads the data files the first time (a digest per file, cached while the file is
        unchanged).
        """
        payload = self.to_dict()
        payload.pop("output_dir")
        payload.pop("tracking")
        payload["data"].pop("data_dir")
        payload["federation"].pop("device")
        for section, names in FIELDS_SINCE_IDENTITIES.items():
            values = getattr(self, section)
            defaults = {f.name: f.default for f in dataclasses.fields(values)}
            for name in names:
                if getattr(values, name) == defaults[name]:
                    payload[section].pop(name)
        content = self.data.content_tokens()
        if content:
            payload["data_content"] = content
        if is_import_path(self.model.name):
            payload["model_code"] = module_token(self.model.name)
        if self.data.is_site_data and self.data.dataset != "python":
            for where in ("path", "client_paths", "test_path"):  # their content stands in
                payload["data"].pop(where)
        if self.secure.kind == "masking" and self.secure.neighbourhood_degree is None:
            payload["secure"]["neighbourhood_degree"] = self._default_graph()
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:8]

    def _default_graph(self) -> str | None:
        """The masking graph an unset ``secure.neighbourhood_degree`` picks, as hashed: None
        where it is the complete graph (what unset meant before SecAgg+ became the default
        above ``FULL_GRAPH_MAX_COHORT`` clients, so those runs keep their identity), else
        the graph's name (the identity of the same config with it set explicitly)."""
        from privfed.secure.masking.params import default_neighbourhood

        graph = default_neighbourhood(self.planned_cohort_size())
        return None if graph == "full" else graph


def check_name(name: str) -> None:
    """Raise :class:`ConfigError` unless ``name`` is a safe run-directory prefix.

    A run directory is ``<output_dir>/<name>-<hash>``, so ``name`` must be one visible path
    component on every platform: no separators, no ``..``, nothing hidden (a leading dot),
    no control characters.
    """
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise ConfigError(
            f"name must be 1 to {_NAME_MAX} characters of letters, digits, spaces and -_.+=@, "
            f"not starting with a dot or a space (the run directory's name), got {name!r}")


def default_name(dataset: str, model: str) -> str:
    """The run name of a config that sets none: ``<dataset>-<model>``, a user's model
    (``package.module:factory``) by its factory's name, e.g. ``"mnist-cnn"``."""
    return f"{dataset}-{model.rpartition(':')[2] if is_import_path(model) else model}"


def _toml_keys(values: dict[str, Any]) -> str:
    """TOML lines of a table's plain keys, in order; None as ``# key = <unset>``."""
    return "".join(f"# {key} = <unset>\n" if value is None else tomli_w.dumps({key: value})
                   for key, value in values.items() if not isinstance(value, dict))


def _toml_section(name: str, values: dict[str, Any]) -> str:
    """TOML text of one section: its header, its plain keys, then its tables (e.g.
    ``[data.options]``)."""
    tables = {key: value for key, value in values.items() if isinstance(value, dict)}
    text = f"[{name}]\n{_toml_keys(values)}"
    return text + ("\n" + tomli_w.dumps({name: tables}) if tables else "")
