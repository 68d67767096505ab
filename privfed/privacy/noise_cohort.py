"""Noise calibrated for a deployed cohort larger than the simulated one.

pfl-research's ``noise_cohort_size`` (Apple, ``benchmarks/utils/argument_parsing.py``,
``parse_mechanism``; ``pfl/privacy/privacy_accountant.py``, ``noise_scale``): simulate a
small cohort for speed while adding, per client, the noise a deployment with a large
cohort would add, so the simulation shows the utility of that deployment. pfl-research
accounts the noise multiplier z at sampling rate ``noise_cohort_size / population`` and
adds noise of std ``z * S * cohort_size / noise_cohort_size`` to the simulated sum.

privfed's deployment keeps the simulation's sampling rate q (its population is C / q; a
separate deployed population is not offered): with c = qK expected simulated clients and
C deployed ones, the deployment adds ``N(0, (z S)^2)`` to its sum of C clipped updates,
whose mean then carries noise of std ``z S / C``; the simulation adds ``N(0, (z S c/C)^2)``
to its sum of c, whose mean (divided by c) carries the same ``z S / C``. The simulation's
own released model therefore has only the noise multiplier ``z c / C`` at rate q: its own
epsilon is larger than the deployment's, and both are reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["NoiseCohort"]


@dataclass(frozen=True)
class NoiseCohort:
    """The simulated cohort c and the deployed cohort C whose noise it carries.

    Attributes
    ----------
    simulated : float
        c = qK, the simulation's expected clients per round (> 0).
    deployed : int
        C = ``privacy.noise_cohort_size``, at least c.

    Raises
    ------
    ValueError
        ``deployed < simulated`` (naming both fields) or ``simulated <= 0``.
    """

    simulated: float
    deployed: int

    def __post_init__(self) -> None:
        if not self.simulated > 0:
            raise ValueError(f"the simulated cohort must be > 0 clients, got {self.simulated}")
        if self.deployed < self.simulated:
            raise ValueError(
                f"privacy.noise_cohort_size ({self.deployed}) must be at least the simulated "
                f"cohort of {self.simulated:g} expected clients per round "
                "(federation.fraction * data.num_clients)")

    @property
    def scale(self) -> float:
        """``c / C`` in (0, 1]: the factor on the deployment's noise std of the sum."""
        return self.simulated / self.deployed

    def run_noise_multiplier(self, noise_multiplier: float) -> float:
        """The noise multiplier the simulated sum actually carries: ``z c / C``."""
        return noise_multiplier * self.scale

    def metrics(self) -> dict[str, Any]:
        """``cohort_size`` (c, expected) and ``noise_cohort_size`` (C)."""
        return {"cohort_size": self.simulated, "noise_cohort_size": self.deployed}
