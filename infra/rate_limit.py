"""Per-tenant token buckets for the detect API, in Redis so every API process shares them (``yoloq:ratelimit:{tenant}``,
a hash ``{tokens, at}``).

A tenant is an API key's name (the admin token is ``admin``). Its bucket holds up to ``burst`` tokens and refills at
``rate`` tokens per second; a request takes one, or is refused with the time until one is there. One Lua script reads,
refills and takes, so two API processes never both spend the last token, and the clock is Redis's own ``TIME``: API
hosts whose clocks disagree still refill one bucket at one rate. The key expires once the bucket would be full again
(a full bucket and no key are the same), so idle tenants cost no memory.
"""

from __future__ import annotations

import math
from typing import cast

import redis

from infra.redis_client import redis_errors
from tasks.errors import RateLimited

_TAKE = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local held = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(held[1]), tonumber(held[2])
if tokens == nil or at == nil then tokens, at = burst, now end
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'at', string.format('%.6f', now))
redis.call('EXPIRE', KEYS[1], math.ceil((burst - tokens) / rate) + 1)
return string.format('%.6f', wait)
"""


def bucket_key(tenant: str) -> str:
    """Where a tenant's bucket lives (one per key name, shared by every API process)."""
    return f"yoloq:ratelimit:{tenant}"


class RateLimiter:
    """Token buckets of ``rate`` tokens/s up to ``burst``, one per tenant, over one Redis client."""

    def __init__(self, client: redis.Redis, rate: float, burst: int, url: str = "") -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs rate > 0 and burst >= 1, got {rate} and {burst}")
        self.client, self.rate, self.burst, self.url = client, rate, burst, url
        self._take = client.register_script(_TAKE)

    def wait_s(self, tenant: str) -> float:
        """Take a token for ``tenant``: 0.0 when it had one, else the seconds until it will (nothing taken then)."""
        with redis_errors(self.url):
            waited = self._take(keys=[bucket_key(tenant)], args=[repr(self.rate), str(self.burst)])
        return float(cast("bytes | str", waited))

    def take(self, tenant: str) -> None:
        """Take a token for ``tenant`` or raise RateLimited with a whole-second Retry-After (at least 1)."""
        wait = self.wait_s(tenant)
        if wait > 0:
            retry = max(1, math.ceil(wait))
            raise RateLimited(f"tenant {tenant} is over its detect rate ({self.rate:g}/s, burst {self.burst}); "
                              f"retry after {retry} s", retry)  # fmt: skip
