"""The benchmark's stack: embedded Redis + S3 in a fresh home, one yoloq worker and one plain Celery worker.

Both workers get the same Celery options (prefork, -c 1, -O fair, -E, no gossip/mingle, the same log level); the
yoloq worker is waited for until its GPU claim shows ``ready_at``. On exit everything is stopped and every process
the stack started is checked to be gone (``leaked``); the temporary home is removed unless the run failed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import procs
from bench.harness.plain_tasks import QUEUE
from infra.presence import GpuClaims
from infra.processes import ManagedProcess
from infra.redis_client import connect
from infra.settings import load_settings
from routing.tiers import DEVICE_PREFIX
from workers.stack import Services, start_services

ROOT = Path(__file__).resolve().parents[2]
GPUS = "0:A100:40"


@dataclass
class BenchStack:
    """What a benchmark talks to; ``leaked`` is filled in once the stack has stopped."""

    services: Services
    home: Path
    trace: Path | None
    leaked: list[int] = field(default_factory=list)
    before: set[int] = field(default_factory=set)  # processes that ran before it (a test session's): not its own


def poll(check: Callable[[], Any], interval_s: float, timeout_s: float, what: str = "") -> Any:
    """``check()`` until it returns something truthy (checked at once, then every ``interval_s``); TimeoutError,
    naming ``what`` when given, after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not (value := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {timeout_s:.0f} s" if what else f"nothing after {timeout_s:.0f}s")
        time.sleep(interval_s)
    return value


def active_queues(app: Any, node: str) -> list[str] | None:
    """The shared queues a worker consumes right now, as it answers itself (None when it does not answer); its own
    device queue, which it keeps while cordoned (only a job placed on it arrives there), is left out."""
    replies = app.control.inspect(destination=[node], timeout=2).active_queues() or {}
    if node not in replies:
        return None
    return [q["name"] for q in replies[node] if not q["name"].startswith(DEVICE_PREFIX)]


def _start_workers(services: Services, trace: Path | None) -> ManagedProcess:
    """The yoloq worker for GPU 0 (traced when ``trace``), waited until it consumes; then the plain worker."""
    traced = {"BENCH_TRACE": str(trace)} if trace else {}
    env = services.env(PYTHONPATH=str(ROOT), YOLOQ_GPUS=GPUS, **traced)
    if trace is None:
        services.start_worker(0, gpus=GPUS)
    else:
        argv = [sys.executable, "-m", "bench.harness.traced_worker", "0"]
        services.workers[0] = ManagedProcess("worker-gpu0", argv, services.settings.home / "logs" / "worker.log", env)
    claims = GpuClaims(connect(services.settings.redis_url), services.settings.redis_url)
    poll(lambda: any(w.get("ready_at") for w in claims.live()), 0.05, 60)
    argv = [sys.executable, "-m", "celery", "-A", "bench.harness.plain_tasks", "worker", "-Q", QUEUE, "-c", "1",
            "-n", f"bench-plain-{os.getpid()}@%h", "--pool", "prefork", "-l", services.settings.log_level,
            "-E", "--without-gossip", "--without-mingle", "-O", "fair"]  # fmt: skip
    return ManagedProcess("plain-worker", argv, services.settings.home / "logs" / "plain-worker.log", env)


def _teardown(stack: BenchStack, ok: bool, plain: ManagedProcess | None) -> None:
    """Stop every process this stack started, record survivors, and keep the logs only when the run failed."""
    started = procs.descendants(os.getpid()) - stack.before
    if plain is not None:
        plain.stop()
    stack.services.stop()
    stack.leaked = procs.survivors(started)
    if ok:
        shutil.rmtree(stack.home, ignore_errors=True)
    else:
        print(f"benchmark failed; logs kept in {stack.home / 'logs'}", file=sys.stderr)


@contextlib.contextmanager
def bench_stack(traced: bool = False) -> Iterator[BenchStack]:
    """Start everything in a fresh home; stop it all on exit and record any process that outlived it."""
    home = Path(tempfile.mkdtemp(prefix="yoloq-bench-"))
    settings = load_settings(use_stack_file=False).model_copy(update={"home": home, "gpus": GPUS})
    before = procs.descendants(os.getpid())
    services = start_services(settings, prefer_configured_redis=False)
    stack = BenchStack(services, home, home / "trace.log" if traced else None, before=before)
    plain: ManagedProcess | None = None
    ok = False
    try:
        plain = _start_workers(services, stack.trace)
        yield stack
        ok = True
    finally:
        _teardown(stack, ok, plain)


@contextlib.contextmanager
def yoloq_fleet(
    gpus: str, prefix: str = "yoloq-bench-", pin: bool = False, shared: tuple[int, ...] = ()
) -> Iterator[BenchStack]:
    """Redis + S3 + one yoloq worker per simulated GPU of ``gpus`` (no plain worker), each waited until ready;
    ``pin``: worker i (and its job processes) on CPU i mod the CPU count, like a device of its own; ``shared``: the
    indexes whose workers run with ``--share``.

    The same stop and leak check as :func:`bench_stack`: every process started here must be gone afterwards.
    """
    home = Path(tempfile.mkdtemp(prefix=prefix))
    settings = load_settings(use_stack_file=False).model_copy(update={"home": home, "gpus": gpus})
    before = procs.descendants(os.getpid())
    services = start_services(settings, prefer_configured_redis=False)
    stack = BenchStack(services, home, None, before=before)
    count = len([part for part in gpus.split(",") if part.strip()])
    ok = False
    try:
        cpus = os.cpu_count() or 1
        for index in range(count):
            services.start_worker(index, cpus=str(index % cpus) if pin else None, share=index in shared)
        claims = GpuClaims(connect(services.settings.redis_url), services.settings.redis_url)
        poll(lambda: len([w for w in claims.live() if w.get("ready_at")]) >= count, 0.1, 120)
        yield stack
        ok = True
    finally:
        _teardown(stack, ok, None)
