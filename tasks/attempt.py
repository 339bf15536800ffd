"""One attempt of a job on a worker: claim it, run its body under a lease, record the outcome.

The body is a plain function of (spec, control) and never sees Celery. The claim makes duplicate deliveries
harmless: an attempt whose task id is not the job's current one, whose job is no longer queued, or whose lease
another live attempt holds, exits without running (BRIEF §3 step 5: at most one live run per job, ever).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from infra.leases import Flag
from infra.ports import ObjectStore
from infra.trusted_files import TrustedFiles
from tasks import expected_runtime, gang_attempt, lifecycle, share_attempt
from tasks.errors import BrokerUnavailable, Cancelled, InvalidTransition, JobFailed, LeaseHeld, Preempted, YoloqError
from tasks.records import Event, JobRecord, iso, utc_now
from tasks.runtime import Runtime
from tasks.specs import JobSpec, parse_spec
from tasks.states import JobState
from tasks.trust import Trust

log = logging.getLogger("yoloq.attempt")
Body = Callable[[JobSpec, "AttemptControl"], dict[str, Any]]


@dataclass(frozen=True)
class Where:
    """The worker node and GPU an attempt runs on."""

    worker: str
    gpu: str
    queue: str = ""  # the queue it was published to (a gang's moved message keeps its gang queue's name)


def published_to(request: Any) -> str:
    """The queue a delivered message was published to (its routing key), '' when Celery does not say."""
    info = getattr(request, "delivery_info", None) or {}
    return str(info.get("routing_key") or "")


class AttemptControl:
    """What a job body may do: report progress, record checkpoints, and learn that it must stop."""

    def __init__(self, rt: Runtime, record: JobRecord, task_id: str) -> None:
        self.rt, self.job_id, self.task_id = rt, record.job_id, task_id
        self.store: ObjectStore = rt.store
        self.trust = Trust(TrustedFiles(rt.registry.client, rt.settings.redis_url), rt.settings.onnx_max_mib * 2**20)
        self.lease_lost = threading.Event()
        self.stop_requested = threading.Event()  # SIGTERM in a job process: treated as a preempt request
        self.devices: tuple[int, ...] = ()  # a gang's GPUs (indices on this host); empty: the worker's own GPU

    def progress(self, **values: int | float) -> None:
        """Publish progress (epoch/batch or step/steps) to the registry."""
        self.rt.registry.update(self.job_id, {"progress": json.dumps(values), "heartbeat_at": iso(utc_now())})

    def checkpoint_saved(self, uri: str) -> None:
        """Point the job at its newest checkpoint."""
        self.rt.registry.update(self.job_id, {"checkpoint": uri})

    def note(self, kind: str, reason: str, **fields: Any) -> None:
        """Append an event (checkpoint published, fallback taken...) to the job's history."""
        self.rt.registry.append_event(self.job_id, Event(at=iso(utc_now()), type=kind, reason=reason, **fields))
        if kind == "checkpoint" and "publish_s" in fields:
            self.rt.registry.observe("checkpoint_upload_seconds", "", float(fields["publish_s"]))
            self.rt.registry.count("checkpoint_upload_bytes", "", float(fields.get("bytes", 0)))

    def placement(self) -> tuple[str | None, str | None]:
        """(worker, GPU) this attempt runs on, as its job record says: what a serving replica's presence shows."""
        record = self.rt.registry.get(self.job_id)
        return record.worker, record.gpu

    def check(self) -> None:
        """Raise Preempted or Cancelled when asked to stop (or when this attempt lost its lease)."""
        if self.lease_lost.is_set():
            raise Preempted("lease lost: another attempt may own this job")
        if self.stop_requested.is_set():
            raise Preempted("SIGTERM: the worker is shutting down")
        flag = self.rt.leases.flag(self.job_id)
        if flag is Flag.CANCEL:
            raise Cancelled("cancel requested")
        if flag is Flag.PREEMPT:
            raise Preempted("preempt requested")


def _heartbeat(control: AttemptControl, stop: threading.Event) -> None:
    ttl = control.rt.settings.lease_ttl_s
    while not stop.wait(ttl / 3):
        try:
            if not control.rt.leases.renew(control.job_id, control.task_id, ttl):
                control.lease_lost.set()
                return
            control.rt.registry.update(control.job_id, {"heartbeat_at": iso(utc_now())})
        except YoloqError:
            log.warning("heartbeat for %s failed; retrying", control.job_id)


def _claim(rt: Runtime, job_id: str, task_id: str, where: Where) -> bool:
    """Start the attempt and take its lease in one atomic step; False means this delivery must not run."""
    try:
        lifecycle.record_start(rt.registry, job_id, task_id, (where.worker, where.gpu), rt.settings.lease_ttl_s)
    except LeaseHeld:
        rt.registry.append_event(job_id, Event(at=iso(utc_now()), type="duplicate", reason=f"{task_id} skipped"))
        return False
    except InvalidTransition as err:
        log.info("attempt %s of %s not run: %s", task_id, job_id, err)
        return False
    return True


RECORD_RETRY_S = 1.0  # between tries to record an attempt's end while Redis is unreachable
# How long past the lease TTL an attempt keeps trying to record its end: a Redis restart or failover (the issue's
# outage is 30 s) is ridden out with the attempt log exact; and the whole wait stays inside a GPU worker's stop grace
# (120 s in infra/k8s/gpu-worker.yaml and docker-compose), so a warm shutdown during a lasting outage still finishes.
RECORD_PATIENCE_S = 60.0
UNRECORDED = "unrecorded"  # the outcome of an attempt whose end Redis never took


def _recorded(
    write: Callable[[], str],
    give_up_after_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Record an attempt's end, retrying while Redis is unreachable: the worker takes its next job only once the
    registry knows this one ended, or the attempt log would show two jobs on one GPU (issue 15 item 2). Redis gone
    for good must not hold the pool child (and a warm shutdown) forever: after ``give_up_after_s`` the attempt ends
    unrecorded, its lease has expired by then, and recovery requeues the job from its checkpoint once Redis is back."""
    deadline, tries = clock() + give_up_after_s, 0
    while True:
        try:
            outcome = write()
        except BrokerUnavailable as err:
            tries += 1
            if clock() >= deadline:
                why = "recovery requeues the job once Redis answers and the attempt's lease is seen expired"
                log.error("gave up recording the attempt's end after %d tries in %.0f s (Redis unreachable: %s); %s",
                          tries, give_up_after_s, err, why)  # fmt: skip
                return UNRECORDED
            if tries == 1:
                log.warning("cannot record the attempt's end yet; retrying every %.0f s for up to %.0f s: %s",
                            RECORD_RETRY_S, give_up_after_s, err)  # fmt: skip
            sleep(RECORD_RETRY_S)
            continue
        if tries:
            log.info("recorded the attempt's end after %d failed tries", tries)
        return outcome


def _requeue(rt: Runtime, record: JobRecord, why: str) -> str:
    asked = lifecycle.preempt_request_of(rt.registry.get(record.job_id))
    reason, by = (asked.reason, asked.by) if asked else (why, "worker")
    try:
        lifecycle.requeue(rt.registry, rt.leases, rt.dispatch, record, reason=reason, by=by,
                          for_job=getattr(asked, "for_job", None) if asked else None,
                          hold=bool(getattr(asked, "hold", False)),
                          move_to=str(getattr(asked, "move_to", "") or ""))  # fmt: skip
    except InvalidTransition:
        return "superseded"  # the lease expired and recovery already requeued this job
    return "preempted"


def _end(rt: Runtime, record: JobRecord, task_id: str, to: JobState, *, reason: str, extra: dict[str, str]) -> str:
    try:
        lifecycle.end_attempt(rt.registry, record.job_id, task_id, to, reason=reason, extra=extra)
    except InvalidTransition:
        return "superseded"  # Redis was unreachable past the lease and recovery requeued this job first
    if to is JobState.CANCELLED:
        rt.leases.clear_flag(record.job_id)
    return to.value


def _outcome(rt: Runtime, record: JobRecord, task_id: str, body: Body, control: AttemptControl) -> str:
    patience = rt.settings.lease_ttl_s + RECORD_PATIENCE_S
    try:
        result = body(parse_spec(record.spec), control)
    except (Preempted, BrokerUnavailable) as stopped:  # Redis failing is not the job failing: it resumes
        why = str(stopped) if isinstance(stopped, Preempted) else f"Redis unreachable: {stopped}"
        return _recorded(partial(_requeue, rt, record, why), patience)
    except Cancelled as why:
        ended = partial(_end, rt, record, task_id, JobState.CANCELLED, reason=str(why), extra={})
        return _recorded(ended, patience)
    except Exception as err:
        reason = (str(err) if isinstance(err, JobFailed) else f"{type(err).__name__}: {err}").splitlines()[0][:500]
        log.exception("job %s failed", record.job_id)
        ended = partial(_end, rt, record, task_id, JobState.FAILED, reason=reason, extra={"error": reason})
        return _recorded(ended, patience)
    done = {"result": json.dumps(result)}
    outcome = _recorded(
        partial(_end, rt, record, task_id, JobState.SUCCEEDED, reason="completed", extra=done), patience
    )
    if outcome == JobState.SUCCEEDED.value:
        expected_runtime.learn(rt, record.job_id)  # seconds per batch and the prediction's error (docs/eta.md)
    return outcome


def run_attempt(rt: Runtime, job_id: str, task_id: str, where: Where, body: Body) -> str:
    """Run one delivered attempt to its outcome; returns the outcome name (for logs and Flower)."""
    gpus = gang_attempt.placed(rt, job_id, task_id, where.gpu, where.queue)  # a held GPU runs only its gang
    joined = share_attempt.admitted(rt, job_id, task_id, gpus) if gpus is not None else False  # a shared GPU
    if gpus is None or joined is False:
        return "given back"
    try:
        return _run(rt, job_id, task_id, Where(where.worker, gpus), body)
    finally:
        if joined:
            with contextlib.suppress(YoloqError):  # a leaked entry is pruned by the next admission on this GPU
                share_attempt.left(rt, job_id, task_id, gpus)


def _run(rt: Runtime, job_id: str, task_id: str, at: Where, body: Body) -> str:
    if not _claim(rt, job_id, task_id, at):
        return "skipped"
    record = rt.registry.get(job_id)
    rt.registry.record_time_to_start(record)
    control, stop = AttemptControl(rt, record, task_id), threading.Event()
    control.devices = tuple(int(g) for g in at.gpu.split(",")) if "," in at.gpu else ()
    beat = threading.Thread(target=_heartbeat, args=(control, stop), daemon=True, name=f"lease-{job_id}")
    beat.start()
    try:
        return _outcome(rt, record, task_id, body, control)
    finally:
        stop.set()
        beat.join(timeout=5)
        with contextlib.suppress(BrokerUnavailable):  # the lease expires by itself
            rt.leases.release(job_id, task_id)
