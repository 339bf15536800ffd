"""Sending and revoking yoloq tasks through Celery; the only module that publishes to the broker."""

from __future__ import annotations

import time

from celery import Celery
from kombu import Exchange, Queue
from kombu.exceptions import OperationalError

from infra.queues import SUBMITTED_HEADER
from infra.redis_client import mask
from routing.tiers import DEVICE_PREFIX
from tasks.errors import BrokerUnavailable


def task_name(kind: str) -> str:
    """The registered Celery task name for a job kind."""
    return f"yoloq.{kind}"


class CeleryDispatch:
    """Publish an attempt of a job to its queue, or revoke one; broker errors become BrokerUnavailable."""

    def __init__(self, app: Celery) -> None:
        self._app = app

    def send(
        self,
        kind: str,
        job_id: str,
        task_id: str,
        queue: str,
        labels: dict[str, str],
        *,
        submitted_ts: float | None = None,
    ) -> None:
        """Send one attempt; the kwargs (job id, tier, team) are what Flower shows for the task, and the submit time
        travels as a message header so a promoted job can be placed by it (``infra.queues.place_by_submit_time``)."""
        stamp = time.time() if submitted_ts is None else submitted_ts
        # A device queue is declared by its own worker only (workers/launch.py), so it is named in full here; any
        # other queue must be one celeryconfig declares (task_create_missing_queues is off: a typo fails loudly).
        device = queue.startswith(DEVICE_PREFIX)
        where = Queue(queue, Exchange(queue, type="direct"), routing_key=queue) if device else queue
        try:
            self._app.send_task(
                task_name(kind), kwargs={"job_id": job_id, **labels}, task_id=task_id, queue=where,  # type: ignore[arg-type]
                retry=True, retry_policy=self._app.conf.task_publish_retry_policy,
                headers={SUBMITTED_HEADER: f"{stamp:.6f}"},
            )  # fmt: skip
        except (OperationalError, OSError) as err:
            url = mask(str(self._app.conf.broker_url))
            raise BrokerUnavailable(f"cannot send job {job_id} to {queue} on {url}: {err}") from None

    def terminate(self, task_id: str) -> None:
        """Escalation only: kill the pool child running ``task_id`` (its job process gets the parent-death signal)."""
        try:
            self._app.control.revoke(task_id, terminate=True, signal="SIGKILL")
        except (OperationalError, OSError) as err:
            raise BrokerUnavailable(f"cannot terminate task {task_id}: {err}") from None

    def revoke(self, task_id: str) -> None:
        """Tell workers to drop a queued attempt (best effort: the registry's state check is what guarantees it)."""
        try:
            self._app.control.revoke(task_id)
        except (OperationalError, OSError) as err:
            raise BrokerUnavailable(f"cannot revoke task {task_id}: {err}") from None
