"""Tests for privfed.data.partition."""

from __future__ import annotations

import numpy as np
import pytest

from privfed.data import (
    PARTITIONERS,
    DirichletPartitioner,
    IIDPartitioner,
    QuantitySkewPartitioner,
    ShardPartitioner,
    label_histogram,
    make_partitioner,
    seed_scenario_split,
)


def balanced_labels(num_classes: int, per_class: int, seed: int = 123) -> np.ndarray:
    """Shuffled labels with exactly ``per_class`` samples of each class."""
    labels = np.repeat(np.arange(num_classes), per_class)
    return np.random.default_rng(seed).permutation(labels)


ALL_SAMPLE_PARTITIONERS = [
    IIDPartitioner(),
    DirichletPartitioner(alpha=0.5),
    ShardPartitioner(shards_per_client=2),
    QuantitySkewPartitioner(alpha=1.0),
]


def test_iid_is_exactly_the_numpy_recipe() -> None:
    labels = np.zeros(103, dtype=np.int64)
    parts = IIDPartitioner().split(labels, num_clients=7, seed=42)
    expected = np.array_split(np.random.default_rng(42).permutation(103), 7)
    assert len(parts) == 7
    for got, want in zip(parts, expected, strict=True):
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, want)


def test_iid_samples_per_client_takes_leading_blocks_of_the_permutation() -> None:
    labels = np.zeros(100, dtype=np.int64)
    parts = IIDPartitioner(samples_per_client=12).split(labels, num_clients=5, seed=3)
    perm = np.random.default_rng(3).permutation(100)
    np.testing.assert_array_equal(np.stack(parts), perm[:60].reshape(5, 12))


def test_iid_samples_per_client_too_large_names_the_numbers() -> None:
    with pytest.raises(ValueError, match=r"samples_per_client=30 x num_clients=4 = 120.*100"):
        IIDPartitioner(samples_per_client=30).split(np.zeros(100, dtype=int), 4, seed=0)


def test_seed_scenario_is_ten_clients_of_6000_matching_plain_iid() -> None:
    labels = np.arange(60_000) % 10
    parts = seed_scenario_split(labels, seed=5)
    assert [len(p) for p in parts] == [6000] * 10
    plain = IIDPartitioner().split(labels, 10, seed=5)
    for got, want in zip(parts, plain, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("partitioner", ALL_SAMPLE_PARTITIONERS, ids=repr)
def test_every_sample_is_assigned_exactly_once(partitioner) -> None:
    labels = balanced_labels(10, 200)
    parts = partitioner.split(labels, num_clients=8, seed=1)
    assert len(parts) == 8
    assert all(p.dtype == np.int64 for p in parts)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(len(labels)))


@pytest.mark.parametrize("partitioner", ALL_SAMPLE_PARTITIONERS, ids=repr)
def test_same_seed_same_split_and_other_seed_other_split(partitioner) -> None:
    labels = balanced_labels(10, 100)
    first = partitioner.split(labels, num_clients=5, seed=7)
    again = partitioner.split(labels, num_clients=5, seed=7)
    other = partitioner.split(labels, num_clients=5, seed=8)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_dirichlet_large_alpha_is_near_uniform() -> None:
    # 10 classes x 500 samples, 5 clients. With alpha = 1000 each client's share of a
    # class is ~ Beta(1000, 4000): mean 0.2, sd ~ 0.0057, i.e. ~100 +- 2.8 samples of
    # each class in ~1000. A client's label fraction is then 0.1 +- ~0.003; 0.02 is
    # more than 6 sd away from failing.
    labels = balanced_labels(10, 500)
    parts = DirichletPartitioner(alpha=1000).split(labels, num_clients=5, seed=0)
    hist = label_histogram(labels, parts, num_classes=10)
    fractions = hist / hist.sum(axis=1, keepdims=True)
    global_fraction = np.bincount(labels) / len(labels)
    assert np.abs(fractions - global_fraction).max() < 0.02
    top2 = np.sort(fractions, axis=1)[:, -2:].sum(axis=1)
    assert top2.max() < 0.25


@pytest.mark.parametrize("seed", range(5))
def test_dirichlet_small_alpha_clients_are_dominated_by_one_or_two_labels(seed: int) -> None:
    labels = balanced_labels(10, 1000)
    parts = DirichletPartitioner(alpha=0.05).split(labels, num_clients=10, seed=seed)
    hist = label_histogram(labels, parts, num_classes=10)
    top2 = np.sort(hist, axis=1)[:, -2:].sum(axis=1)
    # Most clients hold almost only their top two labels (median >= 90 %), and >= 80 %
    # of all samples sit in their client's two most frequent labels (IID would be 20 %).
    assert np.median(top2 / hist.sum(axis=1)) >= 0.9
    assert top2.sum() / len(labels) >= 0.8


def test_dirichlet_respects_min_size() -> None:
    labels = balanced_labels(10, 100)
    parts = DirichletPartitioner(alpha=0.1, min_size=20).split(labels, num_clients=20, seed=0)
    assert min(len(p) for p in parts) >= 20


def test_dirichlet_infeasible_min_size_is_rejected_up_front() -> None:
    with pytest.raises(ValueError, match=r"min_size=11 is infeasible.*10 clients.*110 > 100"):
        DirichletPartitioner(alpha=1.0, min_size=11).split(balanced_labels(10, 10), 10, seed=0)


def test_dirichlet_gives_up_after_max_retries() -> None:
    partitioner = DirichletPartitioner(alpha=0.01, min_size=9, max_retries=3)
    with pytest.raises(ValueError, match=r"min_size=9 could not be met.*max_retries=3"):
        partitioner.split(balanced_labels(10, 50), num_clients=50, seed=0)


@pytest.mark.parametrize("num_clients", [10, 50])
def test_shards_give_each_client_at_most_two_labels(num_clients: int) -> None:
    labels = balanced_labels(10, 60)
    parts = ShardPartitioner(shards_per_client=2).split(labels, num_clients, seed=4)
    hist = label_histogram(labels, parts, num_classes=10)
    assert ((hist > 0).sum(axis=1) <= 2).all()
    assert {len(p) for p in parts} == {600 // num_clients}


def test_shards_too_many_shards_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"shards_per_client=3 x num_clients=4 = 12 shards.*10"):
        ShardPartitioner(shards_per_client=3).split(np.arange(10), 4, seed=0)


def test_quantity_skew_sizes_are_unequal_and_respect_min_size() -> None:
    labels = balanced_labels(10, 200)
    parts = QuantitySkewPartitioner(alpha=0.5, min_size=15).split(labels, 10, seed=2)
    sizes = np.array([len(p) for p in parts])
    assert sizes.min() >= 15
    assert sizes.max() > 2 * sizes.min()
    equal = IIDPartitioner().split(labels, 10, seed=2)
    assert {len(p) for p in equal} == {200}


def test_label_histogram_counts_per_client_and_class() -> None:
    labels = np.array([0, 1, 1, 2, 2, 2])
    hist = label_histogram(labels, [np.array([0, 3]), np.array([1, 2, 4, 5])], num_classes=4)
    np.testing.assert_array_equal(hist, [[1, 0, 1, 0], [0, 2, 2, 0]])
    assert hist.dtype == np.int64


def test_label_histogram_rejects_labels_out_of_range() -> None:
    with pytest.raises(ValueError, match=r"label 3 out of range for num_classes=3"):
        label_histogram(np.array([0, 3]), [np.array([0, 1])], num_classes=3)


@pytest.mark.parametrize("num_clients", [0, -1, 11])
def test_num_clients_out_of_range_names_both_numbers(num_clients: int) -> None:
    with pytest.raises(
        ValueError, match=rf"num_clients={num_clients} .* 10 samples; allowed 1..10"
    ):
        IIDPartitioner().split(np.zeros(10, dtype=int), num_clients, seed=0)


@pytest.mark.parametrize("alpha", [0, -0.5, float("nan"), float("inf"), True, "1"])
@pytest.mark.parametrize("cls", [DirichletPartitioner, QuantitySkewPartitioner])
def test_bad_alpha_is_rejected(cls, alpha) -> None:
    with pytest.raises(ValueError, match=r"alpha must be a finite number > 0"):
        cls(alpha=alpha)


@pytest.mark.parametrize(
    ("factory", "field"),
    [
        (lambda: IIDPartitioner(samples_per_client=0), "samples_per_client"),
        (lambda: ShardPartitioner(shards_per_client=0), "shards_per_client"),
        (lambda: DirichletPartitioner(alpha=1.0, min_size=-1), "min_size"),
        (lambda: DirichletPartitioner(alpha=1.0, max_retries=0), "max_retries"),
    ],
)
def test_bad_integer_parameters_name_the_field(factory, field: str) -> None:
    with pytest.raises(ValueError, match=rf"{field} must be an integer >= \d, got"):
        factory()


@pytest.mark.parametrize(
    "labels",
    [np.zeros((4, 2), dtype=int), np.array([0.0, 1.0]), np.array([0, -1]), np.array([], int)],
)
def test_bad_labels_are_rejected(labels: np.ndarray) -> None:
    with pytest.raises(ValueError, match="labels"):
        IIDPartitioner().split(labels, 1, seed=0)


def test_make_partitioner_builds_registered_partitioners() -> None:
    assert set(PARTITIONERS) == {"iid", "dirichlet", "shards", "quantity_skew"}
    assert make_partitioner("dirichlet", alpha=0.3, min_size=5) == DirichletPartitioner(0.3, 5)
    assert make_partitioner("iid") == IIDPartitioner()
    assert make_partitioner("shards", shards_per_client=3) == ShardPartitioner(3)


def test_make_partitioner_unknown_name_lists_allowed_names() -> None:
    with pytest.raises(ValueError, match=r"unknown partitioner 'label_skew'.*iid, dirichlet"):
        make_partitioner("label_skew")


def test_make_partitioner_unknown_and_missing_parameters() -> None:
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) beta .*allowed: alpha, min_size"):
        make_partitioner("dirichlet", alpha=1.0, beta=2.0)
    with pytest.raises(ValueError, match=r"'quantity_skew' needs parameter\(s\) alpha"):
        make_partitioner("quantity_skew")
