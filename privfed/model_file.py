"""A run directory's ``model.pt``: the final global model, self-describing.

``model.pt`` is one ``torch.save``'d dict of tensors, strings, numbers, lists and dicts only
(``torch.load(path, weights_only=True)`` reads it)::

    {"format": "privfed-model/1",
     "config_hash": "e22b83ea",
     "model": {"name": "mlp", "options": {"hidden": (200, 200)}, "seed": 0,
               "fix_for_dp": False, "input_shape": [64], "num_classes": 10},
     "preprocessing": {"dataset": "digits", "scaling": "standard"},
     "state_dict": {...}}   # the module's full state_dict, buffers included, on the CPU

``preprocessing`` names the transform the run applied to its inputs; it holds no statistic
of anyone's data (see :mod:`privfed.predict`). :func:`load_model` is the one-liner::

    model = privfed.load_model("runs/digits-mlp-e22b83ea")   # nn.Module in eval mode
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from privfed.config import ConfigError, ExperimentConfig, load_config

__all__ = ["MODEL_FILE", "MODEL_FORMAT", "build_saved_model", "load_model", "model_bytes",
           "model_record", "read_model", "verified_config"]

MODEL_FILE = "model.pt"
MODEL_FORMAT = "privfed-model/1"
"""The ``format`` of :func:`model_record`'s dict."""


def model_record(
    config: ExperimentConfig, module: nn.Module, input_shape: tuple[int, ...]
) -> dict[str, Any]:
    """What ``model.pt`` holds for ``module`` (the final global model) trained by ``config``.

    Parameters
    ----------
    config : ExperimentConfig
    module : torch.nn.Module
        Holding the final weights; its ``state_dict`` (buffers included) is saved, on the
        CPU, each tensor a copy of its own.
    input_shape : tuple of int
        One example's shape; the number of classes is the width of ``module``'s output.

    Returns
    -------
    dict
        ``format``, ``config_hash``, ``model``, ``preprocessing`` and ``state_dict``.
    """
    module.eval()
    device = next(module.parameters()).device
    with torch.no_grad():
        num_classes = int(module(torch.zeros(1, *input_shape, device=device)).shape[1])
    data = config.data
    return {
        "format": MODEL_FORMAT,
        "config_hash": config.short_hash(),
        "model": {"name": config.model.name, "options": config.model.build_options(),
                  "seed": config.seed, "fix_for_dp": _fixed_for_dp(config),
                  "input_shape": [int(n) for n in input_shape], "num_classes": num_classes},
        "preprocessing": {"dataset": data.dataset,
                          "scaling": data.site_scaling if data.is_site_data else data.scaling},
        "state_dict": {name: tensor.detach().cpu().clone()
                       for name, tensor in module.state_dict().items()},
    }


def _fixed_for_dp(config: ExperimentConfig) -> bool:
    """Whether the trained module was Opacus-fixed (BatchNorm -> GroupNorm)."""
    return config.privacy.mechanism == "local" and config.model.fix_for_dp


def verified_config(run_dir: str | Path) -> ExperimentConfig:
    """The config of the complete, intact run directory ``run_dir`` (every file matching
    its ``SHA256SUMS``, :func:`privfed.rundir.run_problems`).

    Raises
    ------
    ConfigError
        One line naming ``run_dir`` and its first problem.
    """
    from privfed.rundir import run_problems  # rundir imports this module

    run_dir = Path(run_dir)
    config_file = run_dir / "config.toml"
    if not config_file.is_file():
        raise ConfigError(f"RUN_DIR {run_dir}: not a run directory (no config.toml)")
    config = load_config(config_file)
    problems = run_problems(run_dir, config)
    if problems:
        raise ConfigError(f"RUN_DIR {run_dir}: refused, {problems[0]}")
    if not (run_dir / MODEL_FILE).is_file():
        raise ConfigError(f"RUN_DIR {run_dir}: holds no {MODEL_FILE}")
    return config


def read_model(run_dir: str | Path) -> dict[str, Any]:
    """``model.pt`` of the verified run directory ``run_dir`` (:func:`verified_config`).

    Raises
    ------
    ConfigError
        The directory fails its digest, or ``model.pt`` is of another format.
    """
    verified_config(run_dir)
    record = torch.load(Path(run_dir) / MODEL_FILE, weights_only=True)
    if not isinstance(record, Mapping) or record.get("format") != MODEL_FORMAT:
        raise ConfigError(f"RUN_DIR {run_dir}: {MODEL_FILE} is not of format {MODEL_FORMAT!r} "
                          "(written by an older privfed: train the run again)")
    return dict(record)


def build_saved_model(record: Mapping[str, Any]) -> nn.Module:
    """The module that :func:`model_record` described, holding its weights, in eval mode.

    Raises
    ------
    ConfigError
        The model cannot be built here (e.g. a user's factory not importable) or its
        ``state_dict`` does not fit (a module given to ``train_run`` in place of the
        config's model).
    """
    from privfed.models import build_model
    from privfed.privacy.modules import check_dp_module

    spec = record["model"]
    try:
        module = build_model(spec["name"], tuple(spec["input_shape"]), spec["num_classes"],
                             seed=spec["seed"], **spec["options"])
        if spec["fix_for_dp"]:
            module = check_dp_module(module, fix=True)
        module.load_state_dict(record["state_dict"])
    except (ValueError, RuntimeError) as err:
        raise ConfigError(f"model {spec['name']!r}: cannot rebuild it from {MODEL_FILE} "
                          f"({' '.join(str(err).split())[:200]})") from None
    return module.eval()


def load_model(run_dir: str | Path) -> nn.Module:
    """The final global model of the run directory ``run_dir``, ready to use.

    The directory must be complete and intact (every file matching ``SHA256SUMS``): an
    edited ``model.pt`` is refused. Inputs must be preprocessed as the run's were
    (``privfed predict`` does it; ``torch.load(run_dir / "model.pt")["preprocessing"]``
    names the transform).

    Parameters
    ----------
    run_dir : path
        E.g. ``"runs/digits-mlp-e22b83ea"``.

    Returns
    -------
    torch.nn.Module
        On the CPU, in eval mode; it maps a float32 batch ``(N, *input_shape)`` to logits
        ``(N, num_classes)``.

    Raises
    ------
    ConfigError
        The directory is not a complete, intact run with a model of this format.
    """
    return build_saved_model(read_model(run_dir))


def model_bytes(state: Mapping[str, Any]) -> bytes:
    """``torch.save`` of the dict ``state`` (a state dict, or a model record) as bytes that
    depend only on its contents and order (saved to a file, torch names the archive's
    entries after it)."""
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    return buffer.getvalue()
