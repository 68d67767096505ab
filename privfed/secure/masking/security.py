r"""Threshold ``t`` and SecAgg+ degree ``k`` of the masking protocol, derived from a threat model.

Setting
-------
A round has a cohort of ``n`` clients. With the *complete graph* every client Shamir-shares its
two seeds (self-mask seed ``b_u`` and pairwise-key seed ``s_u``) ``t``-of-``n`` with everyone
(Bonawitz et al., CCS 2017). With *SecAgg+* degree ``k`` (even; Bell et al., CCS 2020) the
clients sit in a cyclic order given by a hash of the round id and client id
(:func:`~privfed.secure.masking.neighbours`), each linked to the ``k/2`` clients on either side
(a Harary / circulant graph). Client ``u``'s *group* is ``u`` and its ``k`` neighbours,
``g = k + 1`` members, and ``u`` shares ``t``-of-``g`` within it. The complete graph is the case
``k = n - 1``, ``g = n``.

Threat model (:class:`ThreatModel`): a malicious server colluding with up to
``nC = floor(corrupt_fraction * n)`` clients; up to ``nD = floor(dropout_fraction * n)``
clients drop out. With Bonawitz's consistency round every honest client reveals, for each
member of its group, at most one of that member's two shares, and only once.

The three conditions
--------------------
Our own evaluation, for *our* graph, of the three conditions of Bell et al. (2020, Sec. 3-4:
the graph must keep the honest survivors connected, no client may have too many corrupt
neighbours, and every client must keep enough surviving neighbours):

1. **Share privacy.** Let ``u`` be honest with ``C_u`` corrupt clients among its ``k``
   neighbours. The adversary holds both shares of the ``C_u`` corrupt members; each of the
   ``g - C_u`` honest members releases at most one of ``u``'s two shares, say ``x`` of them the
   ``b_u``-share and ``y`` the ``s_u``-share, ``x + y <= g - C_u``. Getting ``t`` shares of
   both seeds (which unmasks ``x_u`` alone) needs ``C_u + x >= t`` and ``C_u + y >= t``, so
   ``2t <= 2 C_u + x + y <= g + C_u``. Hence ``u`` is safe whenever ``2t > g + C_u``.
   Under a uniformly random order the ``k`` neighbours of ``u`` are a uniform ``k``-subset of
   the other ``n - 1`` clients, so ``C_u ~ Hypergeometric(n - 1, nC, k)`` and, by a union bound
   over clients, ``P1 = n * P[C_u >= 2t - g]``. Complete graph: ``C_u = nC`` for every honest
   ``u``, so the condition is the deterministic ``2t > n + nC`` (:func:`min_threshold`).
2. **Connectivity.** The server learns a sum over a set ``S`` of survivors only if every
   pairwise mask between ``S`` and the other survivors cancels, so the honest survivors must
   stay connected once the corrupt and dropped clients (``R``, ``|R| <= m = nC + nD``) are
   removed -- otherwise it learns the partial sum of each component. In the circulant graph
   with links up to distance ``k/2``, two consecutive (in the cyclic order) remaining nodes
   are adjacent unless the run of removed nodes between them has length ``>= k/2``, so
   removing ``R`` can disconnect the rest only if some ``k/2`` cyclically consecutive
   positions all lie in ``R``. For a uniformly random order, a fixed window of ``j = k/2``
   positions lies in ``R`` with probability ``C(|R|, j) / C(n, j) <= C(m, j) / C(n, j)``; a
   union bound over the ``n`` windows gives ``P2 <= n * C(m, j) / C(n, j)``. (A disconnection
   needs two such runs; Google's ``graph_parameter_finder`` uses that tighter two-gap count,
   we keep the simpler, larger bound.) Complete graph: ``P2 = 0``; the complete-graph
   conditions below imply at least one honest survivor.
3. **Correctness.** The server can rebuild ``b_u`` (survivor) or ``s_u`` (dropped) only from
   ``t`` surviving group members. Conservatively counting ``u`` itself as dropped, ``u`` keeps
   ``k - D_u`` surviving holders, ``D_u ~ Hypergeometric(n - 1, nD, k)`` dropped neighbours
   (if ``u`` itself is one of the ``nD`` the count is stochastically smaller, so the bound
   still holds). By a union bound ``P3 = n * P[D_u > k - t]``. Complete graph: ``t <= n - nD``.

Requirement: ``P1 + P2 <= 2**-security_bits`` and ``P3 <= 2**-correctness_bits``; all
comparisons are made in log2. Tails are exact: the hypergeometric log-pmf of
:data:`scipy.stats.hypergeom` summed from the top in log space, binomials via
:func:`math.lgamma`. The complete graph has ``P1 = P2 = P3 = 0`` once its deterministic
conditions hold (reported as ``-inf``).

Assumptions (outside this module's control)
-------------------------------------------
* The corrupt set and the dropout set are fixed independently of the cyclic order, i.e. before
  the round id that seeds the order is known, and the server cannot grind round ids. An
  adversary that picks corruptions, or a server that *pretends* honest clients dropped, after
  seeing the order is not covered by the probabilities of conditions 1-3 (e.g. dropping two
  runs of ``k/2`` clients cuts the ring).
* ``nC`` and ``nD`` are computed from the decimal the fraction prints as
  (``Fraction(repr(x))``), so ``0.29 * 100`` counts 29 clients, not the 28 that binary
  floating point would give.

References
----------
K. Bonawitz et al., "Practical Secure Aggregation for Privacy-Preserving Machine Learning",
CCS 2017 (threshold ``2t > n + nC`` against a malicious server with the consistency round).
J. H. Bell, K. A. Bonawitz, A. Gascon, T. Lepoint, M. Raykova, "Secure Single-Server
Aggregation with (Poly)Logarithmic Overhead", CCS 2020 (Harary-graph SecAgg+, the three
conditions above).
"""

from __future__ import annotations

import functools
import math
import operator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from privfed.secure.errors import InvalidInputError, ThresholdError

from .sparse_bounds import LN2, Graph, fit_threshold, log_disconnection, smallest_degree

__all__ = ["RoundParameters", "ThreatModel", "min_threshold", "round_parameters"]


def _fraction(value: Any, name: str, low: float, high: float, *, high_open: bool) -> None:
    """Check that ``value`` is a real number in ``[low, high)`` (or ``[low, high]``)."""
    ok = (
        not isinstance(value, bool)
        and isinstance(value, int | float | np.integer | np.floating)
        and math.isfinite(float(value))
        and low <= float(value)
        and (float(value) < high if high_open else float(value) <= high)
    )
    if not ok:
        bracket = ")" if high_open else "]"
        raise InvalidInputError(f"{name}={value!r}; allowed: a number in [{low}, {high}{bracket}")


def _bits(value: Any, name: str) -> None:
    """Check that ``value`` is an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise InvalidInputError(f"{name}={value!r}; allowed: an int >= 1")


def _count(fraction: float, n: int) -> int:
    """``floor(fraction * n)`` computed on the printed decimal of ``fraction``."""
    return math.floor(Fraction(repr(float(fraction))) * n)


@dataclass(frozen=True)
class ThreatModel:
    """What the masking protocol must withstand in one round.

    Parameters
    ----------
    corrupt_fraction : float
        ``gamma`` in ``[0, 1/2)``: the server may collude with ``floor(gamma * n)`` clients.
    dropout_fraction : float
        ``delta`` in ``[0, 1)``: up to ``floor(delta * n)`` clients may drop out.
    security_bits : int
        ``sigma >= 1``: privacy (conditions 1 and 2) may fail with probability at most
        ``2**-sigma``.
    correctness_bits : int
        ``eta >= 1``: the round may fail to decode with probability at most ``2**-eta``.
    """

    corrupt_fraction: float = 0.1
    dropout_fraction: float = 0.1
    security_bits: int = 40
    correctness_bits: int = 20

    def __post_init__(self) -> None:
        _fraction(self.corrupt_fraction, "corrupt_fraction", 0.0, 0.5, high_open=True)
        _fraction(self.dropout_fraction, "dropout_fraction", 0.0, 1.0, high_open=True)
        _bits(self.security_bits, "security_bits")
        _bits(self.correctness_bits, "correctness_bits")

    def corrupt_clients(self, n: int) -> int:
        """``nC = floor(corrupt_fraction * n)``: corrupt clients among ``n``."""
        return _count(self.corrupt_fraction, n)

    def dropped_clients(self, n: int) -> int:
        """``nD = floor(dropout_fraction * n)``: clients that may drop out among ``n``."""
        return _count(self.dropout_fraction, n)


@dataclass(frozen=True)
class RoundParameters:
    """Graph degree and Shamir threshold for a round, with their failure probabilities.

    Parameters
    ----------
    cohort_size : int
        ``n``, the clients of the round.
    degree : int
        ``k``, neighbours per client; ``n - 1`` is the complete graph.
    threshold : int
        ``t``, the Shamir threshold within each group of ``k + 1`` clients.
    privacy_log2 : float
        ``log2(P1 + P2)`` (share privacy and connectivity); ``-inf`` for the complete graph.
    correctness_log2 : float
        ``log2(P3)``; ``-inf`` for the complete graph.
    """

    cohort_size: int
    degree: int
    threshold: int
    privacy_log2: float
    correctness_log2: float

    @property
    def group_size(self) -> int:
        """``g = k + 1``: a client and its neighbours, among whom it shares its seeds."""
        return self.degree + 1

    @property
    def complete(self) -> bool:
        """Whether every client is linked to every other one (``k = n - 1``)."""
        return self.degree >= self.cohort_size - 1

    @property
    def neighbourhood(self) -> str | int:
        """The matching :class:`~privfed.secure.masking.MaskingParams` ``neighbourhood``."""
        return "full" if self.complete else self.degree


def min_threshold(group_size: int, corrupt: int) -> int:
    """Smallest ``t`` with ``2t > group_size + corrupt``: ``floor((g + c) / 2) + 1``.

    With ``c`` corrupt members in a group of ``g`` and the consistency round, the adversary
    gets at most ``(g + c) / 2`` shares of *both* seeds of an honest client (condition 1 of the
    module docstring; Bonawitz et al. 2017).
    """
    return (group_size + corrupt) // 2 + 1


# ---------------------------------------------------------------------------------------------
# Complete graph


def _complete(
    n: int, model: ThreatModel, threshold: int | None, min_clients: int
) -> RoundParameters:
    n_corrupt, n_dropped = model.corrupt_clients(n), model.dropped_clients(n)
    private_t = min_threshold(n, n_corrupt)
    floor_t = min(min_clients, n)
    # min_clients is a privacy floor (no smaller sum is decoded, e.g. distributed DP's
    # K_min); where it exceeds n - nD it wins, and fewer dropouts are tolerated.
    max_t = max(n - n_dropped, floor_t)
    why = (
        f"privacy against a server that lies about dropouts and colludes with "
        f"nC = floor(corrupt_fraction * n) = {n_corrupt} clients needs 2t > n + nC, i.e. "
        f"t >= {private_t} (otherwise it could obtain both shares of an honest client)"
    )
    if threshold is None:
        lowest = max(private_t, floor_t)
        if lowest > max_t:
            binding = (
                f", min_clients={min_clients} needs t >= {floor_t}" if floor_t > private_t else ""
            )
            raise InvalidInputError(
                f"no threshold works for the complete graph with cohort_size n={n}, "
                f"corrupt_fraction={model.corrupt_fraction}, "
                f"dropout_fraction={model.dropout_fraction}: {why}{binding}, but correctness "
                f"with nD = floor(dropout_fraction * n) = {n_dropped} dropouts needs "
                f"t <= n - nD = {max_t}"
            )
        t = min(max((2 * n) // 3 + 1, lowest), max_t)
    else:
        if not 2 <= threshold <= n:
            raise InvalidInputError(
                f"threshold={threshold}; allowed: an int in 2..{n} (cohort_size n={n}, "
                f"complete graph)"
            )
        t = max(threshold, floor_t)
        if t < private_t:
            raise InvalidInputError(
                f"threshold={threshold} is below the minimum {private_t} for cohort_size "
                f"n={n}: {why}; corrupt_fraction={model.corrupt_fraction}"
            )
        if t > max_t:
            raise InvalidInputError(
                f"threshold={t} exceeds n - nD = {max_t} for cohort_size n={n}: with "
                f"dropout_fraction={model.dropout_fraction} up to nD = {n_dropped} clients may "
                f"drop and the seeds could then not be rebuilt"
            )
    return RoundParameters(n, n - 1, t, -math.inf, -math.inf)


def _check_degree(
    n: int, k: int, model: ThreatModel, threshold: int | None, min_clients: int
) -> RoundParameters:
    n_corrupt, n_dropped = model.corrupt_clients(n), model.dropped_clients(n)
    g = k + 1
    if threshold is not None and not 2 <= threshold <= g:
        raise InvalidInputError(
            f"threshold={threshold}; allowed: an int in 2..{g} for degree (neighbourhood) "
            f"k={k} (groups of k + 1 = {g})"
        )
    graph = Graph.build(n, k, n_corrupt, n_dropped, log_disconnection(n, n_corrupt + n_dropped, k))
    t, privacy, correctness = fit_threshold(graph, model, threshold, min_clients)
    if t is not None:
        return RoundParameters(n, k, t, privacy, correctness)
    which = (
        f"threshold={threshold}"
        if threshold is not None
        else "any threshold (best privacy shown, at threshold t = k + 1)"
        if privacy > -model.security_bits
        else "threshold (the smallest private one)"
    )
    raise InvalidInputError(
        f"degree (neighbourhood) k={k} with {which} is not safe for cohort_size n={n}, "
        f"corrupt_fraction={model.corrupt_fraction} (nC={n_corrupt}), "
        f"dropout_fraction={model.dropout_fraction} (nD={n_dropped}): "
        f"log2 P[privacy failure] = {privacy:.2f} (security_bits requires <= "
        f"{-model.security_bits}), log2 P[correctness failure] = {correctness:.2f} "
        f"(correctness_bits requires <= {-model.correctness_bits}), connectivity alone "
        f"log2 P2 = {graph.log_p2 / LN2:.2f}; use a larger degree or 'full'"
    )


@functools.lru_cache(maxsize=1024)
def _round_parameters(
    n: int, model: ThreatModel, degree: str | int, threshold: int | None, min_clients: int
) -> RoundParameters:
    if degree == "full" or (isinstance(degree, int) and degree >= n - 1):
        return _complete(n, model, threshold, min_clients)
    if degree == "secagg+":
        if threshold is not None and not 2 <= threshold <= n:
            raise InvalidInputError(
                f"threshold={threshold}; allowed: an int in 2..{n} (cohort_size n={n})"
            )
        found = smallest_degree(n, model, threshold, min_clients)
        if found is None:
            return _complete(n, model, threshold, min_clients)
        return RoundParameters(n, *found)
    return _check_degree(n, int(degree), model, threshold, min_clients)


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise InvalidInputError(f"{name}={value!r}; allowed: an int")
    try:
        return operator.index(value)
    except TypeError:
        raise InvalidInputError(f"{name}={value!r}; allowed: an int") from None


def round_parameters(
    n: int,
    model: ThreatModel,
    *,
    degree: int | None | str = None,
    threshold: int | None = None,
    min_clients: int = 2,
) -> RoundParameters:
    """Degree ``k`` and threshold ``t`` for a round of ``n`` clients under ``model``.

    Parameters
    ----------
    n : int
        Cohort size (clients that advertise keys in the round), ``>= 2``.
    model : ThreatModel
        Corrupt and dropout fractions, security and correctness bits.
    degree : None, "full", "secagg+" or even int
        ``None``/``"full"``: complete graph (``k = n - 1``). ``"secagg+"``: the smallest even
        ``k < n - 1`` for which some ``t`` meets ``P1 + P2 <= 2**-security_bits`` and
        ``P3 <= 2**-correctness_bits`` (module docstring), else the complete graph. An even
        int ``k``: check that degree (``k >= n - 1`` is the complete graph).
    threshold : int or None
        ``None`` derives ``t``. Complete graph:
        ``max(floor(2n/3) + 1, min_threshold(n, nC), min(min_clients, n))``, lowered to
        ``n - nD`` when that still meets ``2t > n + nC``. Sparse graph: the smallest ``t``
        meeting the privacy bound (most dropout tolerance). An int is checked instead.
    min_clients : int
        As :class:`~privfed.secure.masking.MaskingParams`: ``t`` is raised to at least
        ``min(min_clients, group size)`` (derived and explicit alike, as the clients do).

    Returns
    -------
    RoundParameters

    Raises
    ------
    ThresholdError
        If ``n < 2``.
    InvalidInputError
        On malformed arguments, or when the requested graph/threshold cannot meet the model;
        the message names the offending fields and the log2 failure probabilities reached.

    Notes
    -----
    Cached (:func:`functools.lru_cache`); ``n = 10 000`` takes a few ms uncached.
    """
    n = _as_int(n, "n")
    if n < 2:
        raise ThresholdError(f"masking needs at least 2 clients, got cohort_size n={n}")
    if not isinstance(model, ThreatModel):
        raise InvalidInputError(f"model={model!r}; allowed: a ThreatModel")
    if degree is None or degree == "full":
        norm: str | int = "full"
    elif degree == "secagg+":
        norm = "secagg+"
    else:
        if isinstance(degree, str):
            raise InvalidInputError(
                f"degree={degree!r}; allowed: None, 'full', 'secagg+' or an even int >= 2"
            )
        norm = _as_int(degree, "degree")
        if norm < 2 or norm % 2:
            raise InvalidInputError(
                f"degree (neighbourhood)={degree!r}; allowed: None, 'full', 'secagg+' or an "
                f"even int >= 2"
            )
    t = None if threshold is None else _as_int(threshold, "threshold")
    if t is not None and t < 2:
        raise InvalidInputError(f"threshold={threshold!r}; allowed: an int >= 2")
    m = _as_int(min_clients, "min_clients")
    if m < 2:
        raise InvalidInputError(f"min_clients={min_clients!r}; allowed: an int >= 2")
    return _round_parameters(n, model, norm, t, m)
