"""Federated evaluation metrics: summed counts against scikit-learn on the pooled examples."""

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, roc_auc_score

from privfed.federated import metrics, metrics_exact
from privfed.federated.metrics import (
    EvaluationCounts,
    auc_binning_bound,
    beats_majority,
    format_metrics,
    metrics_from_counts,
    worst_client,
)
from privfed.federated.metrics_exact import exact_metrics

BINS = 512
CONFUSION_KEYS = ("n", "accuracy", "balanced_accuracy", "f1_macro", "majority_baseline")


def _data(seed: int, num_classes: int, n: int = 400, absent: int | None = None, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    if absent is not None:
        labels[labels == absent] = (absent + 1) % num_classes
    logits = scale * torch.randn(n, num_classes, generator=g, dtype=torch.float64)
    return logits, labels


def _informative(seed: int, num_classes: int, n: int = 2000, margin=2.5, scale=20.0):
    """A confident model (accuracy 0.9-0.96): logits ``scale * (margin onehot + noise)``."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    noise = torch.randn(n, num_classes, generator=g, dtype=torch.float64)
    return scale * (margin * torch.eye(num_classes, dtype=torch.float64)[labels] + noise), labels


def _counts(logits, labels, num_classes):
    vector = EvaluationCounts(num_classes, BINS).from_logits(logits, labels)
    return vector, metrics_from_counts(vector, num_classes, BINS)


def _exact(logits, labels):
    return exact_metrics(labels.numpy(), torch.softmax(logits, dim=1).numpy())


def _exact_log_odds_auc(logits, labels):
    """sklearn's AUC on the log-odds (no float saturation of the probabilities)."""
    classes = (1,) if logits.shape[1] == 2 else range(logits.shape[1])
    aucs = []
    for c in classes:
        others = torch.cat([logits[:, :c], logits[:, c + 1 :]], dim=1)
        score = (logits[:, c] - torch.logsumexp(others, dim=1)).numpy()
        if 0 < int((labels == c).sum()) < len(labels):
            aucs.append(roc_auc_score((labels == c).numpy(), score))
    return float(np.mean(aucs))


@pytest.mark.parametrize("num_classes", [2, 5])
def test_vector_is_float64_of_the_documented_length(num_classes):
    layout = EvaluationCounts(num_classes, bins=7)
    k = 1 if num_classes == 2 else num_classes
    assert layout.length == num_classes**2 + 2 + 2 * k * 7
    logits, labels = _data(0, num_classes, n=50)
    vector = layout.from_logits(logits.float(), labels)
    assert vector.dtype == np.float64 and vector.shape == (layout.length,)
    assert vector[num_classes**2 + 1] == 50
    assert vector[num_classes**2 + 2 :].sum() == 50 * k  # each example once per score class
    empty = layout.from_logits(torch.zeros(0, num_classes), torch.zeros(0, dtype=torch.int64))
    assert not empty.any()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("num_classes", "absent"), [(2, None), (2, 1), (5, None), (5, 3)])
def test_confusion_metrics_equal_sklearn(seed, num_classes, absent):
    logits, labels = _data(seed, num_classes, absent=absent)
    _, counts = _counts(logits, labels, num_classes)
    exact = _exact(logits, labels)
    assert counts.keys() == exact.keys()
    for key in CONFUSION_KEYS + (("sensitivity", "specificity", "f1") if num_classes == 2 else ()):
        assert counts[key] == pytest.approx(exact[key], abs=1e-12), key
    assert counts["recall_per_class"] == pytest.approx(exact["recall_per_class"], abs=1e-12)
    assert counts["loss"] == pytest.approx(exact["loss"], rel=1e-9)
    if absent is not None:
        assert counts["recall_per_class"][absent] is None


def test_undefined_binary_metrics_are_none_as_in_sklearn():
    labels = torch.zeros(20, dtype=torch.int64)
    logits = torch.tensor([[2.0, 0.0]]).repeat(20, 1) + 0.1 * torch.randn(20, 2)
    _, counts = _counts(logits, labels, 2)
    exact = _exact(logits.double(), labels)
    for key in ("sensitivity", "f1", "roc_auc"):
        assert counts[key] is None and exact[key] is None, key
    assert counts["specificity"] == exact["specificity"] == 1.0
    assert counts["f1_macro"] == exact["f1_macro"] == 1.0


def test_summed_clients_equal_the_pooled_data():
    logits, labels = _data(7, 5, n=600)
    layout = EvaluationCounts(5, BINS)
    parts = [(0, 90), (90, 350), (350, 600)]
    summed = sum(layout.from_logits(logits[a:b], labels[a:b]) for a, b in parts)
    pooled = layout.from_logits(logits, labels)
    loss_index = 5 * 5
    assert np.array_equal(np.delete(summed, loss_index), np.delete(pooled, loss_index))
    assert summed[loss_index] == pytest.approx(pooled[loss_index], rel=1e-12)
    from_sum, from_pool = metrics_from_counts(summed, 5, BINS), metrics_from_counts(pooled, 5, BINS)
    for key in CONFUSION_KEYS + ("roc_auc", "recall_per_class"):
        assert from_sum[key] == from_pool[key], key
    assert from_sum["accuracy"] == accuracy_score(labels.numpy(), logits.argmax(1).numpy())


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("num_classes", "absent"), [(2, None), (5, None), (5, 2)])
@pytest.mark.parametrize("scale", [1.0, 20.0])
def test_binned_auc_within_the_pair_tie_bound(seed, num_classes, absent, scale):
    logits, labels = _data(seed, num_classes, absent=absent, scale=scale)
    vector, counts = _counts(logits, labels, num_classes)
    bound = auc_binning_bound(vector, num_classes, BINS)
    assert abs(counts["roc_auc"] - _exact_log_odds_auc(logits, labels)) <= bound + 1e-12
    if scale == 1.0:  # no saturated probabilities: sklearn on p agrees as well
        assert abs(counts["roc_auc"] - _exact(logits, labels)["roc_auc"]) <= bound + 1e-12


def test_multiclass_reference_is_sklearn_ovr_macro_when_every_class_occurs():
    logits, labels = _data(3, 5)
    probabilities = torch.softmax(logits, dim=1).numpy()
    expected = roc_auc_score(labels.numpy(), probabilities, multi_class="ovr", average="macro")
    assert exact_metrics(labels.numpy(), probabilities)["roc_auc"] == pytest.approx(expected)


@pytest.mark.parametrize("num_classes", [2, 5])
def test_bound_is_small_for_a_confident_model(num_classes):
    logits, labels = _informative(0, num_classes)
    vector, counts = _counts(logits, labels, num_classes)
    bound = auc_binning_bound(vector, num_classes, BINS)
    assert 0 < bound < 1e-3
    assert abs(counts["roc_auc"] - _exact_log_odds_auc(logits, labels)) <= bound
    assert counts["accuracy"] > 0.8 and beats_majority(counts)


def test_bound_is_attained_when_one_bin_hides_the_order():
    labels = torch.tensor([1, 1, 0, 0])
    logits = torch.tensor([[0.0, 4e-3], [0.0, 3e-3], [0.0, 2e-3], [0.0, 1e-3]])
    vector, counts = _counts(logits, labels, 2)
    assert _exact_log_odds_auc(logits.double(), labels) == 1.0
    assert counts["roc_auc"] == 0.5 and auc_binning_bound(vector, 2, BINS) == 0.5


def test_bins_are_monotone_and_clipped():
    layout = EvaluationCounts(3, bins=64)
    scores = np.concatenate([[-np.inf, -1e30], np.linspace(-50, 50, 2001), [1e30, np.inf]])
    index = layout.bin_index(scores)
    assert np.all(np.diff(index) >= 0) and index[0] == 0 and index[-1] == 63
    assert index[np.searchsorted(scores, 0.0)] in (31, 32)


@pytest.mark.parametrize("num_classes", [2, 5])
def test_majority_baseline_is_the_largest_class_share(num_classes):
    logits, labels = _data(4, num_classes, n=333)
    _, counts = _counts(logits, labels, num_classes)
    assert counts["majority_baseline"] == np.bincount(labels.numpy()).max() / 333


def test_beats_majority_flags_the_constant_predictor():
    labels = torch.tensor([0] * 700 + [1] * 300)
    constant = torch.tensor([[1.0, 0.0]]).repeat(1000, 1)
    _, counts = _counts(constant, labels, 2)
    assert counts["accuracy"] == counts["majority_baseline"] == 0.7
    assert not beats_majority(counts)
    assert format_metrics(counts).endswith("majority=0.700 (does not beat majority)")
    near = dict(counts, accuracy=0.7 + 0.9 * np.sqrt(0.21 / 1000))  # within one SE
    assert not beats_majority(near) and beats_majority(dict(counts, accuracy=0.72))
    logits, labels = _informative(1, 2)
    _, good = _counts(logits, labels, 2)
    assert beats_majority(good) and "does not beat" not in format_metrics(good)


def test_format_metrics_is_one_line_with_the_binary_fields():
    logits, labels = _data(5, 2)
    _, binary = _counts(logits, labels, 2)
    line = format_metrics(binary)
    assert "\n" not in line and line.startswith("n=400 loss=")
    for field in ("acc=", "bal-acc=", "AUC=", "F1=", "sens=", "spec=", "majority="):
        assert field in line
    _, multi = _counts(*_data(5, 5), 5)
    assert "sens=" not in format_metrics(multi)
    assert "AUC=n/a" in format_metrics(dict(multi, roc_auc=None))


def test_worst_client():
    per_client = {
        3: {"accuracy": 0.8, "loss": 0.5, "roc_auc": None},
        1: {"accuracy": 0.6, "loss": 0.9, "roc_auc": 0.7},
        2: {"accuracy": 0.6, "loss": 0.4, "roc_auc": 0.9},
    }
    assert worst_client(per_client) == (1, 0.6)
    assert worst_client(per_client, key="loss") == (1, 0.9)
    assert worst_client(per_client, key="roc_auc") == (1, 0.7)
    with pytest.raises(ValueError, match="key"):
        worst_client(per_client, key="n")
    with pytest.raises(ValueError, match="per_client"):
        worst_client({0: {"roc_auc": None}}, key="roc_auc")


def test_bad_input_names_the_argument():
    layout = EvaluationCounts(3, bins=8)
    logits, labels = torch.zeros(4, 3), torch.tensor([0, 1, 2, 0])
    bad_calls = {
        "num_classes": lambda: EvaluationCounts(1),
        "bins": lambda: EvaluationCounts(3, bins=0),
        "logits": lambda: layout.from_logits(torch.zeros(4, 2), labels),
        "logits must be finite": lambda: layout.from_logits(logits / 0, labels),
        "labels must be int64 of shape": lambda: layout.from_logits(logits, labels[:3]),
        "labels must be int64": lambda: layout.from_logits(logits, labels.float()),
        "labels must lie": lambda: layout.from_logits(logits, torch.tensor([0, 1, 3, 0])),
        "labels must lie in": lambda: layout.from_logits(logits, torch.tensor([0, -1, 2, 0])),
        "vector must be": lambda: metrics_from_counts(np.zeros(layout.length + 1), 3, 8),
        "vector holds no": lambda: metrics_from_counts(np.zeros(layout.length), 3, 8),
        "vector:": lambda: metrics_from_counts(np.eye(1, layout.length, 3 * 3 + 1)[0], 3, 8),
        "probabilities": lambda: exact_metrics(np.array([0, 1]), np.ones((2, 1))),
        "y_true must have": lambda: exact_metrics(np.array([0, 1]), np.ones((3, 2)) / 2),
        "y_true must be integer": lambda: exact_metrics(np.array([0.0, 1.0]), np.ones((2, 2))),
        "y_true must lie": lambda: exact_metrics(np.array([0, 2]), np.ones((2, 2)) / 2),
    }
    for message, call in bad_calls.items():
        with pytest.raises(ValueError, match=message):
            call()


@pytest.mark.parametrize("module", [metrics, metrics_exact])
def test_sklearn_is_imported_at_call_time_only(module):
    tree = ast.parse(Path(module.__file__).read_text())
    top_level = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
    names = [getattr(node, "module", None) or node.names[0].name for node in top_level]
    assert names and not [name for name in names if name.split(".")[0] == "sklearn"]
