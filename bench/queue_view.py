"""Per-tier queue view (what /api/v1/queues, /metrics and every KEDA scrape compute) with many jobs queued: the
per-tier queued index versus reading every queued record (the fallback, and what every scrape did before), in the
same run on the same embedded Redis.

Run: ``.venv/bin/python -m bench.queue_view [--jobs 10000]``; writes bench/results/queue_view.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, cast

from bench.harness.report import write_results
from infra.leases import Leases
from infra.local_redis import start_redis
from infra.redis_client import connect
from infra.registry import RedisRegistry, queued_key
from infra.settings import Settings
from routing.tiers import TIERS, route
from tasks import lifecycle
from tasks.records import new_job_id
from tasks.runtime import Runtime
from tasks.specs import ProbeSpec
from yoloq.views import queue_view


def _timed(rt: Runtime, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        queue_view(rt.registry, time.time())
        out.append((time.perf_counter() - started) * 1000)
    return out


def _waits(view: dict[str, Any]) -> dict[str, tuple[int, float]]:
    """Depth and oldest wait per tier."""
    return {tier: (row["depth"], row["oldest_wait_s"]) for tier, row in view["tiers"].items()}


def _same(a: dict[str, tuple[int, float]], b: dict[str, tuple[int, float]]) -> bool:
    """Same depths, waits within 2 ms (records carry submit times in ISO, to the millisecond)."""
    return a.keys() == b.keys() and all(a[t][0] == b[t][0] and abs(a[t][1] - b[t][1]) <= 0.002 for t in a)


def main(argv: list[str] | None = None) -> None:
    """Fill the registry, time the view with the index, then without it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    jobs = parser.parse_args(argv).jobs
    with tempfile.TemporaryDirectory(prefix="yoloq-queue-view-") as tmp:
        redis = start_redis("redis://127.0.0.1:1/0", Path(tmp), prefer_configured=False)
        try:
            client = connect(redis.url)
            settings = Settings(home=Path(tmp), redis_url=redis.url)
            registry = RedisRegistry(client, redis.url)
            rt = Runtime(settings, registry, Leases(client), cast(Any, None), cast(Any, None))
            for n in range(jobs):
                spec = ProbeSpec(seconds=1, tier=TIERS[n % len(TIERS)], team="bench")
                lifecycle.register(registry, new_job_id(), spec, route(spec.tier, spec.memory_mib()), f"t{n}")
            indexed = _timed(rt, 20)
            at = time.time() + 100
            expected = _waits(queue_view(rt.registry, at))
            client.delete(*[queued_key(t.value) for t in TIERS])
            records = _timed(rt, 3)
            assert _same(_waits(queue_view(rt.registry, at)), expected), "the fallback must give the same view"
        finally:
            redis.stop()
    rows = {name: {"p50_ms": round(statistics.median(v), 2), "max_ms": round(max(v), 2), "runs": len(v)}
            for name, v in (("index", indexed), ("every record", records))}  # fmt: skip
    ratio = rows["every record"]["p50_ms"] / max(rows["index"]["p50_ms"], 1e-9)
    doc = {"queued_jobs": jobs, "rows": rows, "speedup_p50": round(ratio, 1)}
    write_results(
        "queue_view",
        doc,
        [
            f"Queue view (per-tier depth and oldest wait) with {jobs} jobs queued, embedded Redis, same run.",
            "",
            "| oldest wait from | p50 ms | max ms | runs |",
            "|---|---|---|---|",
            *(f"| {name} | {r['p50_ms']} | {r['max_ms']} | {r['runs']} |" for name, r in rows.items()),
            "",
            f"Per-tier index {ratio:.0f}× faster at p50.",
        ],
    )


if __name__ == "__main__":
    main()
