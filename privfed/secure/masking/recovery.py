"""Recovering a seed from Shamir shares of which some may be wrong.

The server knows what every seed must be: the self-mask seed's SHA-256 commitment and the
mask key's public key are in the owner's signed advert. When the ``t`` shares of smallest
index do not give a seed that matches, :func:`recover_verified` tries other ``t``-subsets of
the shares received, in a fixed order, until one recovers a seed that verifies; the shares
off the polynomial through that subset are the bad ones. ``t`` shares that verify determine
the polynomial, so a share ``j`` outside them agrees with it exactly when swapping it in for
one of them recovers the same seed (its Lagrange coefficient at 0 is never zero).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from itertools import combinations, islice

from privfed.secure.errors import ThresholdError

from .shamir import combine_secrets

MAX_SUBSETS = 4096
"""Most ``t``-subsets of one seed's shares tried before the recovery gives up."""
_BATCH = 64  # subsets interpolated in one call


@dataclass(frozen=True)
class Recovery:
    """A seed recovered from shares of which some disagree with it.

    Attributes
    ----------
    secret : bytes
        The recovered seed (it verified).
    bad : tuple of int
        Shamir indices whose shares are off the polynomial that gives ``secret``, sorted.
    """

    secret: bytes
    bad: tuple[int, ...]


def recover_verified(
    shares: Mapping[int, bytes],
    threshold: int,
    verify: Callable[[bytes], bool],
    *,
    who: str,
    max_subsets: int = MAX_SUBSETS,
) -> Recovery:
    """Find ``threshold`` shares that recover a seed ``verify`` accepts; name the others.

    Subsets are tried by the largest index they use, smallest first (the ``t`` smallest
    indices, then every subset with the ``(t+1)``-th, ...), dropping early indices first:
    ``e`` bad shares among the first ``t + e`` indices are got round within
    ``C(t + e, e)`` subsets.

    Parameters
    ----------
    shares : Mapping[int, bytes]
        ``{Shamir index: share}`` of one seed, at least ``threshold`` of them.
    threshold : int
        The sharing threshold ``t``.
    verify : callable
        Whether a candidate seed is the committed one.
    who : str
        Names the seed's owner in errors.
    max_subsets : int
        Give up after this many subsets.

    Returns
    -------
    Recovery

    Raises
    ------
    ThresholdError
        No subset within ``max_subsets`` (or none at all) recovers a seed that verifies:
        too many bad shares to tell which.
    """
    indices = sorted(shares)
    tried = 0
    subsets = _subsets(indices, threshold)
    while tried < max_subsets:
        batch = list(islice(subsets, min(_BATCH, max_subsets - tried)))
        if not batch:
            break
        tried += len(batch)
        candidates = combine_secrets(
            {k: {i: shares[i] for i in subset} for k, subset in enumerate(batch)}, threshold
        )
        for k, secret in candidates.items():
            if verify(secret):
                return Recovery(secret, _disagreeing(shares, batch[k], threshold, secret))
    raise ThresholdError(
        f"{who}: none of {tried} subsets of {threshold} of its {len(indices)} shares "
        f"(indices {indices}) recovers the committed seed: too many wrong shares to tell which"
    )


def _subsets(indices: list[int], t: int) -> Iterator[tuple[int, ...]]:
    """Every ``t``-subset of ``indices`` once, ordered by its largest member, then by the
    members it drops (earliest dropped first)."""
    for last in range(t - 1, len(indices)):
        head = indices[:last]
        for dropped in combinations(range(last), last - (t - 1)):
            gone = set(dropped)
            yield (*(x for p, x in enumerate(head) if p not in gone), indices[last])


def _disagreeing(
    shares: Mapping[int, bytes], good: tuple[int, ...], t: int, secret: bytes
) -> tuple[int, ...]:
    """Indices outside ``good`` whose share is off the polynomial through ``good``."""
    others = [i for i in sorted(shares) if i not in good]
    if not others:
        return ()
    base = {i: shares[i] for i in good[1:]}
    swapped = combine_secrets({j: {**base, j: shares[j]} for j in others}, t)
    return tuple(j for j in others if swapped[j] != secret)
