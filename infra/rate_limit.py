"""Per-tenant token buckets for the detect API, in Redis so every API process shares them (``yoloq:ratelimit:{tenant}``,
a hash ``{tokens, at}``).

A tenant is an API key's name (the admin token is ``admin``). Its bucket holds up to ``burst`` tokens and refills at
``rate`` tokens per second; a request takes one, or is refused with the time until one is there. One Lua script reads,
refills and takes, so two API processes never both spend the last token, and the clock is Redis's own ``TIME``: API
hosts whose clocks disagree still refill one bucket at one rate. The key expires once the bucket would be full again
(a full bucket and no key are the same), so idle tenants cost no memory.

``rate`` and ``burst`` are the defaults; an operator may give one tenant its own (``yoloq key limit NAME --rate R
--burst B``: a production line's cameras need more than a test client): ``yoloq:ratelimit-rules`` maps a tenant to
``{rate, burst}``, read by the same script, so a change holds from the next request of every API process, and each
change lands with its audit entry.
"""

from __future__ import annotations

import json
import math
from typing import cast

import redis

from infra.audit import AUDIT_KEY, lua_xadd
from infra.redis_client import redis_errors
from tasks.errors import RateLimited, SpecRejected
from tasks.records import Event, iso, utc_now

_TAKE = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local rule = redis.call('HGET', KEYS[2], ARGV[3])
if rule then
  local own = cjson.decode(rule)
  rate, burst = tonumber(own.rate), tonumber(own.burst)
end
local held = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(held[1]), tonumber(held[2])
if tokens == nil or at == nil then tokens, at = burst, now end
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'at', string.format('%.6f', now))
redis.call('EXPIRE', KEYS[1], math.ceil((burst - tokens) / rate) + 1)
return string.format('%.6f %.6f %d', wait, rate, burst)
"""
_SET_RULE = """
if ARGV[2] == '' then redis.call('HDEL', KEYS[1], ARGV[1]) else redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
XADD
return 1
""".replace("XADD", lua_xadd("KEYS[2]", "''", "ARGV[3]"))
RULES_KEY = "yoloq:ratelimit-rules"
MAX_RATE, MAX_BURST = 1_000_000.0, 1_000_000  # as the defaults' settings allow


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
        self._set = client.register_script(_SET_RULE)

    def _spend(self, tenant: str) -> tuple[float, float, int]:
        """Take a token: (seconds until one is there, 0.0 when taken; the rate and burst that applied)."""
        with redis_errors(self.url):
            raw = self._take(keys=[bucket_key(tenant), RULES_KEY], args=[repr(self.rate), str(self.burst), tenant])
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        wait, rate, burst = text.split()
        return float(wait), float(rate), int(burst)

    def wait_s(self, tenant: str) -> float:
        """Take a token for ``tenant``: 0.0 when it had one, else the seconds until it will (nothing taken then)."""
        return self._spend(tenant)[0]

    def take(self, tenant: str) -> None:
        """Take a token for ``tenant`` or raise RateLimited with a whole-second Retry-After (at least 1)."""
        wait, rate, burst = self._spend(tenant)
        if wait > 0:
            retry = max(1, math.ceil(wait))
            raise RateLimited(f"tenant {tenant} is over its detect rate ({rate:g}/s, burst {burst}); "
                              f"retry after {retry} s", retry)  # fmt: skip

    def set_rule(self, tenant: str, rate: float | None, burst: int | None, by: str) -> None:
        """Give ``tenant`` its own rate and burst (both None: back to the defaults), audited; bad values change
        nothing."""
        if (rate is None) != (burst is None):
            raise SpecRejected("a tenant's limit needs both a rate and a burst (or neither, for the defaults)")
        if rate is not None and burst is not None and not (0 < rate <= MAX_RATE and 1 <= burst <= MAX_BURST):
            raise SpecRejected(
                f"a rate is 0-{MAX_RATE:g}/s (not 0) and a burst 1-{MAX_BURST}; got {rate:g} and {burst}"
            )
        rule = json.dumps({"rate": rate, "burst": burst}) if rate is not None else ""
        what = (
            f"{rate:g}/s, burst {burst}" if rate is not None else f"the defaults ({self.rate:g}/s, burst {self.burst})"
        )
        event = Event(at=iso(utc_now()), type="rate-limit-set", reason=f"tenant {tenant}: {what}", by=by,
                      tenant=tenant)  # fmt: skip
        with redis_errors(self.url):
            self._set(keys=[RULES_KEY, AUDIT_KEY], args=[tenant, rule, event.model_dump_json(exclude_none=True)])

    def rules(self) -> dict[str, tuple[float, int]]:
        """Tenant → (rate, burst), for every tenant with its own limit."""
        with redis_errors(self.url):
            rows = cast("dict[bytes | str, bytes | str]", self.client.hgetall(RULES_KEY))
        decoded = {(k.decode() if isinstance(k, bytes) else k): json.loads(v) for k, v in rows.items()}
        return {tenant: (float(r["rate"]), int(r["burst"])) for tenant, r in decoded.items()}
