"""The ``[tracking]`` section: what a run records besides its results (metrics for
TensorBoard, checkpoints to resume from).

Not part of the config's identity (:meth:`~privfed.config.ExperimentConfig.short_hash`):
it changes what is recorded, never what is trained.
"""

from __future__ import annotations

from dataclasses import dataclass

from privfed.config.validation import Range, Rule, check_rules

__all__ = ["RULES", "TrackingConfig"]

RULES: dict[str, Rule] = {"checkpoint_every": Range(0)}
"""The rule of each numeric field."""


@dataclass(frozen=True)
class TrackingConfig:
    """Experiment trackers (off by default) and checkpoints.

    Attributes
    ----------
    tensorboard : bool
        Write one TensorBoard scalar per metric of ``metrics.jsonl`` per round into the
        run directory's ``tensorboard/`` (``pip install 'privfed[tensorboard]'``).
    checkpoint_every : int
        Save a checkpoint of an in-process run every this many rounds (and always when
        Ctrl-C or SIGTERM asks it to stop), from which the next ``privfed run`` of the
        config resumes (:mod:`privfed.checkpoint`); 0: only when asked to stop.
    """

    tensorboard: bool = False
    checkpoint_every: int = 10

    def __post_init__(self) -> None:
        check_rules("tracking", self, RULES)
