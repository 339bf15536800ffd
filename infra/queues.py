"""Queue depth straight from the broker's Redis lists (what Flower and KEDA cannot count per tier)."""

from __future__ import annotations

import redis

from infra.redis_client import redis_errors


def depths(client: redis.Redis, queues: tuple[str, ...], url: str = "") -> dict[str, int]:
    """Waiting messages per queue, in one pipelined round trip."""
    with redis_errors(url):
        pipe = client.pipeline(transaction=False)
        for queue in queues:
            pipe.llen(queue)
        counts = pipe.execute()
    return dict(zip(queues, (int(c) for c in counts), strict=True))
