"""Per-round DP diagnostics: how much clipping and noise did to the aggregate.

Two kinds of figure, by what releasing them costs (``privacy.diagnostics``):

* **private** (the default; :func:`noise_figures`, :func:`estimated_clipped_fraction`):
  functions of public parameters and of what the run releases anyway, so post-processing
  of an accounted mechanism: the noise std ``sigma`` per coordinate of the noisy sum and
  its root-mean-square norm ``sqrt(d) sigma``, the signal-to-noise ratio estimated from the
  released noisy sum, and under adaptive clipping the clipped fraction estimated from the
  noisy clip-bit sum the clip norm is updated from.
* **exact** (opt-in; :func:`exact_noise_figures` and the clipped counts of
  :class:`~privfed.privacy.clipping.ClipStage` and the DP-SGD trainers): the true fraction
  of clipped updates or examples and the true signal-to-noise ratio, statistics of the
  clients' data without noise and outside the accounting (:data:`EXACT_KEYS`).

Every norm is of the sum over the round's clients (the noise std ``z S`` is defined on it);
the signal-to-noise ratio ``||mean|| / ||noise / qK||`` is the same on the mean.
"""

from __future__ import annotations

import math

import torch

__all__ = ["EXACT_KEYS", "NOT_PRIVATE", "PRIVATE_KEYS", "estimated_clipped_fraction",
           "exact_noise_figures", "noise_figures"]

NOT_PRIVATE = "diagnostics not private"
"""What a run with ``privacy.diagnostics = "exact"`` says beside its epsilon: it released
statistics of the data that the epsilon does not cover."""

EXACT_KEYS = ("clipped_fraction", "clipped_example_fraction", "signal_norm", "noise_norm",
              "snr")
"""The ``RoundRecord.extra`` keys only ``privacy.diagnostics = "exact"`` writes."""

PRIVATE_KEYS = ("noise_std", "noise_norm_expected", "snr_estimate", "clipped_fraction_estimate")
"""The diagnostics keys of the default (private) history."""


def noise_figures(noisy_sum: torch.Tensor, noise_std: float) -> dict[str, float]:
    """The private figures of a released noisy sum ``Y = X + N``, ``N ~ N(0, sigma^2 I_d)``.

    ``snr_estimate = sqrt(max(0, ||Y||^2 - d sigma^2)) / (sqrt(d) sigma)``: since
    ``E||Y||^2 = ||X||^2 + d sigma^2`` for N independent of X, the numerator estimates the
    signal norm ``||X||`` (its square has standard deviation
    ``sqrt(2 d sigma^4 + 4 ||X||^2 sigma^2)``, so the estimate is informative once ``||X||^2``
    is well above ``sqrt(2d) sigma^2``) and the denominator is the noise's root-mean-square
    norm ``sqrt(E||N||^2)``. A function of the released sum and public parameters only, so it
    costs no privacy (post-processing).

    Parameters
    ----------
    noisy_sum : torch.Tensor
        ``(d,)`` float32, the released noisy sum of the update coordinates (no clip bit).
    noise_std : float
        sigma, the public per-coordinate std of the noise in the sum, > 0.

    Returns
    -------
    dict
        ``noise_std`` (sigma), ``noise_norm_expected`` (``sqrt(d) sigma``), ``snr_estimate``.
    """
    d = noisy_sum.numel()
    expected = math.sqrt(d) * noise_std
    energy = float(torch.linalg.vector_norm(noisy_sum.double())) ** 2
    signal = math.sqrt(max(0.0, energy - expected**2))
    return {"noise_std": noise_std, "noise_norm_expected": expected,
            "snr_estimate": signal / expected}


def exact_noise_figures(signal: torch.Tensor, noise: torch.Tensor) -> dict[str, float]:
    """The exact figures of a noisy sum, for the party that added the noise (central DP's
    server): ``signal_norm = ||X||`` (the clipped sum before noise), ``noise_norm = ||N||``
    (the noise drawn) and ``snr = ||X|| / ||N||`` (``inf`` for a zero noise draw).

    Parameters
    ----------
    signal, noise : torch.Tensor
        ``(d,)`` float32, the update coordinates of the sum and of the noise (no clip bit).
    """
    signal_norm = float(torch.linalg.vector_norm(signal.double()))
    noise_norm = float(torch.linalg.vector_norm(noise.double()))
    snr = signal_norm / noise_norm if noise_norm else math.inf
    return {"signal_norm": signal_norm, "noise_norm": noise_norm, "snr": snr}


def estimated_clipped_fraction(noisy_bit_sum: float, expected_clients: float) -> float:
    """Adaptive clipping's private estimate of the clipped fraction, ``1 - b``, from the
    noisy sum of centred clip bits the clip norm is updated from (Andrew et al. 2021,
    Alg. 1: ``b = noisy_bit_sum / qK + 1/2``): ``1/2 - noisy_bit_sum / qK``. Noisy and over
    the expected cohort qK, so it may leave [0, 1]; the new clip norm reveals it anyway.
    """
    return 0.5 - noisy_bit_sum / expected_clients
