"""Where yoloq's submit→start time goes, step by step, next to plain Celery's (profiling, not the benchmark).

Same stack and closed loop as bench/dispatch.py, but the yoloq worker is bench/harness/traced_worker.py (marks around
each step of an attempt), both workers mark Celery's received/prerun/postrun signals, and the client's validate,
register and send steps are timed in this process. Exact clock everywhere (no millisecond started_at). Writes
bench/results/dispatch_profile.md. Run: ``.venv/bin/python -m bench.profile_dispatch [--n 300]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as `python bench/profile_dispatch.py`
    sys.path.insert(0, str(ROOT))

from bench.dispatch import TIER, WARMUP, interleave  # noqa: E402
from bench.harness.plain_tasks import QUEUE, STARTED_KEY, create_plain_app  # noqa: E402
from bench.harness.stack import bench_stack, poll  # noqa: E402
from bench.harness.trace import wrap  # noqa: E402
from infra.celery_control import CeleryDispatch  # noqa: E402
from tasks import lifecycle  # noqa: E402
from tasks.specs import ProbeSpec  # noqa: E402
from tasks.states import TERMINAL  # noqa: E402
from yoloq.client import Client  # noqa: E402

RESULTS = ROOT / "bench" / "results"
Marks = dict[str, dict[str, float]]  # key (job/task id or y<i>/p<i>) → mark kind → time

YOLOQ_STEPS = [  # (label, from mark, to mark): consecutive, so they add up to the whole
    ("client: validate + route", "t0", "register0"),
    ("client: register (MULTI pipeline)", "register0", "register1"),
    ("client: ids, labels", "register1", "send0"),
    ("client: send_task", "send0", "send1"),
    ("broker → worker parent (received)", "send1", "received"),
    ("parent → pool child (prerun)", "received", "prerun"),
    ("child: prerun → started_at stamp", "prerun", "claim0"),
]
YOLOQ_AFTER = [
    ("claim: transition script", "claim0", "tts0"),
    ("claim: record_time_to_start", "tts0", "tts1"),
    ("registry.get + AttemptControl", "claim1", "control1"),
    ("heartbeat thread start", "control1", "outcome0"),
    ("body (probe 0 s: progress write)", "body0", "body1"),
    ("end_attempt", "end0", "end1"),
    ("heartbeat join", "outcome1", "release0"),
    ("lease release", "release0", "release1"),
    ("attempt return → postrun", "release1", "postrun"),
    ("start stamp → postrun (total)", "claim0", "postrun"),
]
PLAIN_STEPS = [
    ("client: apply_async", "t0", "t1"),
    ("broker → worker parent (received)", "t1", "received"),
    ("parent → pool child (prerun)", "received", "prerun"),
    ("child: prerun → start stamp", "prerun", "start"),
]
PLAIN_AFTER = [("start stamp → postrun (total)", "start", "postrun")]


def read_trace(path: Path, into: Marks, alias: dict[str, str]) -> None:
    """Fold the workers' marks into ``into`` (task ids mapped to the loop's keys through ``alias``)."""
    for line in path.read_text().splitlines():
        kind, key, at = line.split()
        into[alias.get(key, key)].setdefault(kind, float(at))


def profile(n: int, block: int, poll_s: float) -> tuple[Marks, Marks, list[int]]:
    """Run the loop with every mark on; returns the yoloq and plain marks per job and any leaked pids."""
    client_marks: Marks = defaultdict(dict)
    current = {"key": ""}

    def mark(kind: str, _key: str) -> None:
        client_marks[current["key"]].setdefault(kind, time.time())

    wrap(lifecycle, "register", mark, "register", lambda *_, **__: "")
    wrap(CeleryDispatch, "send", mark, "send", lambda *_, **__: "")
    ours: Marks = client_marks
    theirs: Marks = defaultdict(dict)
    alias: dict[str, str] = {}
    with bench_stack(traced=True) as stack:
        settings = stack.services.settings
        r = redis.Redis.from_url(settings.redis_url)
        _, noop = create_plain_app(settings)
        client = Client(settings)
        counter = iter(range(10**9))

        def yoloq_job() -> None:
            key = current["key"] = f"y{next(counter)}"
            ours[key]["t0"] = time.time()
            handle = client.submit(ProbeSpec(seconds=0, tier=TIER, team="bench"))
            ours[key]["t1"] = time.time()
            record = handle.wait(TERMINAL, timeout_s=60, poll_s=poll_s)
            alias[record.job_id] = alias[record.attempts[-1].task_id] = key

        def plain_job() -> None:
            key, token = f"p{next(counter)}", uuid.uuid4().hex
            theirs[key]["t0"] = time.time()
            sent = noop.apply_async(args=[token], queue=QUEUE)
            theirs[key]["t1"] = time.time()
            theirs[key]["start"] = json.loads(poll(lambda: r.hget(STARTED_KEY, token), poll_s, 60))[0]
            alias[str(sent.id)] = key

        interleave(WARMUP, WARMUP, [yoloq_job, plain_job])
        warm = set(alias.values())
        interleave(n, block, [yoloq_job, plain_job])
        assert stack.trace is not None
        worker_marks: Marks = defaultdict(dict)
        read_trace(stack.trace, worker_marks, alias)
    for key, found in worker_marks.items():
        (ours if key.startswith("y") else theirs)[key].update(found)
    measured = {k: v for k, v in ours.items() if k.startswith("y") and k not in warm}
    return measured, {k: v for k, v in theirs.items() if k not in warm}, stack.leaked


def steps(marks: Marks, table: list[tuple[str, str, str]]) -> list[tuple[str, float, float]]:
    """(label, median ms, p90 ms) of each step over the jobs that have both marks."""
    out = []
    for label, a, b in table:
        values = sorted((m[b] - m[a]) * 1000 for m in marks.values() if a in m and b in m)
        if values:
            out.append((label, statistics.median(values), values[int(0.9 * (len(values) - 1))]))
    return out


def idle_gaps(marks: Marks, end: str) -> list[float]:
    """ms from each job's postrun to the next job's t0 of the same path (negative: the next was sent earlier)."""
    ordered = sorted(marks.values(), key=lambda m: m["t0"])
    return sorted((b["t0"] - a[end]) * 1000 for a, b in itertools.pairwise(ordered) if end in a)


def render(ours: Marks, theirs: Marks) -> str:
    """The profile as Markdown."""

    def rows(found: list[tuple[str, float, float]]) -> list[str]:
        return [f"| {label} | {med:.3f} | {p90:.3f} |" for label, med, p90 in found]

    head = ["| step | median ms | p90 ms |", "|---|---|---|"]
    total_y = steps(ours, [("submit → started_at stamp", "t0", "claim0")])
    total_p = steps(theirs, [("submit → start stamp", "t0", "start")])
    gap_y, gap_p = idle_gaps(ours, "postrun"), idle_gaps(theirs, "postrun")
    return "\n".join([
        f"# Dispatch profile ({len(ours)} yoloq, {len(theirs)} plain no-op jobs, exact clock, "
        f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())})", "",
        "## yoloq, submit → start", "", *head, *rows(steps(ours, YOLOQ_STEPS)), *rows(total_y), "",
        "## plain Celery, submit → start", "", *head, *rows(steps(theirs, PLAIN_STEPS)), *rows(total_p), "",
        "## After the start stamp (not in the latency; bounds closed-loop throughput)", "",
        "yoloq:", "", *head, *rows(steps(ours, YOLOQ_AFTER)), "",
        "plain:", "", *head, *rows(steps(theirs, PLAIN_AFTER)), "",
        f"Idle gap postrun → next submit, median ms: yoloq {statistics.median(gap_y):.2f}, "
        f"plain {statistics.median(gap_p):.2f} (negative = the next job was sent while the last still ran).", "",
    ])  # fmt: skip


def main() -> None:
    """Profile, print and store the step table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--block", type=int, default=50)
    parser.add_argument("--poll-ms", type=float, default=5.0)
    args = parser.parse_args()
    ours, theirs, leaked = profile(args.n, args.block, args.poll_ms / 1000)
    text = render(ours, theirs)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "dispatch_profile.md").write_text(text)
    print(text)
    if leaked:
        sys.exit(f"leaked processes: {leaked}")


if __name__ == "__main__":
    main()
