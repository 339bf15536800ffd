"""The fleet's largest GPU as the supervisor last saw it: one Redis key, read by the door (submit) in one GET.

``yoloq:fleet:largest-gpu-mib`` holds the usable MiB of the biggest device with a live worker claim (cordoned or
not, ready or starting). The leading supervisor writes it every tick with a TTL of a few ticks and deletes it when
it stops, so a stopped supervisor or a fleet scaled to zero leaves it absent, which reads as "not known" (0).
"""

from __future__ import annotations

from typing import cast

import redis

from infra.redis_client import redis_errors

KEY = "yoloq:fleet:largest-gpu-mib"


class FleetCeiling:
    """Publish and read the fleet's largest GPU."""

    def __init__(self, client: redis.Redis, url: str = "") -> None:
        self._r, self._url = client, url

    def publish(self, largest_mib: int, ttl_s: float) -> None:
        """Tell the door how big the biggest GPU is, for ``ttl_s`` (0 withdraws: nothing is known)."""
        with redis_errors(self._url):
            if largest_mib > 0:
                self._r.set(KEY, str(largest_mib), px=max(1, int(ttl_s * 1000)))
            else:
                self._r.delete(KEY)

    def read(self) -> int:
        """The biggest GPU's MiB, or 0 when no supervisor has seen a live worker lately."""
        with redis_errors(self._url):
            value = cast(str | None, self._r.get(KEY))
        return int(value) if value else 0
