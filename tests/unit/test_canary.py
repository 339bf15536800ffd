"""The canary split (routing/canary.py): the table of cases, the share it gives over many keys, stable keys."""

from __future__ import annotations

import hashlib

import pytest

from routing.canary import key_fraction, pick

pytestmark = pytest.mark.unit

KEYS = [f"client-{i}" for i in range(10_000)]


@pytest.mark.parametrize(
    ("canary", "share", "key", "draw", "served"),
    [
        (None, 50.0, None, 0.0, 1),  # no canary: always stable, whatever the share says
        (None, 100.0, "k", 0.0, 1),
        (2, 0.0, None, 0.0, 1),  # share 0: stable even for the lowest draw
        (2, -5.0, None, 0.0, 1),  # a negative share is no share
        (2, 100.0, None, 0.999999, 2),  # share 100: canary even for the highest draw
        (2, 150.0, None, 0.999999, 2),
        (2, 10.0, None, 0.0, 2),  # below the share: canary
        (2, 10.0, None, 0.0999, 2),
        (2, 10.0, None, 0.1, 1),  # at the share: stable (the canary gets [0, share))
        (2, 10.0, None, 0.5, 1),
        (2, 50.0, None, 0.4999, 2),
        (2, 50.0, None, 0.5, 1),
        (2, 0.001, None, 0.000005, 2),  # tiny shares still work
        (2, 99.999, None, 0.99998, 2),
        (2, 99.999, None, 0.99999, 1),
    ],
)
def test_the_draw_decides_without_a_key(canary: int | None, share: float, key: str | None, draw: float,
                                        served: int) -> None:  # fmt: skip
    assert pick(1, canary, share, key, draw) == served


def test_a_key_decides_by_its_sha256_and_ignores_the_draw() -> None:
    low = next(k for k in KEYS if key_fraction(k) < 0.05)
    high = next(k for k in KEYS if key_fraction(k) > 0.95)
    for draw in (0.0, 0.5, 0.999):
        assert pick(1, 2, 10.0, low, draw) == 2
        assert pick(1, 2, 10.0, high, draw) == 1
        assert pick(1, 2, 100.0, high, draw) == 2  # share 100 beats the key
        assert pick(1, 2, 0.0, low, draw) == 1  # share 0 beats the key


def test_key_fraction_is_the_first_eight_bytes_of_sha256() -> None:
    digest = hashlib.sha256(b"client-7").digest()
    assert key_fraction("client-7") == int.from_bytes(digest[:8], "big") / 2**64
    assert all(0.0 <= key_fraction(k) < 1.0 for k in KEYS[:1000])


@pytest.mark.parametrize("share", [10.0, 50.0])
def test_ten_thousand_keys_split_within_two_percent_of_the_share(share: float) -> None:
    to_canary = sum(pick(1, 2, share, key, 0.0) == 2 for key in KEYS)
    assert abs(to_canary / len(KEYS) * 100 - share) <= 2.0


def test_each_key_keeps_its_version_and_a_larger_share_only_adds_keys() -> None:
    first = {key: pick(1, 2, 10.0, key, 0.0) for key in KEYS}
    again = {key: pick(1, 2, 10.0, key, 0.73) for key in KEYS}
    assert first == again
    wider = {key: pick(1, 2, 50.0, key, 0.0) for key in KEYS}
    assert all(wider[key] == 2 for key, version in first.items() if version == 2)  # ramping up moves nobody back
