"""The ``[model]`` section: the architecture."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from privfed.config.validation import ConfigError, Range, check_choice
from privfed.models import MODELS

__all__ = ["ModelConfig"]


@dataclass(frozen=True)
class ModelConfig:
    """Model architecture.

    Attributes
    ----------
    name : str
        "logistic", "mlp" or "cnn"; input shape and classes come from the dataset.
    hidden : list of int
        Hidden layer widths of "mlp" (McMahan's 2NN: [200, 200]), each >= 1.
    """

    name: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [200, 200])

    def __post_init__(self) -> None:
        check_choice("model.name", self.name, MODELS)
        if not self.hidden:
            raise ConfigError("model.hidden must be a non-empty list of widths >= 1, got []")
        for i, width in enumerate(self.hidden):
            Range(1).check(f"model.hidden[{i}]", width)

    def options(self) -> dict[str, Any]:
        """Keyword arguments for :func:`privfed.models.build_model`."""
        return {"hidden": tuple(self.hidden)} if self.name == "mlp" else {}
