"""Submit→start latency of no-op jobs: yoloq (validate, register, route, send, claim) vs plain Celery apply_async.

Both paths run in one process against the same embedded Redis, each with one prefork worker configured alike
(concurrency 1, prefetch 1, acks_late, priority strategy, -O fair, -E), closed loop (one job in flight, the next sent
once the previous finished), interleaved in blocks so that noise on the machine hits both alike. Writes
bench/results/dispatch.json and dispatch.md and prints the table. Run: ``.venv/bin/python -m bench.dispatch``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as `python bench/dispatch.py`: make the repository importable
    sys.path.insert(0, str(ROOT))

from bench.harness import report  # noqa: E402
from bench.harness.plain_tasks import QUEUE, STARTED_KEY, create_plain_app  # noqa: E402
from bench.harness.stack import BenchStack, bench_stack, poll  # noqa: E402
from infra.redis_client import connect  # noqa: E402
from tasks.records import parse_iso  # noqa: E402
from tasks.specs import ProbeSpec  # noqa: E402
from tasks.states import JobState  # noqa: E402
from yoloq.client import Client  # noqa: E402

RESULTS = ROOT / "bench" / "results"
TIER = "high"
WARMUP = 20
# started_at is ISO truncated to the millisecond: +0.5 ms makes the estimate unbiased (applied to both paths alike).
HALF_MS = 0.0005


@dataclass
class Samples:
    """Per-job seconds: submit→start (registry resolution), the submit call alone, submit→start exact (plain)."""

    latency: list[float] = field(default_factory=list)
    submit: list[float] = field(default_factory=list)
    exact: list[float] = field(default_factory=list)


def yoloq_once(client: Client, poll_s: float, out: Samples, timeout_s: float = 30) -> str:
    """One probe(0 s) through Client.submit, waited to its end; latency to the registry's started_at."""
    t0 = time.time()
    handle = client.submit(ProbeSpec(seconds=0, tier=TIER, team="bench"))
    t1 = time.time()
    record = handle.wait(timeout_s=timeout_s, poll_s=poll_s)
    if record.state is not JobState.SUCCEEDED or not record.started_at:
        raise RuntimeError(f"bench job {record.job_id} ended {record.state.value}: {record.error}")
    out.latency.append(parse_iso(record.started_at).timestamp() + HALF_MS - t0)
    out.submit.append(t1 - t0)
    return record.attempts[-1].task_id


def plain_once(noop: Any, r: redis.Redis, poll_s: float, out: Samples, timeout_s: float = 30) -> str:
    """One plain no-op through apply_async, waited until it ran; latency to the start it recorded."""
    token = uuid.uuid4().hex
    t0 = time.time()
    sent = noop.apply_async(args=[token], queue=QUEUE)
    t1 = time.time()
    exact, at = json.loads(poll(lambda: r.hget(STARTED_KEY, token), poll_s, timeout_s))
    out.latency.append(parse_iso(at).timestamp() + HALF_MS - t0)
    out.submit.append(t1 - t0)
    out.exact.append(exact - t0)
    return str(sent.id)


def interleave(n: int, block: int, runs: list[Callable[[], object]]) -> None:
    """n calls of each run, in blocks of ``block``, swapping which run goes first every block."""
    for index in range(0, n, block):
        for one in runs if (index // block) % 2 == 0 else runs[::-1]:
            for _ in range(min(block, n - index)):
                one()


def measure(stack: BenchStack, n: int, block: int, poll_s: float) -> tuple[Samples, Samples]:
    """Warm both paths, then n jobs each, interleaved."""
    settings = stack.services.settings
    r = redis.Redis.from_url(settings.redis_url)
    _, noop = create_plain_app(settings)
    client = Client(settings)
    scratch = Samples()
    yoloq_once(client, poll_s, scratch, timeout_s=60)
    plain_once(noop, r, poll_s, scratch, timeout_s=60)  # also waits for the plain worker to come up
    ours, theirs = Samples(), Samples()
    for count, size, a, b in ((WARMUP, WARMUP, scratch, scratch), (n, block, ours, theirs)):
        interleave(count, size, [partial(yoloq_once, client, poll_s, a), partial(plain_once, noop, r, poll_s, b)])
    return ours, theirs


def run(n: int, block: int, poll_ms: float) -> dict[str, Any]:
    """Start the stack in a fresh home, measure, stop everything; returns the results document."""
    with bench_stack() as stack:
        ours, theirs = measure(stack, n, block, poll_ms / 1000)
        info = report.machine(connect(stack.services.settings.redis_url))
    latency = {"yoloq": report.summary(ours.latency), "plain": report.summary(theirs.latency)}
    ratio = report.ratios(latency["yoloq"], latency["plain"])
    targets = {"p50": 1.2, "p99": 1.5}
    return {
        "n": n, "block": block, "warmup": WARMUP, "poll_ms": poll_ms, "machine": info,
        "latency_ms": {**latency, "plain_exact": report.summary(theirs.exact)},
        "submit_call_ms": {"yoloq": report.summary(ours.submit), "plain": report.summary(theirs.submit)},
        "ratio": ratio, "targets": targets, "meets_targets": {k: ratio[k] <= v for k, v in targets.items()},
        "leaked_pids": stack.leaked,
    }  # fmt: skip


def main() -> None:
    """Run, print and store the benchmark; exit 1 if any process it started outlived it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="measured jobs per path (default 500)")
    parser.add_argument("--block", type=int, default=50, help="jobs per interleaved block (default 50)")
    parser.add_argument("--poll-ms", type=float, default=5.0, help="completion poll interval, both paths")
    args = parser.parse_args()
    doc = run(args.n, args.block, args.poll_ms)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "dispatch.json").write_text(json.dumps(doc, indent=2) + "\n")
    table = report.markdown(doc)
    (RESULTS / "dispatch.md").write_text(table)
    print(table)
    if doc["leaked_pids"]:
        sys.exit(f"leaked processes: {doc['leaked_pids']}")


if __name__ == "__main__":
    main()
