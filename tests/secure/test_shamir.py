"""Vectorised Shamir sharing over GF(2^128): byte compatibility with pycryptodome, errors."""

from __future__ import annotations

import random

import pytest
from Crypto.Protocol.SecretSharing import Shamir

from privfed.secure.errors import InvalidInputError, MessageRejectedError
from privfed.secure.masking.shamir import (
    BLOCK,
    MAX_INDEX,
    combine_secret,
    combine_secrets,
    split_secret,
)

# (threshold, count, blocks); 67-of-100 is the deployment shape of 100 clients.
CASES = [(1, 1, 1), (1, 5, 2), (2, 2, 1), (2, 9, 3), (7, 20, 2), (67, 100, 1)]


def _blocks(data: bytes) -> list[bytes]:
    return [data[off : off + BLOCK] for off in range(0, len(data), BLOCK)]


def _reference_combine(shares: dict[int, bytes]) -> bytes:
    """pycryptodome's interpolation at 0, block by block (exactly the given shares)."""
    items = list(shares.items())
    size = len(items[0][1])
    return b"".join(Shamir.combine([(index, share[off : off + BLOCK]) for index, share in items])
                    for off in range(0, size, BLOCK))


def _evaluate_at(point: int, shares: dict[int, bytes]) -> bytes:
    """Value at ``point`` of the polynomial through ``shares`` (degree ``len(shares) - 1``).

    In characteristic 2, ``q(x) = p(x + point)`` has the same degree and ``q(0) = p(point)``,
    ``q(index + point) = p(index)`` (``+`` is xor).
    """
    return combine_secret({index ^ point: share for index, share in shares.items()},
                          len(shares))


@pytest.mark.parametrize(("threshold", "count", "blocks"), CASES)
def test_combine_recovers_secret_from_pycryptodome_shares(threshold, count, blocks):
    rng = random.Random(threshold * 1000 + count)
    secret = rng.randbytes(BLOCK * blocks)
    per_block = [Shamir.split(threshold, count, block) for block in _blocks(secret)]
    shares = {index: b"".join(block[index - 1][1] for block in per_block)
              for index in range(1, count + 1)}
    for _ in range(3):
        chosen = rng.sample(range(1, count + 1), rng.randint(threshold, count))  # unsorted
        assert combine_secret({index: shares[index] for index in chosen}, threshold) == secret


@pytest.mark.parametrize(("threshold", "count", "blocks"), CASES)
def test_pycryptodome_recovers_secret_from_our_shares(threshold, count, blocks):
    rng = random.Random(threshold * 1000 + count + 1)
    secret = rng.randbytes(BLOCK * blocks)
    shares = split_secret(secret, threshold, count)
    assert len(shares) == count
    assert all(len(share) == len(secret) for share in shares)
    for _ in range(2):
        chosen = rng.sample(range(1, count + 1), threshold)
        assert _reference_combine({index: shares[index - 1] for index in chosen}) == secret


@pytest.mark.parametrize("threshold", [1, 2, 5, 20])
def test_combine_is_pycryptodome_interpolation_on_arbitrary_values(threshold):
    """Random share values (no polynomial behind them) at random indices up to 2**16 - 1."""
    rng = random.Random(threshold)
    owners = {}
    for owner in range(6):
        indices = rng.sample(range(1, MAX_INDEX + 1), threshold)
        if owner == 0:
            indices[-1] = MAX_INDEX
        owners[owner] = {index: rng.randbytes(BLOCK * (1 + owner % 3)) for index in indices}
    combined = combine_secrets(owners, threshold)
    for owner, shares in owners.items():
        assert combined[owner] == _reference_combine(shares)
        assert combine_secret(shares, threshold) == combined[owner]


def test_combine_secrets_groups_owners_by_index_set_and_length():
    rng = random.Random(5)
    threshold, count = 4, 9
    secrets = {owner: rng.randbytes(BLOCK * (1 + owner % 2)) for owner in range(12)}
    subsets = [[1, 2, 3, 4], [2, 5, 8, 9], [1, 2, 3, 4, 7], [9, 3, 6, 1, 2]]
    shares = {}
    for owner in sorted(secrets, reverse=True):  # result must follow the input order
        full = split_secret(secrets[owner], threshold, count)
        shares[owner] = {index: full[index - 1] for index in subsets[owner % 4]}
    shares[11][9] = b"garbage"  # owner 11 uses indices 1, 2, 3, 6: index 9 is never read
    combined = combine_secrets(shares, threshold)
    assert list(combined) == list(shares)
    assert combined == secrets


def test_fewer_than_threshold_shares_cannot_pin_the_secret():
    rng = random.Random(6)
    secret, other = rng.randbytes(2 * BLOCK), rng.randbytes(2 * BLOCK)
    threshold, count = 5, 8
    shares = dict(enumerate(split_secret(secret, threshold, count), start=1))
    known = {index: shares[index] for index in range(1, threshold)}
    # The polynomial has full degree in every block: t - 1 shares interpolate elsewhere.
    guess = combine_secret(known, threshold - 1)
    assert all(a != b for a, b in zip(_blocks(guess), _blocks(secret), strict=True))
    # The same t - 1 shares complete to the real secret or to any other one.
    completion = _evaluate_at(threshold, {0: other} | known)
    assert combine_secret(known | {threshold: completion}, threshold) == other
    assert combine_secret(known | {threshold: shares[threshold]}, threshold) == secret
    assert _evaluate_at(count, known | {threshold: shares[threshold]}) == shares[count]


def test_split_draws_fresh_coefficients():
    secret = bytes(BLOCK)
    first, second = split_secret(secret, 2, 3), split_secret(secret, 2, 3)
    assert first != second
    assert first[0] != secret  # share 1 of a zero secret is the random coefficient itself
    assert split_secret(secret, 1, 3) == [secret] * 3  # as Shamir.split: t = 1 is a copy


@pytest.mark.parametrize(("threshold", "count"), [(0, 3), (4, 3), (-1, 5), (2, MAX_INDEX + 1)])
def test_split_rejects_bad_threshold_or_count(threshold, count):
    with pytest.raises(InvalidInputError, match="threshold|count"):
        split_secret(bytes(BLOCK), threshold, count)


@pytest.mark.parametrize("length", [0, 1, 15, 17, 40])
def test_split_rejects_secret_length(length):
    with pytest.raises(InvalidInputError, match=f"secret length {length} "):
        split_secret(bytes(length), 1, 2)


def test_too_few_shares_names_the_owner():
    shares = dict(enumerate(split_secret(bytes(BLOCK), 3, 5), start=1))
    full = {1: shares, 2: shares}
    with pytest.raises(InvalidInputError, match=r"owner 7: 2 shares < threshold 3"):
        combine_secrets(full | {7: {1: shares[1], 2: shares[2]}}, 3)
    with pytest.raises(InvalidInputError, match=r"2 shares < threshold 3"):
        combine_secret({1: shares[1], 2: shares[2]}, 3)
    with pytest.raises(InvalidInputError, match="threshold 0"):
        combine_secrets(full, 0)


@pytest.mark.parametrize("lengths", [(16, 32, 16), (0, 0, 0), (15, 15, 15), (48, 48, 47)])
def test_inconsistent_or_invalid_share_lengths_are_rejected(lengths):
    shares = {index: bytes(size) for index, size in enumerate(lengths, start=1)}
    with pytest.raises(MessageRejectedError, match="owner 3: shares of inconsistent"):
        combine_secrets({1: {1: bytes(16), 2: bytes(16), 3: bytes(16)}, 3: shares}, 3)
    with pytest.raises(MessageRejectedError, match="inconsistent or invalid length"):
        combine_secret(shares, 3)


@pytest.mark.parametrize("index", [0, -3, MAX_INDEX + 1])
def test_out_of_range_index_is_rejected(index):
    shares = {index: bytes(BLOCK), 5: bytes(BLOCK)}
    with pytest.raises(MessageRejectedError, match=f"Shamir index {index} not in"):
        combine_secret(shares, 2)
    with pytest.raises(MessageRejectedError, match=f"owner 9: Shamir index {index}"):
        combine_secrets({9: shares}, 2)
