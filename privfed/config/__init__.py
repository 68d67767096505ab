"""The experiment configuration: typed sections, loaded from TOML, validated on creation.

Unknown keys are errors, never silently ignored; every error names the field and the
allowed values.
"""

from privfed.config.loading import apply_overrides, config_from_dict, load_config
from privfed.config.sections import (
    AttacksConfig,
    CompressionConfig,
    DataConfig,
    ExperimentConfig,
    FederationConfig,
    ModelConfig,
    PrivacyConfig,
    SecureConfig,
)
from privfed.config.validation import ConfigError

__all__ = [
    "AttacksConfig",
    "CompressionConfig",
    "ConfigError",
    "DataConfig",
    "ExperimentConfig",
    "FederationConfig",
    "ModelConfig",
    "PrivacyConfig",
    "SecureConfig",
    "apply_overrides",
    "config_from_dict",
    "load_config",
]
