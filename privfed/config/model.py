"""The ``[model]`` section: the architecture."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from privfed.config.validation import ConfigError, Range, check_choice
from privfed.models import MODELS, is_import_path, parse_import_path

__all__ = ["ModelConfig"]


@dataclass(frozen=True)
class ModelConfig:
    """Model architecture.

    Attributes
    ----------
    name : str
        "logistic", "mlp" or "cnn"; or a user's model as an import path
        ``"package.module:factory"``, called as ``factory(input_shape, num_classes,
        **options)`` (the form is checked here, the import happens when the model is built).
        Input shape and classes come from the dataset.
    hidden : list of int
        Hidden layer widths of "mlp" (McMahan's 2NN: [200, 200]), each >= 1.
    options : dict of str to object
        Keyword arguments of a user's factory (an import-path ``name`` only).
    fix_for_dp : bool
        Under DP-SGD, let ``opacus.validators.ModuleValidator.fix`` replace the layers Opacus
        cannot train (BatchNorm -> GroupNorm); False: such a model is a configuration error.
    """

    name: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [200, 200])
    options: dict[str, Any] = field(default_factory=dict)
    fix_for_dp: bool = False

    def __post_init__(self) -> None:
        if is_import_path(self.name):
            try:
                parse_import_path(self.name)
            except ValueError as err:
                raise ConfigError(str(err)) from None
        else:
            try:
                check_choice("model.name", self.name, MODELS)
            except ConfigError as err:
                raise ConfigError(f"{err} or an import path 'package.module:factory'") from None
            if self.options:
                raise ConfigError(
                    f"model.options are keyword arguments of a user's factory (model.name = "
                    f"'package.module:factory'); model {self.name!r} takes none, got "
                    f"{sorted(self.options)}")
        if not self.hidden:
            raise ConfigError("model.hidden must be a non-empty list of widths >= 1, got []")
        for i, width in enumerate(self.hidden):
            Range(1).check(f"model.hidden[{i}]", width)

    def build_options(self) -> dict[str, Any]:
        """Keyword arguments for :func:`privfed.models.build_model`."""
        if is_import_path(self.name):
            return dict(self.options)
        return {"hidden": tuple(self.hidden)} if self.name == "mlp" else {}
