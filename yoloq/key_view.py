"""What ``yoloq key list|limit`` and ``/api/v1/keys`` share: every key with the detect limit it is held to, and
setting one key's own limit (only for a key that exists, or for the admin token's tenant ``admin``)."""

from __future__ import annotations

from typing import Any

from infra.api_keys import ApiKeys
from infra.rate_limit import RateLimiter
from routing.access import ADMIN
from tasks.errors import KeyNotFound, clipped


def listed(keys: ApiKeys, limiter: RateLimiter) -> list[dict[str, Any]]:
    """Every key (never a secret), each with ``detect_limit``: its rate, burst and whether they are its own."""
    entries, rules = keys.entries(), limiter.rules()
    for entry in entries:
        rate, burst = rules.get(entry["name"], (limiter.rate, limiter.burst))
        entry["detect_limit"] = {"rate": rate, "burst": burst, "own": entry["name"] in rules}
    return entries


def set_limit(keys: ApiKeys, limiter: RateLimiter, name: str, rate: float | None, burst: int | None, *,
              by: str) -> dict[str, Any]:  # fmt: skip
    """Give a key its own detect limit (both None: back to the defaults), so a rule never waits for a key of that
    name to be created later; returns the limit that now applies."""
    if name != ADMIN and not keys.exists(name):
        raise KeyNotFound(f"no key named {clipped(name, 80)} (yoloq key list; 'admin' is the admin token's tenant)")
    limiter.set_rule(name, rate, burst, by=by)
    own = rate is not None and burst is not None
    return {"name": name, "rate": rate if own else limiter.rate, "burst": burst if own else limiter.burst, "own": own}
