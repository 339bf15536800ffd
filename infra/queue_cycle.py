"""The kombu queue-order strategy that makes workers follow the written order inside a tier (routing/eta.py,
docs/eta.md): ``broker_transport_options.queue_order_strategy = "infra.queue_cycle:WrittenOrderCycle"``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import redis
from kombu.utils.scheduling import priority_cycle

from infra.queue_order import header
from infra.redis_client import connect
from infra.settings import load_settings
from routing.eta import pick
from routing.tiers import SIZE_CLASSES, tier_of_queue

log = logging.getLogger("yoloq.queue_cycle")


if TYPE_CHECKING:
    _Base = priority_cycle[str]
else:
    _Base = priority_cycle  # generic only in kombu's stubs


class WrittenOrderCycle(_Base):
    """Kombu's queue-order strategy for our workers (``broker_transport_options.queue_order_strategy``): before each
    BRPOP, the queue that :func:`routing.eta.pick` names from the fronts of the worker's queues goes ahead of the
    other queues of its tier (higher tiers stay ahead: a job that lands there meanwhile still wins). Kombu's own
    ``priority`` order drained the largest size class first, so a 79 GB job submitted last started before two older
    20 GB jobs on the 80 GB card. Any failure reading the fronts falls back to that fixed order for this BRPOP."""

    _client: redis.Redis | None = None

    def consume(self, n: int) -> list[str]:  # type: ignore[override]  # kombu tests the result's truth: a list
        """The worker's queues in the order this BRPOP should try them."""
        queues = [str(q) for q in (self.items or [])[:n]]
        try:
            return reorder(queues, self._fronts(queues))
        except Exception as err:  # never stop a worker's consumption: kombu's fixed order is still a valid order
            log.warning("queue order: reading the queue fronts failed (%s); this take uses the fixed order", err)
            return queues

    def _fronts(self, queues: list[str]) -> dict[str, float]:
        """Submit time of the next message out of each non-empty queue of ours: one pipelined round trip."""
        ours = [q for q in queues if _tier_queue(q)]
        if WrittenOrderCycle._client is None:
            WrittenOrderCycle._client = connect(load_settings().redis_url)
        pipe = WrittenOrderCycle._client.pipeline(transaction=False)
        for queue in ours:
            pipe.lindex(queue, -1)
        out = {}
        for queue, raw in zip(ours, pipe.execute(), strict=True):
            front = header(raw) if raw is not None else None
            if front is not None:
                out[queue] = front[1]
        return out


def _tier_queue(queue: str) -> bool:
    try:
        tier_of_queue(queue)
    except ValueError:
        return False
    return queue.rsplit(".", 1)[-1] in {sc.name for sc in SIZE_CLASSES}


def reorder(queues: list[str], fronts: dict[str, float]) -> list[str]:
    """``queues`` (a worker's fixed order) with the written order's pick moved just ahead of its tier's queues."""
    bounds = [sc.bound_mib for sc in SIZE_CLASSES if any(q.endswith(f".{sc.name}") for q in queues if _tier_queue(q))]
    first = pick(max(bounds), fronts) if bounds else None
    if first is None or first not in queues:
        return queues
    rest = [q for q in queues if q != first]
    tier = tier_of_queue(first)
    at = next((i for i, q in enumerate(rest) if _tier_queue(q) and tier_of_queue(q) is tier), len(rest))
    return [*rest[:at], first, *rest[at:]]
