"""Submit→start latency of no-op jobs: yoloq (validate, register, route, send, claim) vs plain Celery apply_async.

Both run in the same process against the same embedded Redis, with one prefork worker each (concurrency 1,
prefetch 1, acks_late, priority strategy), closed loop (one job in flight), interleaved in blocks so that noise on
this 2-core machine hits both alike. Writes bench/results/dispatch.json and dispatch.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import celery
import redis

from infra.presence import GpuClaims
from infra.processes import ManagedProcess
from infra.redis_client import connect
from infra.settings import load_settings
from tasks.records import parse_iso
from tasks.specs import ProbeSpec
from tasks.states import JobState
from workers.stack import Services, start_services
from yoloq.client import Client

RESULTS = Path(__file__).resolve().parent / "results"


def _wait(check, timeout_s: float = 30.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.0005)
    raise TimeoutError("benchmark job did not start")


def yoloq_once(client: Client) -> float:
    """One probe(0 s): latency from before submit to the registry's started_at, after it finished."""
    t0 = time.time()
    handle = client.submit(ProbeSpec(seconds=0, tier="high", team="bench"))
    record = _wait(lambda: (r := client.job(handle.job_id)).state is JobState.SUCCEEDED and r)
    return parse_iso(record.started_at).timestamp() - t0


def plain_once(r: redis.Redis, noop) -> float:
    """One plain no-op: latency from before apply_async to the task's recorded start."""
    token = uuid.uuid4().hex
    t0 = time.time()
    noop.apply_async(args=[token], queue="bench.plain")
    started = _wait(lambda: r.hget("bench:plain:started", token))
    return float(started) - t0


def summary(samples: list[float]) -> dict[str, float]:
    """p50/p95/p99/mean in milliseconds."""
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return {
        "p50_ms": pick(0.50),
        "p95_ms": pick(0.95),
        "p99_ms": pick(0.99),
        "mean_ms": statistics.mean(ordered) * 1000,
    }


def _start(services: Services) -> ManagedProcess:
    services.start_worker(0, gpus="0:A100:40")
    claims = GpuClaims(connect(services.settings.redis_url))
    _wait(lambda: any(w.get("ready_at") for w in claims.live()), 60)
    argv = [sys.executable, "-m", "celery", "-A", "bench.plain_tasks", "worker", "-Q", "bench.plain", "-c", "1",
            "--pool", "prefork", "-O", "fair", "--without-gossip", "--without-mingle", "-l", "WARNING"]  # fmt: skip
    log = services.settings.home / "logs" / "plain-worker.log"
    env = services.env(PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    return ManagedProcess("plain-worker", argv, log, env=env)


def run(n: int, block: int) -> dict[str, object]:
    """Measure both paths, n jobs each, and return the figures."""
    home = Path(tempfile.mkdtemp(prefix="yoloq-bench-"))
    settings = load_settings(use_stack_file=False).model_copy(update={"home": home})
    services = start_services(settings, prefer_configured_redis=False)
    plain_worker = _start(services)
    try:
        os.environ["YOLOQ_REDIS_URL"] = services.settings.redis_url  # for bench.plain_tasks' app in this process
        from bench.plain_tasks import noop

        r = redis.Redis.from_url(services.settings.redis_url)
        client = Client(services.settings)
        for _ in range(20):  # warm both paths (imports, connections)
            yoloq_once(client), plain_once(r, noop)
        ours: list[float] = []
        theirs: list[float] = []
        while len(ours) < n:
            ours += [yoloq_once(client) for _ in range(min(block, n - len(ours)))]
            theirs += [plain_once(r, noop) for _ in range(min(block, n - len(theirs)))]
        a, b = summary(ours), summary(theirs)
        return {
            "n": n, "yoloq": a, "plain_celery": b,
            "ratio": {k.replace("_ms", ""): a[k] / b[k] for k in ("p50_ms", "p95_ms", "p99_ms", "mean_ms")},
            "targets": {"p50": 1.2, "p99": 1.5},
            "machine": {"nproc": os.cpu_count(), "python": platform.python_version(), "celery": celery.__version__},
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }  # fmt: skip
    finally:
        plain_worker.stop()
        services.stop()


def markdown(doc: dict) -> str:
    """The results as a Markdown table."""
    a, b, ratio = doc["yoloq"], doc["plain_celery"], doc["ratio"]
    rows = [
        f"| {k} | {a[k + '_ms']:.2f} | {b[k + '_ms']:.2f} | {ratio[k]:.2f}× |" for k in ("p50", "p95", "p99", "mean")
    ]
    head = [f"Submit→start latency, {doc['n']} no-op jobs each, closed loop, same Redis ({doc['at']}, "
            f"{doc['machine']['nproc']} cores, Celery {doc['machine']['celery']})", "",
            "| | yoloq ms | plain Celery ms | ratio |", "|---|---|---|---|"]  # fmt: skip
    verdict = f"Targets: p50 ≤ 1.2× ({ratio['p50']:.2f}×), p99 ≤ 1.5× ({ratio['p99']:.2f}×)."
    return "\n".join([*head, *rows, "", verdict]) + "\n"


def main() -> None:
    """Run, print and store the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--block", type=int, default=50)
    args = parser.parse_args()
    doc = run(args.n, args.block)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "dispatch.json").write_text(json.dumps(doc, indent=2) + "\n")
    table = markdown(doc)
    (RESULTS / "dispatch.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
