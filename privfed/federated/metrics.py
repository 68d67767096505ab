"""Classification metrics computable from summed per-client counts (federated evaluation).

Each sampled client evaluates the global model on its held-out data and sends one
fixed-length float64 vector (:meth:`EvaluationCounts.from_logits`); the aggregator (secure
or not) sums the vectors and the server turns the sum into metrics
(:func:`metrics_from_counts`). Every entry is a count or a sum over examples, so the sum of
the clients' vectors equals the vector of their pooled data, and the pooled metrics are
exactly those of the concatenated test sets.

Vector layout for ``C`` classes and ``B`` bins (``K = 1`` score class, class 1, when
``C == 2``; else ``K = C``, classes ``0..C-1``), float64, length ``C*C + 2 + 2*K*B``:

======================================  ==================================================
``[t*C + p]``, ``0 <= t, p < C``        confusion matrix: examples of true class ``t``
                                        predicted ``p = argmax(logits)`` (first maximum)
``[C*C]``                               summed cross-entropy loss, nats, each example's
                                        capped at ``LOSS_CAP``
``[C*C + 1]``                           sample count ``n``
``[C*C + 2 + k*B + b]``                 positives: examples of true class ``c_k`` whose
                                        class-``c_k`` score falls in bin ``b``
``[C*C + 2 + K*B + k*B + b]``           negatives: the same for the other examples
======================================  ==================================================

The score of class ``c`` is the log-odds of its softmax probability,
``s_c = log(p_c / (1 - p_c)) = z_c - logsumexp_{j != c} z_j`` (computed from the logits, so
it does not saturate where ``p_c`` rounds to 0 or 1), a strictly increasing function of
``p_c``. Bins are uniform in ``u = asinh(s)`` over ``|u| <= asinh(LOG_ODDS_LIMIT)`` (scores
beyond fall in the edge bins): near ``s = 0`` the width is ``2 asinh(1e4) / B`` log-odds
(0.039 for ``B = 512``); for ``|s| >> 1``, ``u ~ sign(s) ln(2|s|)``, so the edges are
geometric in ``|s|`` (3.9 % apart for ``B = 512``) and the resolution follows a confident
model's scale instead of piling its scores into the two edge bins.

Conventions for undefined values (those of scikit-learn, :mod:`sklearn.metrics`): a class
with no true examples has recall ``None`` (sklearn's ``zero_division=np.nan``) and is left
out of ``balanced_accuracy`` (as ``balanced_accuracy_score`` does); ``f1_macro`` averages the
classes that occur among the true or the predicted labels (``f1_score``'s default labels);
``roc_auc`` averages the classes with both positives and negatives and is ``None`` when
there is none. :mod:`privfed.federated.metrics_exact` computes the same dictionary with
scikit-learn.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "DEFAULT_BINS",
    "LOG_ODDS_LIMIT",
    "LOSS_CAP",
    "EvaluationCounts",
    "Metrics",
    "auc_binning_bound",
    "beats_majority",
    "format_metrics",
    "metrics_from_counts",
    "worst_client",
]

DEFAULT_BINS = 512
LOG_ODDS_LIMIT = 1e4
LOSS_CAP = 100.0
"""Each example's cross-entropy in the vector is capped at this many nats (a true-class
probability of e^-100), so every entry has a public bound per example
(:meth:`EvaluationCounts.per_example_bound`), which a secure aggregator's input range needs."""
_U_LIMIT = math.asinh(LOG_ODDS_LIMIT)
_LOWER_IS_BETTER = frozenset({"loss"})
_HIGHER_IS_BETTER = frozenset(
    {"accuracy", "balanced_accuracy", "f1_macro", "roc_auc", "sensitivity", "specificity", "f1"}
)

Metrics = dict[str, float | list[float | None] | None]
"""Keys ``n, loss, accuracy, balanced_accuracy, f1_macro, recall_per_class, roc_auc,
majority_baseline`` and, for two classes, ``sensitivity, specificity, f1``."""


@dataclass(frozen=True)
class EvaluationCounts:
    """The layout of the evaluation vector (module docstring); public values only.

    Parameters
    ----------
    num_classes : int
        ``C >= 2``.
    bins : int
        ``B >= 1`` score bins per class and per side (positives, negatives).

    Raises
    ------
    ValueError
        If ``num_classes < 2`` or ``bins < 1``.
    """

    num_classes: int
    bins: int = DEFAULT_BINS

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes!r}")
        if self.bins < 1:
            raise ValueError(f"bins must be >= 1, got {self.bins!r}")

    @property
    def score_classes(self) -> tuple[int, ...]:
        """The classes with score histograms: ``(1,)`` for two classes, else all."""
        return (1,) if self.num_classes == 2 else tuple(range(self.num_classes))

    @property
    def length(self) -> int:
        """``C*C + 2 + 2*K*B``."""
        return self.num_classes**2 + 2 + 2 * len(self.score_classes) * self.bins

    def bin_index(self, scores: np.ndarray) -> np.ndarray:
        """Bin of each log-odds score: ``floor((asinh(s) + U) / (2U) * B)`` clipped to
        ``[0, B-1]``, ``U = asinh(LOG_ODDS_LIMIT)``; int64, the shape of ``scores``."""
        u = np.arcsinh(np.clip(scores, -LOG_ODDS_LIMIT, LOG_ODDS_LIMIT))
        index = np.floor((u + _U_LIMIT) / (2 * _U_LIMIT) * self.bins).astype(np.int64)
        return np.clip(index, 0, self.bins - 1)

    @torch.no_grad()
    def from_logits(self, logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
        """One client's vector.

        Parameters
        ----------
        logits : torch.Tensor, shape (N, C), floating, finite
        labels : torch.Tensor, shape (N,), int64, values in ``[0, C)``; ``N = 0`` gives
            the zero vector.

        Returns
        -------
        numpy.ndarray, float64, shape (length,)

        Raises
        ------
        ValueError
            Naming ``logits`` or ``labels`` when a shape, dtype or value is wrong.
        """
        logits, labels = self._check_inputs(logits, labels)
        c, bins, k = self.num_classes, self.bins, len(self.score_classes)
        y = labels.numpy()
        vector = np.zeros(self.length, dtype=np.float64)
        predicted = logits.argmax(dim=1).numpy()
        vector[: c * c] = np.bincount(y * c + predicted, minlength=c * c)
        losses = F.cross_entropy(logits, labels, reduction="none").clamp(max=LOSS_CAP)
        vector[c * c] = losses.sum().item()
        vector[c * c + 1] = len(y)
        cells = self.bin_index(_log_odds(logits, self.score_classes).numpy())
        cells += np.arange(k) * bins
        positive = y[:, None] == np.asarray(self.score_classes)[None, :]
        start = c * c + 2
        vector[start : start + k * bins] = np.bincount(cells[positive], minlength=k * bins)
        vector[start + k * bins :] = np.bincount(cells[~positive], minlength=k * bins)
        return vector

    def _check_inputs(
        self, logits: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"logits must have shape (N, {self.num_classes}), got "
                             f"{tuple(logits.shape)}")
        if not logits.is_floating_point() or not bool(torch.isfinite(logits).all()):
            raise ValueError("logits must be finite floating-point values")
        if labels.shape != (logits.shape[0],) or labels.dtype != torch.int64:
            raise ValueError(f"labels must be int64 of shape ({logits.shape[0]},), got "
                             f"{labels.dtype} {tuple(labels.shape)}")
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes})")
        return logits.detach().cpu().double(), labels.detach().cpu()

    def per_example_bound(self) -> np.ndarray:
        """The largest amount one example adds to each entry: 1, and ``LOSS_CAP`` for the
        loss; float64, shape ``(length,)``."""
        bound = np.ones(self.length)
        bound[self.num_classes**2] = LOSS_CAP
        return bound

    def encode(self, vector: np.ndarray, scale: float) -> np.ndarray:
        """``vector`` as a client sends it through a secure aggregator: each entry divided
        by its per-example bound, times ``scale``, as float32 (so a client of at most
        ``1 / scale`` examples sends entries in ``[0, 1]``).

        Raises
        ------
        ValueError
            When the vector counts more than ``1 / scale`` examples.
        """
        n = vector[self.num_classes**2 + 1]
        if n * scale > 1:
            raise ValueError(f"federated evaluation under secure aggregation takes at most "
                             f"{1 / scale:.0f} held-out examples per client, got {n:.0f}")
        return (vector / self.per_example_bound() * scale).astype(np.float32)

    def decode(self, total: np.ndarray, scale: float) -> np.ndarray:
        """Inverse of :meth:`encode` on a sum of encoded vectors, rounded (:meth:`rounded`)."""
        return self.rounded(np.asarray(total, np.float64) / scale * self.per_example_bound())

    def rounded(self, vector: np.ndarray) -> np.ndarray:
        """``vector`` (a sum that went through a lossy aggregator) with every count rounded
        to the nearest integer; the loss sum is kept as it is."""
        out = np.rint(np.asarray(vector, dtype=np.float64))
        loss = self.num_classes**2
        out[loss] = vector[loss]
        return out

    def split(
        self, vector: np.ndarray
    ) -> tuple[np.ndarray, float, float, np.ndarray, np.ndarray]:
        """``(confusion (C, C), loss_sum, n, positives (K, B), negatives (K, B))``.

        Raises
        ------
        ValueError
            Naming ``vector`` if it is not finite of shape ``(length,)``, or if its sample
            count disagrees with its confusion matrix.
        """
        vector = np.asarray(vector, dtype=np.float64)
        if vector.shape != (self.length,) or not np.isfinite(vector).all():
            raise ValueError(f"vector must be finite of shape ({self.length},) for "
                             f"{self}, got shape {vector.shape}")
        c, k, bins = self.num_classes, len(self.score_classes), self.bins
        confusion = vector[: c * c].reshape(c, c)
        n = float(vector[c * c + 1])
        if abs(n - confusion.sum()) > 1e-9 * max(n, 1.0):
            raise ValueError(f"vector: sample count {n} != confusion total {confusion.sum()}")
        histograms = vector[c * c + 2 :].reshape(2, k, bins)
        return confusion, float(vector[c * c]), n, histograms[0], histograms[1]


def _log_odds(logits: torch.Tensor, classes: tuple[int, ...]) -> torch.Tensor:
    """``s_c = z_c - logsumexp_{j != c} z_j`` for each ``c`` in ``classes``; (N, K)."""
    columns = [
        logits[:, c] - torch.logsumexp(torch.cat([logits[:, :c], logits[:, c + 1 :]], 1), 1)
        for c in classes
    ]
    return torch.stack(columns, dim=1)


def metrics_from_counts(
    vector: np.ndarray, num_classes: int, bins: int = DEFAULT_BINS
) -> Metrics:
    """Metrics of the (summed) vector; conventions in the module docstring.

    ``loss = loss_sum / n`` (mean cross-entropy, nats); ``accuracy = trace / n``;
    ``recall_c = M[c, c] / sum_p M[c, p]``;
    ``balanced_accuracy`` = mean of the defined recalls; ``F1_c = 2 M[c, c] / (row_c +
    column_c)`` (sklearn's formula); ``majority_baseline = max_c row_c / n``; ``roc_auc``
    from the binned scores, pairs in one bin counting 1/2 (:func:`auc_binning_bound` bounds
    its error); for two classes ``sensitivity = recall_1``, ``specificity = recall_0``,
    ``f1 = F1_1`` (``None`` if class 1 is neither true nor predicted).

    Parameters
    ----------
    vector : numpy.ndarray, float64, shape (length,)
        A sum of :meth:`EvaluationCounts.from_logits` vectors of the same layout.
    num_classes, bins : int
        The layout's public values.

    Returns
    -------
    Metrics
        Floats, ``recall_per_class`` a list of ``C`` entries, ``None`` where undefined.

    Raises
    ------
    ValueError
        If the vector does not match ``(num_classes, bins)`` (see
        :meth:`EvaluationCounts.split`) or holds no example.
    """
    confusion, loss_sum, n, positives, negatives = EvaluationCounts(num_classes, bins).split(
        vector
    )
    if n <= 0:
        raise ValueError("vector holds no example (sample count 0)")
    aucs = [_binned_auc(p, q)[0] for p, q in zip(positives, negatives, strict=True)]
    return _confusion_metrics(confusion, loss=loss_sum / n, roc_auc=_mean_defined(aucs))


def _confusion_metrics(confusion: np.ndarray, loss: float, roc_auc: float | None) -> Metrics:
    """The metrics dictionary from a ``(C, C)`` confusion matrix (true rows, predicted
    columns) with ``loss`` and ``roc_auc`` filled in as given."""
    true, predicted, hits = confusion.sum(axis=1), confusion.sum(axis=0), np.diag(confusion)
    n = float(true.sum())
    recall = [float(h / t) if t > 0 else None for h, t in zip(hits, true, strict=True)]
    f1 = [float(2 * h / s) if s > 0 else None for h, s in zip(hits, true + predicted, strict=True)]
    metrics: Metrics = {
        "n": n,
        "loss": float(loss),
        "accuracy": float(hits.sum() / n),
        "balanced_accuracy": float(np.mean([r for r in recall if r is not None])),
        "f1_macro": _mean_defined(f1),
        "recall_per_class": recall,
        "roc_auc": roc_auc,
        "majority_baseline": float(true.max() / n),
    }
    if len(true) == 2:
        metrics["sensitivity"], metrics["specificity"] = recall[1], recall[0]
        metrics["f1"] = f1[1]
    return metrics


def _binned_auc(positives: np.ndarray, negatives: np.ndarray) -> tuple[float | None, float]:
    """``(AUC, bound)`` of one class's histograms; AUC ``None`` without positives or
    negatives. ``AUC = (sum_b P_b N_{<b} + 1/2 sum_b P_b N_b) / (P N)`` (Mann-Whitney with
    ties at 1/2); ``bound = 1/2 sum_b P_b N_b / (P N)``."""
    p, q = positives.sum(), negatives.sum()
    if p <= 0 or q <= 0:
        return None, 0.0
    below = np.cumsum(negatives) - negatives
    same_bin = float(positives @ negatives)
    return float((positives @ below + 0.5 * same_bin) / (p * q)), 0.5 * same_bin / (p * q)


def _mean_defined(values: list[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def auc_binning_bound(
    vector: np.ndarray, num_classes: int, bins: int = DEFAULT_BINS
) -> float | None:
    """Bound on ``|roc_auc - exact AUC|`` of :func:`metrics_from_counts`'s ``roc_auc``.

    Binning is monotone in the score, so pairs in different bins are ordered as the exact
    scores order them and only a (positive, negative) pair in one bin can differ: it counts
    1/2 instead of 0, 1/2 or 1. Hence per class ``|AUC_binned - AUC_exact| <= 1/2 sum_b
    P_b N_b / (P N)``, and the macro average's error is at most the mean of the bounds of
    the averaged classes. Exact AUC: that of the log-odds, equal to that of the
    probabilities in exact arithmetic. ``None`` where ``roc_auc`` is.

    Raises
    ------
    ValueError
        As :func:`metrics_from_counts`.
    """
    _, _, _, positives, negatives = EvaluationCounts(num_classes, bins).split(vector)
    pairs = [_binned_auc(p, q) for p, q in zip(positives, negatives, strict=True)]
    return _mean_defined([bound for auc, bound in pairs if auc is not None])


def beats_majority(metrics: Mapping[str, object]) -> bool:
    """Whether ``accuracy > majority_baseline + sqrt(m (1 - m) / n)``, ``m`` the baseline.

    The margin is one binomial standard error of the accuracy measured on ``n`` examples by
    a classifier whose true accuracy is ``m`` (always predicting the majority class): a
    model within it is not distinguishable from the baseline on this test set. It is a
    sanity flag, not a significance test (under the null, about 16 % of models exceed one
    standard error by chance, normal approximation).
    """
    accuracy, m, n = (float(metrics[key]) for key in ("accuracy", "majority_baseline", "n"))
    return accuracy - m > math.sqrt(m * (1.0 - m) / n)


def format_metrics(metrics: Mapping[str, object]) -> str:
    """One line: ``n=... loss=... acc=... bal-acc=... AUC=... F1=... [sens=... spec=...]
    majority=...`` and ``(does not beat majority)`` when :func:`beats_majority` is False;
    undefined values print as ``n/a``."""
    binary = "sensitivity" in metrics
    fields = [("loss", "loss"), ("acc", "accuracy"), ("bal-acc", "balanced_accuracy"),
              ("AUC", "roc_auc"), ("F1", "f1" if binary else "f1_macro")]
    if binary:
        fields += [("sens", "sensitivity"), ("spec", "specificity")]
    fields.append(("majority", "majority_baseline"))
    parts = [f"n={int(metrics['n'])}"]
    parts += [f"{name}={_fmt(metrics[key])}" for name, key in fields]
    if not beats_majority(metrics):
        parts.append("(does not beat majority)")
    return " ".join(parts)


def _fmt(value: object) -> str:
    return "n/a" if value is None else f"{float(value):.3f}"


def worst_client(
    per_client: Mapping[int, Mapping[str, object]], key: str = "accuracy"
) -> tuple[int, float]:
    """The client with the worst defined ``key`` (lowest; highest for ``loss``); ties go to
    the smallest id. Only meaningful where per-client metrics are released (not under
    secure aggregation, which reveals the sum alone).

    Raises
    ------
    ValueError
        If ``key`` is not a scalar quality metric, or no client has ``key`` defined.
    """
    if key not in _LOWER_IS_BETTER | _HIGHER_IS_BETTER:
        raise ValueError(f"key must be one of {sorted(_LOWER_IS_BETTER | _HIGHER_IS_BETTER)}, "
                         f"got {key!r}")
    defined = sorted((cid, float(m[key])) for cid, m in per_client.items()
                     if m.get(key) is not None)
    if not defined:
        raise ValueError(f"per_client: no client has {key!r} defined")
    sign = -1.0 if key in _LOWER_IS_BETTER else 1.0
    return min(defined, key=lambda item: (sign * item[1], item[0]))
