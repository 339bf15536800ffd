"""What webhooks cost the scheduler, and how fast the notifier tells a receiver.

1. The registry's state change with no webhook stored vs with one (its script then also appends to the notify
   stream): create + start-like transition + finish, timed per call, interleaved in blocks in one run on one Redis.
2. Change → receipt: N jobs cancelled one by one while one notifier (in a thread) delivers to a local HTTP receiver
   that verifies every signature; latency from the transition's return to the receiver's read, and events/s.

Writes bench/results/notify.json and notify.md. Run: ``.venv/bin/python -m bench.notify [--n 2000] [--events 300]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as `python bench/notify.py`
    sys.path.insert(0, str(ROOT))

from bench.harness.report import machine, summary, write_results  # noqa: E402
from infra.local_redis import start_redis  # noqa: E402
from infra.notify_queue import STREAM  # noqa: E402
from infra.redis_client import connect  # noqa: E402
from infra.registry import Change, RedisRegistry  # noqa: E402
from infra.webhooks import WebhookStore  # noqa: E402
from routing.egress import networks  # noqa: E402
from tasks.records import Event, iso, new_job_id, utc_now  # noqa: E402
from tasks.states import JobState  # noqa: E402
from tests.webhook_receiver import serving_receiver  # noqa: E402
from workers.notifier import Notifier, Options  # noqa: E402

BLOCK = 50
LOOPBACK = networks("127.0.0.0/8")  # the bench's receiver is local: an operator's allowance (routing/egress.py)


def _fields(job_id: str) -> dict[str, str]:
    return {"job_id": job_id, "kind": "probe", "name": "", "tier": "low", "team": "bench", "state": "queued",
            "queue": "yoloq.low.8g", "memory_mib": "1024", "spec": "{}", "attempts": "[]", "task_id": "t",
            "submitted_at": iso(utc_now()), "progress": "{}"}  # fmt: skip


def _one_job(reg: RedisRegistry, job_id: str = "") -> tuple[float, float, float]:
    """Seconds of create, queued→running, running→succeeded for one job (what submit, start and finish write)."""
    job_id, now = job_id or new_job_id(), iso(utc_now())
    t0 = time.perf_counter()
    reg.create(_fields(job_id), Event(at=now, type="submitted", state=JobState.QUEUED), time.time())
    t1 = time.perf_counter()
    reg.transition(job_id, Change(to=JobState.RUNNING, event=Event(at=now, type="started", state=JobState.RUNNING)))
    t2 = time.perf_counter()
    reg.transition(job_id, Change(to=JobState.SUCCEEDED, event=Event(at=now, type="succeeded",
                                                                     state=JobState.SUCCEEDED)))  # fmt: skip
    return t1 - t0, t2 - t1, time.perf_counter() - t2


def scheduler_cost(reg: RedisRegistry, store: WebhookStore, n: int) -> dict[str, Any]:
    """Per-call times with and without a webhook stored, interleaved in blocks of BLOCK jobs."""
    samples: dict[str, dict[str, list[float]]] = {s: {"create": [], "start": [], "finish": []} for s in ("off", "on")}
    for i in range(2 * (n // BLOCK)):
        on = i % 2 == 1
        entry = store.add("http://127.0.0.1:9/none", team="bench", job_id=None, events=["started"], by="bench") if (
            on) else None  # fmt: skip
        for _ in range(BLOCK):
            for name, took in zip(("create", "start", "finish"), _one_job(reg), strict=True):
                samples["on" if on else "off"][name].append(took)
        if entry is not None:
            store.remove(entry["id"])
    return {side: {name: summary(v) for name, v in calls.items()} for side, calls in samples.items()}


def delivery(reg: RedisRegistry, store: WebhookStore, url: str, events: int) -> dict[str, Any]:
    """Change → receipt latency and throughput with one notifier delivering to a local receiver."""
    with serving_receiver() as recv:
        entry = store.add(recv.url + "/b", team="bench", job_id=None, events=["succeeded"], by="bench")
        recv.secrets["/b"] = entry["secret"]
        arrived: dict[str, float] = {}
        handle = recv.handle

        def timed(path: str, headers: Any, payload: bytes) -> int:
            status = handle(path, headers, payload)
            arrived[recv.seen[-1]["doc"]["job"]["job_id"]] = time.perf_counter()
            return status

        recv.handle = timed  # type: ignore[method-assign]
        stop = threading.Event()
        notifier = Notifier(connect(url, read_timeout_s=5), Options(interval_s=0.05), "bench", allowed=LOOPBACK)
        thread = threading.Thread(target=notifier.run, args=(stop,), daemon=True)
        thread.start()
        sent: dict[str, float] = {}
        started = time.perf_counter()
        for _ in range(events):
            job_id = new_job_id()
            _one_job(reg, job_id)
            sent[job_id] = time.perf_counter()
            time.sleep(0.005)  # a busy fleet's pace (200 changes/s), not a burst
        deadline = time.monotonic() + 60
        while not set(sent) <= set(arrived) and time.monotonic() < deadline:
            time.sleep(0.05)
        elapsed = max(sent.values(), default=started) - started
        stop.set()
        thread.join(10)
        store.remove(entry["id"])
    lat = [arrived[j] - sent[j] for j in sent if j in arrived]
    span = max((arrived[j] for j in sent if j in arrived), default=started) - started
    return {"events": events, "delivered": len(lat), "other_deliveries": len(set(arrived) - set(sent)),
            "all_signed": all(s["signed"] for s in recv.seen), "latency_ms": summary(lat),
            "events_per_s": len(lat) / span if span > 0 else 0.0, "submit_s": elapsed}  # fmt: skip


def main() -> None:
    """Run both parts on a private embedded Redis and write the results."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000, help="jobs per side for the scheduler cost")
    parser.add_argument("--events", type=int, default=300, help="events for the delivery part")
    args = parser.parse_args()
    service = start_redis("redis://127.0.0.1:1/0", Path(tempfile.mkdtemp(prefix="yoloq-bench-notify-")), False)
    try:
        client = connect(service.url)
        reg, store = RedisRegistry(client, service.url), WebhookStore(client, service.url, LOOPBACK)
        cost = scheduler_cost(reg, store, args.n)
        streamed = cast(int, client.xlen(STREAM))
        told = delivery(reg, store, service.url, args.events)
        doc = {"machine": machine(client), "n": args.n, "block": BLOCK, "scheduler_ms": cost,
               "stream_entries_written_with_webhook": streamed, "delivery": told}  # fmt: skip
    finally:
        service.stop()
    write_results("notify", doc, _markdown(doc))


def _markdown(doc: dict[str, Any]) -> list[str]:
    m, cost, told = doc["machine"], doc["scheduler_ms"], doc["delivery"]
    off, on = cost["off"], cost["on"]
    rows = [f"| {name} | {off[name]['p50']:.3f} | {on[name]['p50']:.3f} | {off[name]['p99']:.3f} | "
            f"{on[name]['p99']:.3f} |" for name in ("create", "start", "finish")]  # fmt: skip
    lat = told["latency_ms"]
    return [
        f"Webhooks and the scheduler: registry calls with no webhook stored vs one, {doc['n']} jobs each side, "
        f"interleaved in blocks of {doc['block']}, one embedded Redis {m['redis_server']}.",
        f"{m['at']}, {m['nproc']} cores ({m['cpu']}), Python {m['python']}.",
        "",
        "| call | p50 ms, no webhook | p50 ms, webhook | p99 ms, no webhook | p99 ms, webhook |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"Stream entries written while the webhook existed: {doc['stream_entries_written_with_webhook']} (start + "
        "finish per job; a submission that is admitted at once is no event). No HTTP on these paths.",
        "",
        f"Change → receipt, one notifier, local receiver verifying signatures: {told['delivered']} of {told['events']} "
        f"delivered (all signed: {told['all_signed']}), p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms, p99 "
        f"{lat['p99']:.1f} ms; {told['events_per_s']:.0f} events/s from the first change to the last receipt "
        f"(changes made at up to 200/s, over {told['submit_s']:.1f} s). One endpoint's events are POSTed one after "
        "the other, in order (endpoints in parallel), a new connection each; the machine's 2 cores are shared with "
        "the benchmark itself, the receiver and other work.",
    ]


if __name__ == "__main__":
    main()
