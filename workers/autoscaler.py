"""``yoloq autoscaler``: every poll, read queue depth per size class and the live workers, ask
``routing.autoscale.desired`` what to do, and apply it through a backend.

The local backend runs one ``yoloq worker --gpu I`` process per device of this host (real NVML inventory or
``YOLOQ_GPUS``). Stopping or draining a worker is SIGTERM: an idle worker exits at once; a busy one preempts its job
(mid-epoch checkpoint, requeue under a new task id) before it exits, so scale-in never loses work. On Kubernetes
KEDA does this job from the API's per-tier depth (infra/k8s); this loop is for hosts and ``yoloq up``.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from infra.fleet_ceiling import FleetCeiling
from infra.gang_holds import GangHolds
from infra.inventory import discover
from infra.ports import GpuInfo
from infra.presence import GpuClaims
from infra.processes import ManagedProcess
from infra.queues import depths
from infra.settings import Settings, environ_for, process_environ
from routing.autoscale import Config, Context, Decision, Device, State, Worker, desired
from routing.tiers import GANG, SIZE_CLASSES, Tier, all_queues, gang_queues, size_class_for
from tasks.errors import YoloqError
from tasks.runtime import Runtime
from tasks.specs import gpus_of
from tasks.states import JobState

log = logging.getLogger("yoloq.autoscaler")
BOUNDS = {c.name: c.bound_mib for c in SIZE_CLASSES}


def node_of(index: int, host: str) -> str:
    """The Celery node name a worker for device ``index`` takes (workers.launch uses the same)."""
    return f"gpu{index}@{host}"


@dataclass
class LocalBackend:
    """Worker processes on this host, one per device, started and stopped by the autoscaler."""

    settings: Settings
    inventory: tuple[GpuInfo, ...]
    host: str = field(default_factory=socket.gethostname)
    procs: dict[int, ManagedProcess] = field(default_factory=dict)
    stopping: dict[int, threading.Thread] = field(default_factory=dict)

    grace_s: float = 120.0

    def reap(self) -> None:
        """Forget processes that exited (stopped ones, or crashed ones the next poll may replace)."""
        for index, proc in list(self.procs.items()):
            if not proc.alive():
                del self.procs[index]
        for index, stopper in list(self.stopping.items()):
            if not stopper.is_alive():
                del self.stopping[index]

    def start(self, index: int) -> None:
        """Start a worker for device ``index``."""
        env = {k: v for k, v in process_environ().items() if not k.startswith("YOLOQ_")} | environ_for(self.settings)
        argv = [sys.executable, "-m", "yoloq", "worker", "--gpu", str(index)]
        path = self.settings.home / "logs" / f"autoscaled-gpu{index}.log"
        self.procs[index] = ManagedProcess(f"worker-gpu{index}", argv, path, env)

    def stop(self, index: int) -> None:
        """Warm-stop a worker in the background: idle, it exits; busy, its job checkpoints and is requeued first."""
        proc = self.procs.pop(index, None)
        if proc is not None:  # only the worker's main process gets SIGTERM: it preempts; its pool child carries on
            stopper = threading.Thread(target=proc.warm_stop, args=(self.grace_s,), name=f"stop-gpu{index}")
            stopper.start()
            self.stopping[index] = stopper

    def shutdown(self) -> None:
        """Stop every worker this backend started and wait for them (at exit of the autoscaler)."""
        for index in list(self.procs):
            self.stop(index)
        for stopper in self.stopping.values():
            stopper.join()
        self.stopping.clear()


class Autoscaler:
    """Poll, decide, apply; one instance per host."""

    def __init__(self, rt: Runtime, backend: LocalBackend, config: Config, say: Callable[[str], None]) -> None:
        self.rt, self.backend, self.config, self.say = rt, backend, config, say
        self.claims = GpuClaims(rt.registry.client, rt.settings.redis_url)
        self.ceiling = FleetCeiling(rt.registry.client, rt.settings.redis_url)
        self.state = State()

    def context(self, now: float) -> Context:
        """Waiting jobs per memory need (a waiting gang of K counts K), this host's workers (busy or idle, starting
        ones idle; an idle one whose GPU is held for a gang or a defragmentation counts busy: stopping it would undo
        the hold), free devices."""
        client, url = self.rt.registry.client, self.rt.settings.redis_url
        counts = depths(client, (*all_queues(), *gang_queues()), url)
        waiting: dict[int, int] = {}
        for queue, count in counts.items():
            if count and not queue.endswith(f".{GANG}"):
                bound = BOUNDS[queue.rsplit(".", 1)[1]]
                waiting[bound] = waiting.get(bound, 0) + count
        holds = GangHolds(client, url).all()
        if any(counts[q] for q in gang_queues()):
            for bound, gpus in self._waiting_gangs({str(h["job_id"]) for h in holds}):
                waiting[bound] = waiting.get(bound, 0) + gpus
        running = self.rt.registry.many(self.rt.registry.ids(JobState.RUNNING, limit=10_000))
        busy = {r.worker: r.tier for r in running}
        held = self._held_tiers(holds)
        live = {str(c["node"]) for c in self.claims.live() if c.get("host") == self.backend.host}
        workers, free = [], []
        for gpu in self.backend.inventory:
            node = node_of(gpu.index, self.backend.host)
            if gpu.index in self.backend.procs or node in live:
                workers.append(Worker(str(gpu.index), gpu.memory_mib, busy.get(node) or held.get(gpu.index)))
            elif gpu.index not in self.backend.stopping:
                free.append(Device(str(gpu.index), gpu.memory_mib))
        return Context(now, waiting, tuple(workers), tuple(free), self.config)

    def _waiting_gangs(self, held: set[str]) -> list[tuple[int, int]]:
        """(size-class bound, K) of every queued gang that holds no GPUs yet (read only while a gang queue has one)."""
        queued = self.rt.registry.many(self.rt.registry.ids(JobState.QUEUED, limit=100_000))
        return [(size_class_for(r.memory_mib).bound_mib, gpus_of(r.spec)) for r in queued
                if gpus_of(r.spec) > 1 and r.job_id not in held]  # fmt: skip

    def _held_tiers(self, holds: list[dict[str, Any]]) -> dict[int, Tier]:
        """This host's held devices → the tier of the job holding them."""
        mine = {int(g): str(h["job_id"]) for h in holds if str(h["host"]) == self.backend.host for g in h["gpus"]}
        tiers = {r.job_id: r.tier for r in self.rt.registry.many(sorted(set(mine.values())))} if mine else {}
        return {index: tiers.get(job, Tier.BATCH) for index, job in mine.items()}  # a vanished holder: still held

    def tick(self, now: float | None = None) -> Decision:
        """One poll: decide and apply; every action is said and counted in the metrics."""
        self.backend.reap()
        now = time.time() if now is None else now
        self.ceiling.saw((gpu.memory_mib for gpu in self.backend.inventory), now)  # it may start any of them
        ctx = self.context(now)
        decision, self.state = desired(ctx, self.state)
        for action, ids in (("start", decision.start), ("stop", decision.stop), ("drain", decision.drain)):
            for device in ids:
                (self.backend.start if action == "start" else self.backend.stop)(int(device))
                self.rt.registry.count("autoscaler_decisions", action)
                self.say(f"{action} worker for GPU {device}: {decision.reason}")
        return decision

    def run(self, stop: threading.Event, interval_s: float) -> None:
        """Poll until ``stop``; a failed poll is logged and retried at the next one."""
        last = ""
        while not stop.is_set():
            try:
                decision = self.tick()
                if not decision.changes and decision.reason != last:
                    self.say(decision.reason)
                last = decision.reason
            except YoloqError as err:
                log.warning("autoscaler poll failed: %s", err)
            stop.wait(interval_s)


def build_autoscaler(
    rt: Runtime, config: Config, say: Callable[[str], None] = print, devices: frozenset[int] | None = None
) -> Autoscaler:
    """An autoscaler for this host's devices (NVML, or the simulated ``YOLOQ_GPUS`` inventory), or only ``devices``
    of them (the others run fixed workers it must neither count nor stop)."""
    inventory = tuple(g for g in discover(rt.settings.gpus) if devices is None or g.index in devices)
    return Autoscaler(rt, LocalBackend(rt.settings, inventory, host=rt.settings.host()), config, say)
