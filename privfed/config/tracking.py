"""The ``[tracking]`` section: where a run's per-round metrics go besides ``metrics.jsonl``.

Not part of the config's identity (:meth:`~privfed.config.ExperimentConfig.short_hash`):
it changes what is recorded, never what is trained.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TrackingConfig"]


@dataclass(frozen=True)
class TrackingConfig:
    """Experiment trackers, off by default.

    Attributes
    ----------
    tensorboard : bool
        Write one TensorBoard scalar per metric of ``metrics.jsonl`` per round into the
        run directory's ``tensorboard/`` (``pip install 'privfed[tensorboard]'``).
    """

    tensorboard: bool = False
