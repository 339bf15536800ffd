"""Time-to-start percentiles per tier and compliance with the tier's target (pure)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from routing.tiers import Tier


@dataclass(frozen=True, slots=True)
class SlaTarget:
    """``quantile`` of jobs must start within ``within_s`` seconds of submission."""

    quantile: float
    within_s: float


# BRIEF §2: 95 % of critical jobs start within 30 min. Other tiers: tracked, with looser goals.
DEFAULT_TARGETS: dict[Tier, SlaTarget] = {
    Tier.CRITICAL: SlaTarget(0.95, 30 * 60),
    Tier.HIGH: SlaTarget(0.95, 2 * 3600),
    Tier.MEDIUM: SlaTarget(0.90, 8 * 3600),
    Tier.LOW: SlaTarget(0.90, 24 * 3600),
    Tier.BATCH: SlaTarget(0.90, 72 * 3600),
}


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..1); None for no data."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(round(q * len(ordered), 9)))  # 0.07 × 100 is 7.000000000000001 in floats
    return ordered[rank - 1]


def summarize(
    times_s: list[float], target: SlaTarget, waiting_s: Sequence[float] = ()
) -> dict[str, float | int | bool | None]:
    """p50/p95/p99, the share started within the target, and whether the tier meets it (True with no data).

    ``waiting_s`` are the waits so far of jobs not started yet (queued or held): one already past the target is a
    miss now, not when it finally starts, and counts in the percentiles at its wait so far (a lower bound).
    """
    overdue = [w for w in waiting_s if w > target.within_s]
    values = [*times_s, *overdue]
    within = sum(1 for t in times_s if t <= target.within_s)
    share = within / len(values) if values else None
    return {
        "count": len(times_s),
        "waiting_past_target": len(overdue),
        "p50_s": percentile(values, 0.50),
        "p95_s": percentile(values, 0.95),
        "p99_s": percentile(values, 0.99),
        "target_quantile": target.quantile,
        "target_s": target.within_s,
        "within_target": share,
        "compliant": share is None or share >= target.quantile,
    }


def history(
    samples: list[tuple[float, float]], target: SlaTarget, now: float, bucket_s: float = 3600.0, buckets: int = 24
) -> list[dict[str, float | int | None]]:
    """Share of jobs started within the target per time bucket (by start time), oldest first: compliance over time.

    ``samples`` are (start timestamp, time to start in seconds); a bucket with no start has share None.
    """
    first = now - buckets * bucket_s
    counts = [[0, 0] for _ in range(buckets)]
    for started, tts in samples:
        index = math.floor((started - first) / bucket_s)
        if 0 <= index < buckets:
            counts[index][0] += 1
            counts[index][1] += tts <= target.within_s
    return [
        {"start": first + i * bucket_s, "count": n, "within_target": (ok / n) if n else None}
        for i, (n, ok) in enumerate(counts)
    ]
