"""Redis's clock, read through an offset refreshed now and then: the one clock every host of the detect path shares.

A detect request carries its ``deadline`` and enqueue time (``enq``) from the API host and is judged on the replica
host: with each on its own clock, a replica 30 s ahead would drop every request as expired. Both ends instead read
``local time + (Redis TIME - local time)``, the offset measured at the midpoint of one ``TIME`` round trip and
refreshed every :data:`REFRESH_S` (one round trip per host per half minute, none per request). When Redis cannot be
read the last offset stays (0 before the first read: the host's own clock, as before).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import cast

import redis

log = logging.getLogger("yoloq.clock")
REFRESH_S = 30.0


class RedisClock:
    """``now()`` in seconds since the epoch on the Redis server's clock (see the module docstring)."""

    def __init__(self, client: redis.Redis, refresh_s: float = REFRESH_S,
                 local: Callable[[], float] = time.time) -> None:  # fmt: skip
        self._client, self._refresh_s, self._local = client, refresh_s, local
        self._offset, self._read_at = 0.0, float("-inf")
        self._lock = threading.Lock()

    @property
    def offset_s(self) -> float:
        """Redis's clock minus this host's, as last measured."""
        return self._offset

    def now(self) -> float:
        """The shared clock's time (refreshing the offset when it is due)."""
        if time.monotonic() - self._read_at >= self._refresh_s:
            self._sync()
        return self._local() + self._offset

    def _sync(self) -> None:
        with self._lock:
            if time.monotonic() - self._read_at < self._refresh_s:
                return  # another thread just did
            self._read_at = time.monotonic()
            try:
                before = self._local()
                seconds, micros = cast("tuple[int, int]", self._client.time())
                after = self._local()
            except (redis.ConnectionError, redis.TimeoutError) as err:
                log.warning("Redis clock not read (keeping offset %.3f s): %s", self._offset, err)
                return
            self._offset = seconds + micros / 1e6 - (before + after) / 2
