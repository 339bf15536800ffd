"""What the crash, redeliver and hostloss drills share: a stack whose workers can be killed and brought back, per
"host"; plain Celery baseline workers on the same Redis; and the registry checks every one of them makes.

A :class:`Stack` is Redis + SeaweedFS in a fresh home; :meth:`Stack.host` adds a worker host on them (its own home
and ``YOLOQ_HOSTNAME`` when named, so two hosts on this machine claim ``gpu:{host}:{index}`` apart). On exit every
process the drill started is stopped and must be gone (``leaked``); the home is kept when the drill failed.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import redis

from bench.drills.plain_sleep import QUEUE as PLAIN_QUEUE
from bench.harness import procs
from bench.harness.stack import poll as harness_poll
from infra.presence import GpuClaims
from infra.processes import ManagedProcess
from infra.queues import task_ids_in_broker
from infra.redis_client import connect
from infra.s3 import S3Store
from infra.settings import Settings, load_settings
from routing.tiers import all_queues
from tasks.checkpoints import CheckpointStore
from tasks.records import JobRecord, parse_iso
from tasks.runner import probe_checkpoint_key
from tasks.specs import TrainSpec
from tasks.states import JobState
from tasks.synth import SynthConfig, synthesize
from workers.stack import Services, all_at_once, start_services
from yoloq.client import Client

ROOT = Path(__file__).resolve().parents[2]
RESUMED = re.compile(r"resuming from (\S+) at epoch")


def poll(check: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.1) -> Any:
    """The first truthy ``check()``; TimeoutError naming ``what`` after ``timeout_s`` (the harness's poll, in the
    argument order the drills read best)."""
    return harness_poll(check, interval_s, timeout_s, what)


def kill9(proc: ManagedProcess) -> float:
    """``kill -9`` a child's whole process group (a worker: its main process, pool child, job and standby processes)
    at once; returns the wall time it happened."""
    at = time.time()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.proc.wait(10)
    proc.stop()  # closes its log; nothing is left to signal
    return at


@dataclass
class Host:
    """Workers registered under one host name, one per simulated GPU of ``gpus``, on the stack's Redis and S3."""

    services: Services
    gpus: str
    claims: GpuClaims

    @property
    def name(self) -> str:
        """The host name its workers register under."""
        return self.services.settings.host()

    @property
    def indexes(self) -> list[int]:
        """Its GPUs."""
        return [int(part.split(":")[0]) for part in self.gpus.split(",") if part.strip()]

    def start(self, index: int) -> ManagedProcess:
        """Start (or restart) the worker of GPU ``index``."""
        return self.services.start_worker(index, gpus=self.gpus)

    def ready(self, index: int) -> bool:
        """Whether the worker of GPU ``index`` consumes its queues (its own claim says so); raises if it exited."""
        proc = self.services.workers[index]
        if not proc.alive():
            raise RuntimeError(f"worker {index} on {self.name} exited:\n{proc.tail(30)}")
        return any(c.get("pid") == proc.pid and c.get("ready_at") and c.get("host") == self.name
                   for c in self.claims.live())  # fmt: skip

    def start_all(self, timeout_s: float = 120) -> None:
        """Start every worker of this host and wait until each consumes."""
        for index in self.indexes:
            self.start(index)
        for index in self.indexes:
            poll(partial(self.ready, index), timeout_s, f"ready worker {index} on {self.name}")

    def kill9(self, index: int) -> float:
        """``kill -9`` the worker of GPU ``index`` with everything it started; returns when."""
        return kill9(self.services.workers[index])

    def stop(self) -> None:
        """Stop its supervisors and workers (warm: a running job checkpoints and is requeued)."""
        all_at_once([partial(p.stop, 10) for p in self.services.supervisors])
        self.services.supervisors.clear()
        self.services.stop_workers(grace_s=15)


@dataclass
class Stack:
    """Redis + S3 in a fresh home, the hosts and plain workers started on them, and handles on all three."""

    services: Services
    client: Client
    redis: redis.Redis
    store: S3Store
    hosts: list[Host] = field(default_factory=list)
    plain: list[ManagedProcess] = field(default_factory=list)
    leaked: list[int] = field(default_factory=list)

    def host(self, gpus: str, name: str = "") -> Host:
        """A worker host for ``gpus``: this machine's own name, or ``name`` with a home of its own."""
        update: dict[str, Any] = {"gpus": gpus}
        if name:
            update |= {"hostname": name, "home": self.services.settings.home / "hosts" / name}
        view = Services(self.services.settings.model_copy(update=update), self.services.redis, self.services.s3)
        host = Host(view, gpus, GpuClaims(self.redis, self.services.settings.redis_url))
        self.hosts.append(host)
        return host

    def plain_settings(self, db: int) -> Settings:
        """The stack's settings on Redis database ``db``: kombu's ``unacked`` hash is one per database, and a client
        with a short visibility timeout restores every message in it older than its own timeout, whoever sent it."""
        url = re.sub(r"/\d+$", f"/{db}", self.services.settings.redis_url)
        return self.services.settings.model_copy(update={"redis_url": url})

    def plain_worker(self, name: str, visibility_s: float | None = None, db: int = 0) -> ManagedProcess:
        """A plain Celery worker (bench.drills.plain_sleep, yoloq's worker options) on Redis database ``db``, that
        consumes when this returns."""
        extra = {"DRILL_PLAIN_VISIBILITY_S": str(visibility_s)} if visibility_s is not None else {}
        extra["YOLOQ_REDIS_URL"] = self.plain_settings(db).redis_url
        argv = [sys.executable, "-m", "celery", "-A", "bench.drills.plain_sleep", "worker", "-Q", PLAIN_QUEUE,
                "-c", "1", "-n", f"{name}@drill", "--pool", "prefork", "-l", "INFO", "--without-gossip",
                "--without-mingle", "-O", "fair"]  # fmt: skip
        log = self.services.settings.home / "logs" / f"{name}.log"
        start = log.stat().st_size if log.exists() else 0
        proc = ManagedProcess(name, argv, log, self.services.env(PYTHONPATH=str(ROOT), **extra))
        self.plain.append(proc)

        def ready() -> bool:
            if not proc.alive():
                raise RuntimeError(f"plain worker {name} exited:\n{proc.tail(30)}")
            return " ready." in log.read_text(errors="replace")[start:]

        poll(ready, 60, f"ready plain worker {name}")
        return proc


@contextlib.contextmanager
def drill_stack(prefix: str, **update: Any) -> Iterator[Stack]:
    """Redis + S3 in a fresh home with ``update`` on the settings; everything stopped and leak-checked on exit."""
    home = Path(tempfile.mkdtemp(prefix=prefix))
    settings = load_settings(use_stack_file=False).model_copy(update={"home": home, **update})
    before = procs.descendants(os.getpid())  # not ours to stop (e.g. a test session's own Redis and S3)
    services = start_services(settings, prefer_configured_redis=False)
    pointed = services.settings
    stack = Stack(services, Client(pointed, actor="drill"), connect(pointed.redis_url), S3Store(pointed))
    ok = False
    try:
        yield stack
        ok = True
    finally:
        started = procs.descendants(os.getpid()) - before
        all_at_once([*(h.stop for h in stack.hosts), *(partial(p.stop, 10) for p in stack.plain)])
        services.stop()
        stack.leaked = procs.survivors(started)
        if ok and not stack.leaked:
            shutil.rmtree(home, ignore_errors=True)
        else:
            print(f"drill failed or leaked {stack.leaked}; logs kept in {home / 'logs'}", file=sys.stderr)


def dataset(root: Path, seed: int) -> str:
    """A 24-image, 64 px, 2-class synthetic dataset folder (tests.fleet's): a CPU epoch takes seconds."""
    return str(synthesize(root, SynthConfig(images=24, imgsz=64, classes=2, seed=seed)).parent)


def train_spec(data: str, epochs: int, name: str) -> TrainSpec:
    """A low-tier yolov8n training at 64 px that publishes a checkpoint every epoch."""
    return TrainSpec(data=data, model="yolov8n.yaml", epochs=epochs, imgsz=64, batch=4, workers=0, save_period=1,
                     tier="low", team="drill", memory_gb=4, name=name)  # fmt: skip


# --- what the registry says ----------------------------------------------------------------------------------------


def started(record: JobRecord) -> list[tuple[float, float | None]]:
    """(start, end) of every attempt that started, in order (end None while it runs)."""
    return [(parse_iso(a.started_at).timestamp(), parse_iso(a.ended_at).timestamp() if a.ended_at else None)
            for a in record.attempts if a.started_at]  # fmt: skip


def overlaps(record: JobRecord) -> list[str]:
    """Every pair of this job's attempts that the attempt log shows live at the same moment."""
    runs = sorted(started(record))
    out = []
    for (start, end), (nxt, _) in itertools.pairwise(runs):
        if end is None or end > nxt:
            out.append(f"job {record.job_id}: an attempt started at {nxt:.3f} while one from {start:.3f} was live")
    return out


def completions(record: JobRecord) -> int:
    """How many times the job ran to completion: attempts that ended ``succeeded``."""
    return sum(1 for a in record.attempts if a.outcome == JobState.SUCCEEDED.value)


def judge(records: list[JobRecord]) -> tuple[int, int, list[str]]:
    """(lost, duplicated, problems) over the jobs: each must have succeeded exactly once with no overlapping runs."""
    lost = duplicated = 0
    problems: list[str] = []
    for record in records:
        if record.state is not JobState.SUCCEEDED:
            lost += 1
            problems.append(f"job {record.job_id} ({record.kind}) ended {record.state.value}: {record.error or ''}")
        crossed = overlaps(record)
        starts = sum(1 for e in record.events if e.type == "started")
        if starts > len(started(record)):  # an attempt started twice: a duplicate delivery got past the claim
            crossed.append(f"job {record.job_id}: {starts} starts recorded for {len(started(record))} attempts")
        if completions(record) > 1 or crossed:
            duplicated += 1
            problems += crossed or [f"job {record.job_id} completed {completions(record)} times"]
    return lost, duplicated, problems


def leftovers(stack: Stack, records: list[JobRecord], wait_s: float = 10.0) -> list[str]:
    """Task ids of these finished jobs' attempts still in the broker (queued, or unacked as if a worker still ran them,
    so counted in their tier's depth), after ``wait_s`` for the last acks; [] when none."""
    ids = {a.task_id for r in records for a in r.attempts}
    url = stack.services.settings.redis_url

    def left() -> list[str]:
        return sorted(ids & task_ids_in_broker(stack.redis, all_queues(), url))

    with contextlib.suppress(TimeoutError):
        poll(lambda: not left(), wait_s, "the broker empty of these jobs")
    return left()


def newest_checkpoint(store: S3Store, record: JobRecord) -> str | None:
    """The job's newest checkpoint in S3 now: a training job's manifest's newest key, a probe's ``step N``."""
    if record.kind == "probe":
        saved = store.get_json(probe_checkpoint_key(record.job_id))
        return f"step {saved['step']}" if isinstance(saved, dict) else None
    newest = CheckpointStore(store, record.job_id).manifest().get("newest")
    return str(newest["key"]) if isinstance(newest, dict) else None


def resumed_from(record: JobRecord, attempt: int) -> str | None:
    """The checkpoint key the ``attempt``-th started attempt (0-based) of a training job resumed from (its ``resume``
    event), None when it started from scratch."""
    seen = -1
    for event in record.events:
        if event.type == "started":
            seen += 1
        elif seen == attempt and event.type == "resume" and (found := RESUMED.search(event.reason or "")):
            return found.group(1)
        elif seen > attempt:
            break
    return None


def chose_start(record: JobRecord, attempt: int) -> bool:
    """Whether the ``attempt``-th started attempt (0-based) logged where it starts from (a resume, a fallback or a
    restart): one killed while still fetching its checkpoint never did, and says nothing about the resume rule."""
    seen = -1
    for event in record.events:
        if event.type == "started":
            seen += 1
        elif seen == attempt and event.type in {"resume", "restart", "checkpoint-fallback"}:
            return True
        elif seen > attempt:
            break
    return False


def in_store(store: S3Store, key: str) -> bool:
    """Whether ``key`` is an object in the drill's bucket."""
    return any(found == key for found, *_ in store.list_objects(key))
