"""Where the randomness of a privacy mechanism comes from: seeded or cryptographically secure.

The noise of a DP mechanism and its sampling (DP-SGD's Poisson batches, user-level DP's
Poisson client sampling) must belong to the party that adds them: if another party can
regenerate the noise, it subtracts it and the guarantee is void. Two sources:

* :class:`SecureNoise`: a ChaCha20 keystream keyed from ``os.urandom``
  (:class:`~privfed.privacy.csprng.ChaChaRandom`). Nobody, the party itself included, can
  regenerate it. Always used on the Flower engines, and in-process with
  ``privacy.secure_mode = true``.
* :class:`SeededNoise`: PyTorch / NumPy generators seeded from the experiment seed, so that
  a run is reproducible from its config, for research. Anyone holding the config (which every
  run directory contains) can regenerate and subtract this noise; results say "noise
  reproducible from the config" beside the epsilon.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch

from privfed.federated.sampling import derive_seed

__all__ = [
    "NoisePolicy",
    "NoiseSource",
    "REPRODUCIBLE_NOISE",
    "SecureNoise",
    "SeededNoise",
]

REPRODUCIBLE_NOISE = "noise reproducible from the config"
"""What results say beside an epsilon whose noise was seeded from the config."""


class NoiseSource(ABC):
    """The random draws a privacy mechanism makes."""

    reproducible: bool
    """Whether the draws can be regenerated from the experiment config."""

    @abstractmethod
    def normal(self, std: torch.Tensor | float, size: int) -> torch.Tensor:
        """``size`` float32 draws of N(0, std^2); ``std`` a scalar or a (size,) tensor."""

    @abstractmethod
    def subsample(self, n: int, rate: float) -> torch.Tensor:
        """Poisson subsampling: the int64 indices of ``range(n)``, each kept with
        probability ``rate`` independently (possibly none)."""

    @abstractmethod
    def uniform(self, size: int) -> np.ndarray:
        """``size`` float64 draws of U[0, 1)."""

    @abstractmethod
    def skellam(self, mu: float, size: int) -> np.ndarray:
        """``size`` int64 draws of Sk(mu) = Poisson(mu) - Poisson(mu) (variance 2 mu)."""


class SeededNoise(NoiseSource):
    """Draws from seeded PyTorch (normal, subsample) and NumPy (uniform, Skellam) generators.

    Parameters
    ----------
    seed : int, optional
        Seed of both generators.
    generator : torch.Generator, optional
        Use this PyTorch generator (e.g. the one that orders a client's batches) instead of
        a new one; then ``seed`` only seeds the NumPy generator.
    """

    reproducible = True

    def __init__(self, seed: int = 0, generator: torch.Generator | None = None) -> None:
        self._seed = seed
        self._torch = generator
        self._numpy: np.random.Generator | None = None

    @property
    def torch_generator(self) -> torch.Generator:
        """The PyTorch generator (created from the seed on first use)."""
        if self._torch is None:
            self._torch = torch.Generator().manual_seed(self._seed)
        return self._torch

    @property
    def numpy_generator(self) -> np.random.Generator:
        """The NumPy generator (created from the seed on first use)."""
        if self._numpy is None:
            self._numpy = np.random.default_rng(self._seed)
        return self._numpy

    def normal(self, std: torch.Tensor | float, size: int) -> torch.Tensor:
        # Bit for bit torch.normal(zeros, std): PyTorch draws N(0, 1) and multiplies by std;
        # doing it here skips the zeros and the broadcast (a third of a DP-SGD step's draw).
        if not isinstance(std, float | int):
            std = torch.as_tensor(std, dtype=torch.float32)
        return torch.randn(size, generator=self.torch_generator).mul_(std)

    def subsample(self, n: int, rate: float) -> torch.Tensor:
        # What Opacus's UniformWithReplacementSampler draws for one batch.
        mask = torch.rand(n, generator=self.torch_generator) < rate
        return mask.nonzero(as_tuple=False).reshape(-1)

    def uniform(self, size: int) -> np.ndarray:
        return self.numpy_generator.random(size)

    def skellam(self, mu: float, size: int) -> np.ndarray:
        rng = self.numpy_generator
        return rng.poisson(mu, size) - rng.poisson(mu, size)


class SecureNoise(NoiseSource):
    """Draws from a ChaCha20 keystream keyed from ``os.urandom`` (fresh per object)."""

    reproducible = False

    def __init__(self) -> None:
        from privfed.privacy.csprng import ChaChaRandom

        self._rng = ChaChaRandom()

    def normal(self, std: torch.Tensor | float, size: int) -> torch.Tensor:
        std = torch.as_tensor(std, dtype=torch.float64).expand(size).numpy()
        return torch.from_numpy(self._rng.normal(size, std)).float()

    def subsample(self, n: int, rate: float) -> torch.Tensor:
        return torch.from_numpy(np.flatnonzero(self._rng.bernoulli(n, rate)))

    def uniform(self, size: int) -> np.ndarray:
        return self._rng.random(size)

    def skellam(self, mu: float, size: int) -> np.ndarray:
        return self._rng.skellam(mu, size)


@dataclass(frozen=True)
class NoisePolicy:
    """Which source every privacy mechanism of a run draws from.

    Attributes
    ----------
    secure : bool
        :class:`SecureNoise` everywhere; else :class:`SeededNoise` from ``seed``.
    seed : int
        Root of the seeded streams (derive one from the experiment seed).
    """

    secure: bool
    seed: int = 0

    def source(self, *stream: int) -> NoiseSource:
        """The source of one named stream (e.g. ``(central stream, round)``)."""
        if self.secure:
            return SecureNoise()
        return SeededNoise(derive_seed(self.seed, *stream))

    def around(self, generator: torch.Generator) -> NoiseSource:
        """A source for a party that already holds a seeded ``generator`` (e.g. a client's
        batch order): that generator when seeded, a fresh secure source when secure."""
        return SecureNoise() if self.secure else SeededNoise(generator=generator)

    @property
    def label(self) -> str:
        """"secure" or :data:`REPRODUCIBLE_NOISE`."""
        return "secure" if self.secure else REPRODUCIBLE_NOISE
