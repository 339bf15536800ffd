"""Worker side of cordoning: a GPU worker checks its device's cordon flag before it consumes, and keeps checking.

At consumer start (before the event loop takes any message) a cordoned device's worker cancels all its queues; it
then re-reads the flag every ``interval_s`` and cancels or restores its queues (in their original order, which the
strict tier order depends on). The running job is left alone: cordoning stops new work, ``yoloq preempt`` moves the
current job. The worker also answers the health check's ``yoloq_gpu_health`` broadcast for its device.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import redis
from celery import Celery, bootsteps

from infra.cordon import CordonStore
from infra.gang_holds import GangHolds
from infra.gpu_control import register_health_command
from infra.nvml_health import NvmlHealth, SimulatedHealth
from tasks.errors import YoloqError

log = logging.getLogger("yoloq.worker")
CHECK_INTERVAL_S = 2.0


class CordonWatch:
    """Applies one device's cordon flag to its worker's consumer; every consumer call runs in the event loop."""

    def __init__(
        self, cordons: CordonStore, host: str, index: int, queues: tuple[str, ...], holds: GangHolds | None = None
    ) -> None:
        self.cordons, self.host, self.index, self.queues, self.holds = cordons, host, index, queues, holds
        self.applied = False
        self.room: Callable[[], tuple[str, ...]] | None = None  # a shared GPU: the queues its free memory can take
        self.narrowed: tuple[str, ...] | None = None  # what ``room`` last applied (None: every queue)

    def flag(self) -> dict[str, Any] | None:
        """The device's cordon record, or a gang's hold read as one (its tier queues stop, its device queue stays);
        on a Redis error, whatever was applied last stays."""
        try:
            flag = self.cordons.get(self.host, self.index)
            if flag is None and self.holds is not None and (gang := self.holds.holder(self.host, self.index)):
                return {"reason": f"held for gang {gang}", "by": "supervisor"}
            return flag
        except YoloqError as err:
            log.warning("cannot read the cordon flag of GPU %s (keeping the current state): %s", self.index, err)
            return {"reason": "unknown"} if self.applied else None

    def apply(self, consumer: Any, flag: dict[str, Any] | None) -> None:
        """Stop consuming every queue while cordoned; consume them again, in order, once uncordoned."""
        if flag is not None:
            for queue in self.queues:
                if _registered(consumer, queue):
                    consumer.cancel_task_queue(queue)
            if not self.applied:
                log.warning("GPU %s takes no new jobs from its tier queues (%s, by %s)", self.index, flag.get("reason"),
                            flag.get("by"))  # fmt: skip
            self.applied = True
        elif self.applied:
            for queue in self.queues:  # all out, then all back in order: -Q order is the tier order
                if _registered(consumer, queue):
                    consumer.cancel_task_queue(queue)
            for queue in self.queues:
                consumer.add_task_queue(queue)
            self.applied = False
            log.warning("GPU %s takes work again: consuming %s", self.index, ",".join(self.queues))

    def narrow(self, consumer: Any, wanted: tuple[str, ...]) -> None:
        """A shared GPU consumes only the queues whose jobs its free memory can take (in -Q order), so it does not
        take a job only to give it back."""
        if self.applied or wanted == self.narrowed:
            return
        for queue in self.queues:
            if _registered(consumer, queue):
                consumer.cancel_task_queue(queue)
        for queue in wanted:
            consumer.add_task_queue(queue)
        self.narrowed = wanted

    def tick(self, consumer: Any) -> None:
        """Timer callback: read the flag here, change the consumer from inside its event loop."""
        flag = self.flag()
        if flag is not None or self.applied:
            consumer.call_soon(self.apply, consumer, flag)
            self.narrowed = None if flag is None else self.narrowed
        elif self.room is not None:
            try:
                consumer.call_soon(self.narrow, consumer, self.room())
            except YoloqError as err:
                log.warning("cannot read GPU %s's tenants (keeping the current queues): %s", self.index, err)


def _registered(consumer: Any, queue: str) -> bool:
    """Whether the task consumer has the queue, consuming already or (before the event loop starts) about to."""
    return any(q.name == queue for q in consumer.task_consumer.queues)


def install_cordon(
    app: Celery,
    client: redis.Redis,
    url: str,
    where: tuple[str, int],
    queues: tuple[str, ...],
    *,
    simulated: bool,
    interval_s: float = CHECK_INTERVAL_S,
    room: Callable[[], tuple[str, ...]] | None = None,
) -> CordonWatch:
    """Make this GPU worker obey its cordon flag and answer health probes for device ``where = (host, index)``;
    ``room``: a shared GPU's queues that its free memory can take now (workers/sharing.py)."""
    host, index = where
    cordons = CordonStore(client, url)
    watch = CordonWatch(cordons, host, index, queues, GangHolds(client, url))
    watch.room = room
    reader = SimulatedHealth(cordons, host, index) if simulated else NvmlHealth(index)
    register_health_command(reader.read)

    class CordonStep(bootsteps.StartStopStep):
        """Consumer step after Tasks: the task consumer exists but the event loop has not consumed yet."""

        requires = ("celery.worker.consumer.tasks:Tasks",)
        tref: Any = None

        def start(self, consumer: Any) -> None:
            """Apply the flag before the first message, then re-check it on the consumer's timer."""
            # A restarted consumer keeps the queues a cordon deselected, and gets them back here if it was lifted.
            watch.apply(consumer, watch.flag())
            self.tref = consumer.timer.call_repeatedly(interval_s, watch.tick, (consumer,))

        def stop(self, consumer: Any) -> None:
            """Stop re-checking (the consumer is restarting or the worker stopping)."""
            if self.tref is not None:
                self.tref.cancel()

    app.steps["consumer"].add(CordonStep)
    return watch
