"""A shared GPU's worker (``yoloq worker --gpu I --share``): which queues it consumes while it has tenants.

The worker runs up to ``routing.sharing.SharePolicy.max_tenants`` pool processes; every ``WATCH_S`` its cordon watch
narrows its tier queues to the size classes whose largest job still fits beside the current tenants
(``routing.sharing.room_mib``), in its -Q order, so it takes only work that can join. An attempt admitted meanwhile is
still checked against the ledger (tasks/share_attempt.py): the watch is how it avoids taking work, the ledger is the
guarantee.
"""

from __future__ import annotations

from collections.abc import Callable

from infra.share_ledger import ShareLedger
from routing.sharing import SharePolicy, room_for
from routing.tiers import queues_for_gpu

WATCH_S = 0.5


def room_queues(
    ledger: ShareLedger, where: tuple[str, int], memory_mib: int, queues: tuple[str, ...]
) -> Callable[[], tuple[str, ...]]:
    """The worker's queues whose jobs fit the GPU's free memory now (all of them while it has no tenant)."""
    host, index = where

    def fitting() -> tuple[str, ...]:
        room = room_for(memory_mib, list(ledger.tenants(host, index).values()), SharePolicy())
        allowed = set(queues_for_gpu(room)) if room > 0 else set()
        return tuple(q for q in queues if q in allowed)

    return fitting
