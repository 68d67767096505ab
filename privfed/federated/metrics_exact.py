"""The reference: :mod:`privfed.federated.metrics`'s dictionary computed by scikit-learn.

For a central test set, where the examples are at hand: exact AUC (no binning), and the
check that the counts-based path agrees. scikit-learn is imported at call time.
"""

from __future__ import annotations

import warnings

import numpy as np

from privfed.federated.metrics import Metrics

__all__ = ["exact_metrics"]


def exact_metrics(y_true: np.ndarray, probabilities: np.ndarray) -> Metrics:
    """The metrics of :func:`~privfed.federated.metrics.metrics_from_counts`, by sklearn.

    Predictions are ``argmax(probabilities, axis=1)`` (first maximum). ``loss`` is
    ``log_loss(labels=range(C))``; ``roc_auc`` is ``roc_auc_score`` of ``probabilities[:, 1]``
    for two classes, else the mean over the classes with both positives and negatives of the
    one-vs-rest ``roc_auc_score(y_true == c, probabilities[:, c])``, which is
    ``roc_auc_score(multi_class="ovr", average="macro")`` when every class occurs (sklearn
    returns NaN otherwise). Undefined values are ``None`` (sklearn's NaN).

    Parameters
    ----------
    y_true : numpy.ndarray, shape (N,), integer, values in ``[0, C)``, ``N >= 1``
    probabilities : numpy.ndarray, shape (N, C), ``C >= 2``, rows summing to 1

    Raises
    ------
    ValueError
        Naming ``y_true`` or ``probabilities`` when a shape, dtype or value is wrong.
    """
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        f1_score,
        log_loss,
        recall_score,
    )

    y_true, probabilities = _check(y_true, probabilities)
    num_classes = probabilities.shape[1]
    labels = list(range(num_classes))
    y_pred = probabilities.argmax(axis=1)
    with warnings.catch_warnings():  # absent classes: the documented conventions apply
        warnings.simplefilter("ignore")
        recall = recall_score(y_true, y_pred, labels=labels, average=None, zero_division=np.nan)
        metrics: Metrics = {
            "n": float(len(y_true)),
            "loss": float(log_loss(y_true, probabilities, labels=labels)),
            "accuracy": float(accuracy_score(y_true, y_pred)),
            "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
            "f1_macro": float(f1_score(y_true, y_pred, average="macro")),
            "recall_per_class": [_defined(r) for r in recall],
            "roc_auc": _exact_auc(y_true, probabilities),
            "majority_baseline": float(np.bincount(y_true).max() / len(y_true)),
        }
        if num_classes == 2:
            metrics["sensitivity"] = _defined(recall[1])
            metrics["specificity"] = _defined(recall[0])
            metrics["f1"] = _defined(f1_score(y_true, y_pred, pos_label=1, zero_division=np.nan))
    return metrics


def _exact_auc(y_true: np.ndarray, probabilities: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    classes = (1,) if probabilities.shape[1] == 2 else range(probabilities.shape[1])
    aucs = [
        float(roc_auc_score(y_true == c, probabilities[:, c]))
        for c in classes
        if 0 < np.count_nonzero(y_true == c) < len(y_true)
    ]
    return float(np.mean(aucs)) if aucs else None


def _defined(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def _check(y_true: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probabilities = np.asarray(probabilities, dtype=np.float64)
    y_true = np.asarray(y_true)
    if probabilities.ndim != 2 or probabilities.shape[1] < 2:
        raise ValueError(f"probabilities must have shape (N, C) with C >= 2, got "
                         f"{probabilities.shape}")
    if y_true.shape != (probabilities.shape[0],) or y_true.size == 0:
        raise ValueError(f"y_true must have shape ({probabilities.shape[0]},) with N >= 1, "
                         f"got {y_true.shape}")
    if not np.issubdtype(y_true.dtype, np.integer):
        raise ValueError(f"y_true must be integer, got {y_true.dtype}")
    if y_true.min() < 0 or y_true.max() >= probabilities.shape[1]:
        raise ValueError(f"y_true must lie in [0, {probabilities.shape[1]})")
    return y_true.astype(np.int64), probabilities
