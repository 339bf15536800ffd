"""Which version of an alias answers a request: the stable one, or its canary for ``share_pct`` % of requests.

A request that carries a routing key (a client or session id) gets a fraction from the key's sha256, so the same key
always lands on the same version while the split stands: a user does not flip between two models from one request to
the next, and a canary's errors reproduce. Without a key the caller's random draw decides. Pure: the caller supplies
the draw, so the split is table-tested without a random generator.
"""

from __future__ import annotations

import hashlib

_SCALE = float(2**64)


def key_fraction(key: str) -> float:
    """A key's stable place in [0, 1): the first 8 bytes of its sha256, so it is the same in every process."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / _SCALE


def pick(stable: int, canary: int | None, share_pct: float, key: str | None, draw: float) -> int:
    """The version to serve: the canary when the request's fraction (from ``key``, else ``draw`` in [0, 1)) falls
    below ``share_pct`` %; the stable version otherwise, and always when there is no canary or its share is 0."""
    if canary is None or share_pct <= 0:
        return stable
    if share_pct >= 100:
        return canary
    fraction = key_fraction(key) if key is not None else draw
    return canary if fraction * 100 < share_pct else stable
