"""Worker-side upkeep of a GPU claim: renew it while the worker lives, preempt its job when it shuts down."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

from celery import bootsteps
from celery.signals import worker_shutting_down

from infra import nvml
from infra.presence import GpuClaims, Renewal
from infra.settings import Settings
from tasks import lifecycle
from tasks.errors import InvalidTransition, YoloqError
from tasks.records import iso, utc_now
from tasks.runtime import Runtime
from tasks.states import JobState

log = logging.getLogger("yoloq.worker")


class ClaimKeeper:
    """Renews ``yoloq:gpu:{host}:{index}`` every ttl/3 until stopped, then releases it.

    A claim that expired while Redis was unreachable is written back at the first renewal Redis answers, ``ready_at``
    included: the worker never stopped owning its device (its host-local lock says so), so ``status`` lists it again
    within one renewal. Only a claim a live rival holds is lost; then this worker stops (``on_lost``, a warm shutdown
    by default) rather than share the device. Each tick also requeues jobs whose attempt lease expired, so a job whose
    worker was killed resumes elsewhere as long as any worker lives.

    On a real GPU each renewal also carries the device's NVML ``utilization`` (0-1, rounded to 0.01): the serving
    scaler reads it from the claims of its replicas' workers. A simulated device (``YOLOQ_GPUS``) reports none.
    """

    def __init__(
        self,
        claims: GpuClaims,
        settings: Settings,
        where: tuple[str, int, str],
        record: dict[str, Any],
        *,
        rt: Runtime | None = None,
        on_lost: Callable[[], None] | None = None,
        utilization: Callable[[int], float | None] | None = None,
    ) -> None:
        self.claims, self.settings, self.rt = claims, settings, rt
        simulated = bool(settings.gpus.strip())
        self._utilization = utilization or (None if simulated else nvml.utilization)
        self.host, self.index, self.token = where
        self.record = dict(record)  # what a renewal writes back if the claim expired; ready_at joins it once set
        self._on_lost = on_lost or _stop_this_worker
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="yoloq-claim")

    def start(self) -> None:
        """Begin renewing in a background thread of the worker's main process."""
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.worker_ttl_s / 3):
            try:
                self.tick()
            except YoloqError as err:
                log.warning("claim upkeep failed (retrying): %s", err)

    def tick(self) -> Renewal:
        """Renew (or take back) the claim, then requeue jobs whose lease expired; returns what the renewal found."""
        ttl = self.settings.worker_ttl_s
        self.record["heartbeat_at"] = iso(utc_now())
        self._read_utilization()
        found = self.claims.renew(self.host, self.index, self.token, self.record, ttl)
        if found is Renewal.RETAKEN:
            log.warning("GPU %s: took its claim back (it expired while Redis was unreachable)", self.index)
        elif found is Renewal.LOST:
            self._lost(ttl)
            return found
        if self.rt is not None:
            for job_id in lifecycle.recover_expired(self.rt.registry, self.rt.leases, self.rt.dispatch):
                log.warning("requeued %s: its attempt's lease expired", job_id)
        return found

    def _read_utilization(self) -> None:
        """Put the device's utilisation in the record; a figure that became unreadable is written as null, not kept."""
        figure = None
        if self._utilization is not None:
            try:
                figure = self._utilization(self.index)
            except Exception as err:  # a reading must never cost the claim its renewal
                log.warning("GPU %s: utilisation unreadable: %s", self.index, err)
        if figure is not None or "utilization" in self.record:
            self.record["utilization"] = None if figure is None else round(figure, 2)

    def _lost(self, ttl: float) -> None:
        """Another owner's claim: take it over if its process is dead, else stop this worker."""
        rival = self.claims.take(self.host, self.index, self.token, self.record, ttl)
        if rival is None:
            log.warning("GPU %s: took its claim back from a worker that no longer runs", self.index)
            return
        log.error("lost the claim on GPU %s to a live worker %s (pid %s): stopping this worker",
                  self.index, rival.get("node"), rival.get("pid"))  # fmt: skip
        self._stop.set()
        self._on_lost()

    def mark_ready(self) -> None:
        """Tell status readers (and tests) that this worker now consumes its queues."""
        self.record["ready_at"] = iso(utc_now())
        try:
            self.claims.mark_ready(self.host, self.index, self.token, self.record["ready_at"])
        except YoloqError as err:  # the next renewal writes it: the record carries ready_at now
            log.warning("could not mark GPU %s ready yet: %s", self.index, err)

    def stop(self) -> None:
        """Stop renewing and drop the claim so a replacement can start at once."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        try:
            self.claims.release(self.host, self.index, self.token)
        except YoloqError as err:
            log.warning("could not release GPU claim (it expires by itself): %s", err)


def _stop_this_worker() -> None:
    """Warm-stop this process (Celery's SIGTERM handler): its running job checkpoints and is requeued first."""
    os.kill(os.getpid(), signal.SIGTERM)


def preempt_running_on(rt: Runtime, node: str) -> list[str]:
    """Ask the jobs running on ``node`` to checkpoint and requeue, so a warm shutdown loses nothing."""
    asked = []
    for record in rt.registry.many(rt.registry.ids(JobState.RUNNING, limit=10_000)):
        if record.worker != node:
            continue
        try:
            lifecycle.request_preempt(rt.registry, rt.leases, record.job_id, f"worker {node} shutting down", node)
            asked.append(record.job_id)
        except InvalidTransition:
            continue
    return asked


class HubWaker:
    """A pipe in the worker's event loop: a write makes its poll return at once.

    Celery's warm-shutdown signal handler only sets a flag, which the event loop reads after its poll returns: up to
    1 s later on an idle worker (the poll is restarted after the signal, PEP 475). Waking it makes an idle worker
    start stopping at once.
    """

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)

    def attach(self, hub: Any) -> None:
        """Register the pipe's read end with the worker's hub (kombu's event loop)."""
        hub.add_reader(self._read, self._drain)

    def _drain(self, *_: Any) -> None:
        with contextlib.suppress(OSError):
            os.read(self._read, 512)

    def wake(self) -> None:
        """Make the event loop's current poll return (safe from a signal handler; a full pipe is awake already)."""
        with contextlib.suppress(OSError):
            os.write(self._write, b"!")


def install(app: Any, keeper: ClaimKeeper, rt: Runtime, node: str) -> None:
    """Attach the claim keeper to the worker's lifecycle and the shutdown preemption to this node only."""

    class ClaimStep(bootsteps.StartStopStep):
        def start(self, worker: Any) -> None:
            keeper.start()

        def stop(self, worker: Any) -> None:
            keeper.stop()

    class ReadyStep(bootsteps.StartStopStep):
        requires = ("celery.worker.consumer.tasks:Tasks",)

        def start(self, consumer: Any) -> None:
            keeper.mark_ready()

    waker = HubWaker()

    class WakeStep(bootsteps.StartStopStep):
        requires = ("celery.worker.components:Hub",)

        def start(self, worker: Any) -> None:
            if getattr(worker, "hub", None) is not None:
                waker.attach(worker.hub)

    app.steps["worker"].add(ClaimStep)
    app.steps["worker"].add(WakeStep)
    app.steps["consumer"].add(ReadyStep)

    def _on_shutdown(sender: Any = None, **_: Any) -> None:
        try:
            log.info("preempting %s for shutdown", preempt_running_on(rt, node) or "nothing")
        except YoloqError as err:
            log.warning("could not preempt running jobs at shutdown: %s", err)
        waker.wake()  # the event loop notices the shutdown now, not after its poll times out

    worker_shutting_down.connect(_on_shutdown, sender=node, weak=False)
