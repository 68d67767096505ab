"""The experiment configuration: typed sections, loaded from TOML, validated on creation.

One module per section (``data``, ``model``, ``federation``, ``privacy``, ``secure``,
``compression``, ``audit``, ``tracking``), the rules between sections in ``rules``, the
shared checks in ``validation`` and a field's rule by name in ``fields`` (for constructors
that take the same values). Unknown keys are errors, never silently ignored; every error
names the field and the allowed values. Importing it loads neither the federated core, the
privacy and compression packages nor the cryptography.
"""

from privfed.config.audit import AuditConfig, AuditSizes
from privfed.config.compression import CompressionConfig, check_compatible
from privfed.config.data import DataConfig
from privfed.config.experiment import ExperimentConfig
from privfed.config.federation import FederationConfig
from privfed.config.fields import check_field
from privfed.config.loading import (
    apply_overrides,
    config_from_dict,
    load_config,
    resolve_data_paths,
)
from privfed.config.model import ModelConfig
from privfed.config.privacy import PrivacyConfig
from privfed.config.secure import SecureConfig
from privfed.config.tracking import TrackingConfig
from privfed.config.validation import ConfigError, check_choice, check_range

__all__ = [
    "AuditConfig",
    "AuditSizes",
    "CompressionConfig",
    "ConfigError",
    "DataConfig",
    "ExperimentConfig",
    "FederationConfig",
    "ModelConfig",
    "PrivacyConfig",
    "SecureConfig",
    "TrackingConfig",
    "apply_overrides",
    "check_choice",
    "check_compatible",
    "check_field",
    "check_range",
    "config_from_dict",
    "load_config",
    "resolve_data_paths",
]
