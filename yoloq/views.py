"""Read-only fleet views shared by the CLI, the HTTP API, the status page and the metrics: one definition each."""

from __future__ import annotations

from typing import Any

from infra.queues import depths, unacked_by_queue
from infra.registry import RedisRegistry
from routing.tiers import TIERS, all_queues, gang_queues, tier_of_queue
from tasks.records import parse_iso
from tasks.states import JobState


def queue_view(registry: RedisRegistry, now_ts: float) -> dict[str, Any]:
    """Per tier: waiting (every list of the tier's queues), unacked (held by workers), depth = both, oldest wait.

    ``depth`` is the figure to autoscale on (KEDA's metrics-api scaler reads it): a Redis-list scaler would see one
    list of one tier only.
    """
    client, url = registry.client, registry.url
    lists = depths(client, (*all_queues(), *gang_queues()), url)  # a waiting gang needs GPUs too
    held = unacked_by_queue(client, url)
    tiers: dict[str, dict[str, Any]] = {t.value: {"waiting": 0, "unacked": 0, "oldest_wait_s": 0.0} for t in TIERS}
    for queue, count in lists.items():
        tiers[tier_of_queue(queue).value]["waiting"] += count
    for queue, count in held.items():
        if queue in lists:
            tiers[tier_of_queue(queue).value]["unacked"] += count
    for tier, submitted in _oldest_queued(registry).items():
        if submitted is not None:
            tiers[tier]["oldest_wait_s"] = round(max(0.0, now_ts - submitted), 3)
    for row in tiers.values():
        row["depth"] = row["waiting"] + row["unacked"]
    return {"tiers": tiers, "total": sum(row["depth"] for row in tiers.values())}


def _oldest_queued(registry: RedisRegistry) -> dict[str, float | None]:
    """Each tier's oldest queued submit time: from the per-tier index (O(tiers)), or, while that index misses jobs
    queued before it existed, from every queued record."""
    names = [t.value for t in TIERS]
    indexed = registry.oldest_queued(names)
    if indexed is not None:
        return indexed
    oldest: dict[str, float | None] = dict.fromkeys(names)
    for record in registry.many(registry.ids(JobState.QUEUED, limit=100_000)):
        submitted, now_oldest = parse_iso(record.submitted_at).timestamp(), oldest[record.tier.value]
        oldest[record.tier.value] = submitted if now_oldest is None else min(now_oldest, submitted)
    return oldest
