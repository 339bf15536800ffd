"""Which GPU sizes the fleet has had lately: one small Redis hash, read by the door (submit) in one round trip.

``yoloq:fleet:gpu-sizes`` maps a device's usable MiB to when it was last seen (epoch seconds): the leading supervisor
records the sizes under live worker claims every tick, each autoscaler the sizes of the devices it may start. The
hash holds one field per distinct size, so it stays a handful of fields; old ones are ignored by
:func:`routing.fleet_fit.largest_seen`, never trusted.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import redis

from infra.redis_client import redis_errors

KEY = "yoloq:fleet:gpu-sizes"


class FleetCeiling:
    """Record and read the GPU sizes the fleet has had."""

    def __init__(self, client: redis.Redis, url: str = "") -> None:
        self._r, self._url = client, url

    def saw(self, sizes_mib: Iterable[int], now: float) -> None:
        """Note that devices of these sizes exist (live, or startable) at ``now``."""
        fields = {str(mib): f"{now:.3f}" for mib in set(sizes_mib) if mib > 0}
        if fields:
            with redis_errors(self._url):
                self._r.hset(KEY, mapping=fields)

    def seen(self) -> dict[int, float]:
        """Every size ever recorded and when it was last seen."""
        with redis_errors(self._url):
            raw = cast(dict[str, str], self._r.hgetall(KEY))
        return {int(mib): float(at) for mib, at in raw.items()}
