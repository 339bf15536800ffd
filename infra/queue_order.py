"""The broker's queues in the order workers take from them: each list's waiting messages front first (what the ETA
replays), read straight from Redis. The workers' side of the same order is :mod:`infra.queue_cycle`.

Kombu's Redis transport LPUSHes a message and a worker BRPOPs it, so the right end of a list is the front. Each of our
messages carries its task id (``headers.id``) and its job's submit time (``headers.yoloq_submitted``, infra.queues).
"""

from __future__ import annotations

import json
from typing import cast

import redis

from infra.queues import SUBMITTED_HEADER
from infra.redis_client import redis_errors


def header(raw: str) -> tuple[str, float] | None:
    """(task id, submit time) of one message; None for anything that is not one of ours."""
    try:
        headers = json.loads(raw).get("headers") or {}
        return str(headers["id"]), float(headers.get(SUBMITTED_HEADER) or 0.0)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def waiting(client: redis.Redis, queues: tuple[str, ...], url: str = "") -> dict[str, list[tuple[str, float]]]:
    """Per non-empty queue, (task id, submit time) of each waiting message, the next one out first; one round trip."""
    with redis_errors(url):
        pipe = client.pipeline(transaction=False)
        for queue in queues:
            pipe.lrange(queue, 0, -1)
        lists = cast(list[list[str]], pipe.execute())
    out: dict[str, list[tuple[str, float]]] = {}
    for queue, items in zip(queues, lists, strict=True):
        parsed = [h for raw in reversed(items) if (h := header(raw)) is not None]
        if parsed:
            out[queue] = parsed
    return out
