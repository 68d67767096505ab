"""Shared checks of the experiments' tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from privfed import jsonsafe
from privfed.clientdata import load_configured_dataset
from privfed.config import ExperimentConfig, load_config
from privfed.federated import evaluate
from privfed.models import build_model
from privfed.rundir import DIAGNOSTICS_PLOT, RUN_FILES


def _check_run_dir(run_dir: Path, config: ExperimentConfig) -> None:
    """``run_dir`` holds every file of a run directory (the README's table), its config is
    ``config``, and its ``model.pt`` loads into ``config``'s model, which scores the final
    accuracy of its summary."""
    plots = (DIAGNOSTICS_PLOT,) if config.privacy.mechanism != "none" else ()
    assert sorted(p.name for p in run_dir.iterdir() if p.name != "audit") == \
        sorted([*RUN_FILES, *plots])
    assert load_config(run_dir / "config.toml").short_hash() == config.short_hash()
    summary = jsonsafe.loads((run_dir / "summary.json").read_text(encoding="utf-8"),
                             keep=("name",))
    dataset = load_configured_dataset(config)
    model = build_model(config.model.name, dataset.input_shape, dataset.num_classes,
                        seed=config.seed, **config.model.build_options())
    model.load_state_dict(torch.load(run_dir / "model.pt")["state_dict"])
    _, accuracy = evaluate(model, torch.from_numpy(dataset.x_test),
                           torch.from_numpy(dataset.y_test))
    assert accuracy == pytest.approx(summary["final_accuracy"], abs=1e-9)


@pytest.fixture
def check_run_dir() -> Callable[[Path, ExperimentConfig], None]:
    """Assert that a run directory is complete and that its model is the config's."""
    return _check_run_dir
