"""Leader election for the supervisor: one Redis key with a TTL, held by exactly one live process.

``yoloq:leader:{role}`` = the holder's identity, ``SET NX PX``; the leader renews it every TTL/3 with a
compare-and-PEXPIRE, and a standby that finds it gone takes it. A leader that fails to renew stops acting at once
(it may have been paused past the TTL and another took over), so two supervisors never act together for longer than
one tick.
"""

from __future__ import annotations

import redis

from infra.leases import RELEASE_IF_HELD, RENEW_IF_HELD
from infra.redis_client import redis_errors


class LeaderLease:
    """Acquire-or-renew leadership of ``role`` for ``identity``."""

    def __init__(self, client: redis.Redis, role: str, identity: str, ttl_s: float, url: str = "") -> None:
        self.key, self.identity, self.ttl_ms, self._url = f"yoloq:leader:{role}", identity, int(ttl_s * 1000), url
        self._r = client
        self._renew = client.register_script(RENEW_IF_HELD)
        self._release = client.register_script(RELEASE_IF_HELD)

    def hold(self) -> bool:
        """Renew leadership if held, else try to take it; True while this process is the leader."""
        with redis_errors(self._url):
            if self._renew(keys=[self.key], args=[self.identity, self.ttl_ms]):
                return True
            return bool(self._r.set(self.key, self.identity, nx=True, px=self.ttl_ms))

    def holder(self) -> str | None:
        """Identity of the current leader, if any."""
        with redis_errors(self._url):
            value = self._r.get(self.key)
        return str(value) if value else None

    def release(self) -> None:
        """Give leadership up (clean shutdown) so a standby takes over without waiting for the TTL."""
        with redis_errors(self._url):
            self._release(keys=[self.key], args=[self.identity])
