"""Wake the supervisor when work starts waiting, so a critical job is decided on within milliseconds, not a tick.

The registry's scripts ``PUBLISH`` the job id on :data:`CHANNEL` in the same atomic step that makes a job ``queued``
(submitted, requeued, released from hold, promoted). Every supervisor (leader and standbys) listens; a message that
finds no listener is simply dropped, and the interval tick still catches up, so nothing depends on delivery.
"""

from __future__ import annotations

import contextlib
import logging
import time

import redis

log = logging.getLogger(__name__)

CHANNEL = "yoloq:wake"
COALESCE_S = 0.02  # a burst of submissions becomes one tick


class WakeListener:
    """A subscription to :data:`CHANNEL`; :meth:`wait` returns early when a job starts waiting."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._pubsub: redis.client.PubSub | None = None

    def wait(self, timeout_s: float) -> bool:
        """Sleep up to ``timeout_s``; True when woken by a job that started waiting (a burst counts once)."""
        deadline = time.monotonic() + timeout_s
        try:
            pubsub = self._subscribed()
            while (left := deadline - time.monotonic()) > 0:
                message = pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
                if message is not None:
                    time.sleep(COALESCE_S)
                    while pubsub.get_message(ignore_subscribe_messages=True, timeout=0) is not None:
                        pass
                    return True
        except (redis.ConnectionError, redis.TimeoutError, OSError) as err:
            log.warning("wake channel unavailable (%s); ticking on the interval only", err)
            self.close()
            time.sleep(max(0.0, deadline - time.monotonic()))
        return False

    def _subscribed(self) -> redis.client.PubSub:
        if self._pubsub is None:
            pubsub = self._client.pubsub()  # type: ignore[no-untyped-call]  # untyped in redis-py 7
            pubsub.subscribe(CHANNEL)
            self._pubsub = pubsub
        return self._pubsub

    def close(self) -> None:
        """Drop the subscription (a new one is made on the next wait)."""
        if self._pubsub is not None:
            with contextlib.suppress(redis.ConnectionError, OSError):
                self._pubsub.close()
            self._pubsub = None
