"""The run directory: resolved config, per-round metrics, summary, plot and final model."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from privfed import jsonsafe
from privfed.config import ExperimentConfig
from privfed.federated.history import History
from privfed.privacy.randomness import REPRODUCIBLE_NOISE

__all__ = [
    "describe_epsilon", "release_history", "run_dir_for", "run_name", "summarize", "write_run",
]


def run_name(config: ExperimentConfig) -> str:
    """``<name>-<short hash of the config>``: the name of the config's run directory."""
    return f"{config.name}-{config.short_hash()}"


def run_dir_for(config: ExperimentConfig, engine: str = "inprocess") -> Path:
    """``<output_dir>/<name>-<short hash of the config>``, suffixed ``-<engine>`` for a run
    on another engine than the in-process one."""
    suffix = "" if engine == "inprocess" else f"-{engine}"
    return Path(config.output_dir) / f"{run_name(config)}{suffix}"


def summarize(config: ExperimentConfig, history: History, num_params: int) -> dict[str, Any]:
    """The headline figures of a finished run, as plain JSON-able data."""
    rounds = len(history.rounds)
    participations = sum(len(r.clients) for r in history.rounds)
    last = history.evaluated()[-1] if history.evaluated() else None
    return {
        "name": config.name,
        "config_hash": config.short_hash(),
        "dataset": config.data.dataset,
        "model": config.model.name,
        "num_params": num_params,
        "num_clients": config.data.num_clients,
        "rounds": rounds,
        "final_accuracy": last.test_accuracy if last else None,
        "final_loss": last.test_loss if last else None,
        "seconds_total": history.total("seconds"),
        "seconds_per_round": history.total("seconds") / rounds if rounds else None,
        "bytes_up_total": int(history.total("bytes_up")),
        "bytes_down_total": int(history.total("bytes_down")),
        "bytes_up_per_client_round": history.total("bytes_up") / participations
        if participations else None,
        "secure_aggregation": config.secure.kind,
        **{f"seconds_{stage}_total": sum(r.extra.get(f"seconds_{stage}", 0.0)
                                         for r in history.rounds)
           for stage in ("encode", "aggregate", "decode")},
        **_privacy_summary(config, history),
    }


def _privacy_summary(config: ExperimentConfig, history: History) -> dict[str, Any]:
    """The privacy spent by the end of training, as the mechanism reported it: the headline
    epsilon, the party it holds against, the epsilon against an outsider, and whether the
    noise can be regenerated from the config."""
    mechanism = config.privacy.mechanism
    if mechanism == "none":
        return {"privacy_mechanism": mechanism, "privacy_unit": None, "epsilon": None,
                "delta": None}
    last = history.rounds[-1].extra if history.rounds else {}
    return {
        "privacy_mechanism": mechanism,
        "privacy_unit": "record" if mechanism == "local" else "user",
        "epsilon": last.get("epsilon"),
        "epsilon_against": last.get("epsilon_against"),
        "epsilon_outsider": last.get("epsilon_outsider", last.get("epsilon")),
        "delta": last.get("delta"),
        "noise": last.get("noise"),
        "stop_reason": history.stop_reason,
    }


def describe_epsilon(summary: Mapping[str, Any], spec: str = ".2f") -> str:
    """One line for a run's privacy: e.g. ``"3.00 record vs server"``,
    ``"17.9 user vs server (7.94 vs outsider)"``, ending in ``"(noise reproducible from the
    config)"`` when the noise was seeded; ``"inf"`` without a mechanism."""
    if summary.get("privacy_mechanism", "none") == "none" or summary.get("epsilon") is None:
        return "inf"
    epsilon = summary["epsilon"]
    text = f"{epsilon:{spec}} {summary.get('privacy_unit') or ''}".rstrip()
    if summary.get("epsilon_against"):
        text += f" vs {summary['epsilon_against']}"
    outsider = summary.get("epsilon_outsider")
    if summary.get("epsilon_against") != "outsider" and outsider not in (None, epsilon):
        text += f" ({outsider:{spec}} vs outsider)"
    if summary.get("noise") == REPRODUCIBLE_NOISE:
        text += f" ({REPRODUCIBLE_NOISE})"
    return text


def release_history(config: ExperimentConfig, history: History) -> History:
    """What a run directory may hold of ``history``: without client ids when user-level DP
    samples clients (amplification by sampling assumes nobody learns who took part)."""
    sampled = config.federation.fraction < 1
    return history.without_participants() if config.privacy.user_level and sampled else history


def write_run(
    run_dir: str | Path,
    config: ExperimentConfig,
    history: History,
    summary: dict[str, Any],
    *,
    model: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``config.toml``, ``metrics.jsonl``, ``summary.json``, ``accuracy.png`` and,
    given the final global ``model`` (a state dict), ``model.pt``.

    Each file is written to a temporary name and renamed into place, so a reader never
    sees a half-written file; ``summary.json`` is written last and marks a complete run.
    The JSON files are strict JSON (:mod:`privfed.jsonsafe`: NaN as null, infinities as
    ``"inf"``/``"-inf"``); read them with :func:`privfed.jsonsafe.loads`.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(run_dir / "config.toml", config.to_toml())
    with _atomic_path(run_dir / "metrics.jsonl") as tmp:
        release_history(config, history).write_jsonl(tmp)
    if history.evaluated():
        from privfed.plots import plot_accuracy  # matplotlib loads only when a run is written

        with _atomic_path(run_dir / "accuracy.png") as tmp:
            plot_accuracy(history, tmp, title=f"{config.name} ({config.short_hash()})")
    if model is not None:
        with _atomic_path(run_dir / "model.pt") as tmp:
            torch.save(dict(model), tmp)
    _atomic_write(run_dir / "summary.json", jsonsafe.dumps(summary, indent=2) + "\n")
    return run_dir


def _atomic_write(path: Path, text: str) -> None:
    with _atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as out:
        out.write(text)


@contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
