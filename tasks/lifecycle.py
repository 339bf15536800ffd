"""Every registry state change of a job, in one place: register, start, end, requeue, cancel.

Each function is one atomic registry transition (tasks.states decides what is legal) plus, where the job must move
through Celery, one dispatch. Intent is recorded before acting: a job is registered before its task is sent, and
requeued in the registry before the new task id is published.
"""

from __future__ import annotations

import contextlib
import json
import uuid

from infra import metrics
from infra.celery_control import CeleryDispatch
from infra.leases import Flag, Leases
from infra.queues import drop_unacked, place_by_submit_time, withdraw
from infra.registry import Change, RedisRegistry
from routing.tiers import Route, Tier, route
from tasks.errors import BrokerUnavailable, InvalidTransition
from tasks.records import Event, JobRecord, iso, parse_iso, utc_now
from tasks.specs import JobSpec, parse_spec
from tasks.states import TERMINAL, JobState


def new_task_id() -> str:
    """A fresh Celery task id: a requeue never reuses one (Celery drops a revoked id that is sent again)."""
    return str(uuid.uuid4())


def labels(record_or_spec: JobRecord | JobSpec) -> dict[str, str]:
    """Task kwargs that make a job recognisable in Flower: its tier and team."""
    return {"tier": record_or_spec.tier.value, "team": record_or_spec.team}


def register(
    registry: RedisRegistry,
    job_id: str,
    spec: JobSpec,
    route: Route,
    task_id: str,
    *,
    held: str = "",
    note: str = "",
    submitted_by: str = "",
    borrowed_from: str = "",
) -> None:
    """Create the job record, queued (or held with the reason), with its first attempt pointing at ``task_id``; who
    submitted it is kept for the four-eyes rule on approval, and the team whose quota it borrows, if any."""
    state = JobState.HELD if held else JobState.QUEUED
    now = utc_now()
    attempt = {"n": 1, "task_id": task_id, "queue": route.queue, "created_at": iso(now)}
    fields = {
        "job_id": job_id, "kind": spec.kind, "name": spec.name or "", "tier": spec.tier.value, "team": spec.team,
        "state": state.value, "queue": route.queue, "memory_mib": str(spec.memory_mib()),
        "spec": spec.model_dump_json(), "attempts": json.dumps([attempt]), "task_id": task_id,
        "submitted_at": iso(now), "progress": "{}", "submitted_by": submitted_by, "borrowed_from": borrowed_from,
    }  # fmt: skip
    reason = f"routed to {route.queue}" + (f"; {note}" if note else "") + (f"; held: {held}" if held else "")
    by = "admission" if held or note else ""  # admission changed or held it: a decision for the audit log
    event = Event(at=iso(now), type="submitted", state=state, reason=reason, by=by)
    registry.create(fields, event, now.timestamp())


def record_start(
    registry: RedisRegistry, job_id: str, task_id: str, where: tuple[str, str], lease_ttl_s: float = 0
) -> None:
    """queued → running for this attempt, taking its lease in the same step; InvalidTransition when stale,
    cancelled, or (LeaseHeld) already running elsewhere."""
    worker, gpu = where
    now = iso(utc_now())
    registry.transition(job_id, Change(
        to=JobState.RUNNING, expect_task=task_id,
        fields={"worker": worker, "gpu": gpu, "heartbeat_at": now},
        set_once={"started_at": now}, lease_ttl_ms=int(lease_ttl_s * 1000),
        attempt_patch={"started_at": now, "worker": worker, "gpu": gpu},
        event=Event(at=now, type="started", state=JobState.RUNNING, reason=f"on {worker} gpu {gpu}"),
    ))  # fmt: skip


def end_attempt(
    registry: RedisRegistry, job_id: str, task_id: str, to: JobState, *, reason: str, extra: dict[str, str]
) -> None:
    """Close the running attempt with a terminal outcome."""
    now = iso(utc_now())
    registry.transition(job_id, Change(
        to=to, expect_task=task_id, fields={"finished_at": now, **extra},
        attempt_patch={"ended_at": now, "outcome": to.value},
        event=Event(at=now, type=to.value, state=to, reason=reason),
    ))  # fmt: skip


def requeue(
    registry: RedisRegistry,
    leases: Leases,
    dispatch: CeleryDispatch,
    record: JobRecord,
    *,
    reason: str,
    by: str,
    for_job: str | None = None,
    hold: bool = False,
    move_to: str = "",
) -> str:
    """Put a preempted attempt's job back on its tier queue under a new task id; returns that id. ``hold``: its
    borrowed quota was reclaimed, so it goes back to held (admission sends it again), not to the queue; ``move_to``:
    a defragmentation moves it to that device queue, to resume there at once (not counted in its budget)."""
    now, task_id = iso(utc_now()), new_task_id()
    extra = {"for_job": for_job} if for_job else {}
    extra |= {"moved_to": move_to} if move_to else {}
    attempt = {"n": len(record.attempts) + 1, "task_id": task_id, "queue": record.queue, "created_at": now}
    hold = hold or reclaim_asked(record)  # recovery or a warm shutdown must not turn a reclaimed loan into a queued job
    to = JobState.HELD if hold else JobState.QUEUED
    registry.transition(record.job_id, Change(
        to=to, expect_task=record.attempts[-1].task_id, fields={"task_id": task_id},
        attempt_patch={"ended_at": now, "outcome": "preempted"}, new_attempt=attempt,
        event=Event(at=now, type="preempted", state=to, reason=reason, by=by, **extra),
    ))  # fmt: skip
    leases.clear_flag(record.job_id)
    if hold:
        return task_id
    submitted = parse_iso(record.submitted_at).timestamp()
    dispatch.send(record.kind, record.job_id, task_id, move_to or record.queue, labels(record), submitted_ts=submitted)
    return task_id


def resend(registry: RedisRegistry, dispatch: CeleryDispatch, record: JobRecord, reason: str) -> None:
    """Publish a queued job's current attempt again (its message was lost); the same task id, so should the first
    message turn up after all, its delivery is refused by the claim's compare-and-set."""
    registry.append_event(record.job_id, Event(at=iso(utc_now()), type="resent", reason=reason, by="recovery"))
    registry.count("resends", record.tier.value)
    dispatch.send(record.kind, record.job_id, record.attempts[-1].task_id, record.queue, labels(record),
                  submitted_ts=parse_iso(record.submitted_at).timestamp())  # fmt: skip


def recover_expired(registry: RedisRegistry, leases: Leases, dispatch: CeleryDispatch) -> list[str]:
    """Requeue running jobs whose attempt lease expired (worker killed, machine lost), and drop the dead attempt's
    message from the broker's unacked set; returns their ids.

    Safe to run from every worker at once: the requeue is a compare-and-set on the attempt's task id, so exactly
    one sweeper wins and publishes the new attempt.
    """
    recovered = []
    for record in registry.in_states((JobState.RUNNING, JobState.PREEMPTING)):
        if leases.holder(record.job_id) is not None:
            continue
        reason = f"lease expired: worker {record.worker} lost (last heartbeat {record.heartbeat_at})"
        try:
            requeue(registry, leases, dispatch, record, reason=reason, by="recovery")
            registry.count("preemptions", "recovery")
        except InvalidTransition:
            continue  # another sweeper, or the attempt itself, got there first
        # The dead attempt's message, unacked since its worker died, would count in the tier's depth for the
        # whole visibility timeout; best effort: left there, it is only a phantom until then, then skipped.
        with contextlib.suppress(BrokerUnavailable):
            drop_unacked(registry.client, record.attempts[-1].task_id, registry.url)
        recovered.append(record.job_id)
    return recovered


def cancel(registry: RedisRegistry, leases: Leases, dispatch: CeleryDispatch, job_id: str, by: str) -> JobState:
    """Cancel a job: queued/held ones at once, running ones through their stop flag; returns the new state."""
    record = registry.get(job_id)
    if record.state in TERMINAL:
        raise InvalidTransition(f"job {job_id} already {record.state.value}; nothing to cancel")
    now = iso(utc_now())
    if record.state in (JobState.RUNNING, JobState.PREEMPTING):
        leases.set_flag(job_id, Flag.CANCEL)
        registry.append_event(job_id, Event(at=now, type="cancel-requested", reason="stop at next step", by=by))
        return record.state
    registry.transition(job_id, Change(
        to=JobState.CANCELLED, fields={"finished_at": now},
        attempt_patch={"ended_at": now, "outcome": "cancelled"},
        event=Event(at=now, type="cancelled", state=JobState.CANCELLED, reason="cancelled while queued", by=by),
    ))  # fmt: skip
    # Best effort: even if the message stays or the revoke is lost, the worker's claim sees the cancelled state and
    # skips the message; withdrawing it keeps the queue depth (and the autoscaler) from counting a cancelled job.
    task_id = record.attempts[-1].task_id if record.attempts else ""
    with contextlib.suppress(BrokerUnavailable):
        if task_id and not withdraw(registry.client, record.queue, task_id):
            dispatch.revoke(task_id)
    return JobState.CANCELLED


def request_preempt(
    registry: RedisRegistry,
    leases: Leases,
    job_id: str,
    reason: str,
    by: str,
    *,
    for_job: str | None = None,
    hold: bool = False,
    move_to: str = "",
) -> None:
    """Ask a running job to checkpoint and yield its GPU (the operator's and the supervisor's one mechanism);
    ``hold``: it then waits held, not queued (a reclaimed loan of quota); ``move_to``: it resumes from that device
    queue (a defragmentation's move)."""
    record = registry.get(job_id)
    if record.state is not JobState.RUNNING:
        raise InvalidTransition(f"job {job_id} is {record.state.value}; only running jobs can be preempted")
    extra: dict[str, str | bool] = {"for_job": for_job} if for_job else {}
    if hold or move_to:
        extra |= {"hold": True} if hold else {"move_to": move_to}
    # Intent first, then the flag: a crash in between leaves a recorded request the next tick can see and redo.
    registry.append_event(job_id, Event(at=iso(utc_now()), type="preempt-requested", reason=reason, by=by, **extra))
    leases.set_flag(job_id, Flag.PREEMPT)
    registry.count("preemptions", metrics.preemption_reason(by, reason))


def preempt_request_of(record: JobRecord) -> Event | None:
    """The preempt request that stopped the current attempt (the newest one since it started), if any."""
    started = record.attempts[-1].started_at if record.attempts else None
    for event in reversed(record.events):
        if event.type == "preempt-requested" and (started is None or event.at >= started):
            return event
    return None


def reclaim_asked(record: JobRecord) -> bool:
    """Whether this attempt was asked to give back borrowed quota (a ``hold`` preempt request since it started): then
    it waits held however it ends, or its team would run over quota on a loan that is gone."""
    started = record.attempts[-1].started_at if record.attempts else None
    return any(e.type == "preempt-requested" and getattr(e, "hold", False) and (started is None or e.at >= started)
               for e in record.events)  # fmt: skip


def set_frozen(registry: RedisRegistry, job_id: str, frozen: bool, by: str) -> None:
    """Freeze (never a preemption victim) or unfreeze a job; recorded in its history."""
    record = registry.get(job_id)
    if record.state in TERMINAL:
        raise InvalidTransition(f"job {job_id} already {record.state.value}; nothing to freeze")
    registry.update(job_id, {"frozen": "1" if frozen else "0"})
    kind = "frozen" if frozen else "unfrozen"
    registry.append_event(job_id, Event(at=iso(utc_now()), type=kind, reason=f"operator {kind} it", by=by))


def promote(
    registry: RedisRegistry,
    dispatch: CeleryDispatch,
    job_id: str,
    tier: Tier,
    by: str,
    *,
    note: str = "",
    approved: bool = False,
) -> str:
    """Move a job to another tier; returns its queue. Queued: resent on the new tier's queue under a new task id.

    The admission rules (approval, demotion, quota) are decided before, by ``tasks.admission.promote``: this only
    moves the job (and settles any promotion that waited for approval). A move voids the job's approval, which was
    for its old tier, in the same write, unless ``approved``: this move is the approved one, and the job is approved
    for its new tier (so no approval outlives a demotion to come back on a later promotion). Running or held: only the
    record changes (victim eligibility, admission). A promoted queued job keeps its place by submit time in its new
    queue: ahead of every job submitted after it, behind those submitted before.
    """
    record = registry.get(job_id)
    if record.state in TERMINAL:
        raise InvalidTransition(f"job {job_id} already {record.state.value}; nothing to promote")
    spec = parse_spec(record.spec)
    new_spec = spec.model_copy(update={"tier": tier})
    where = route(tier, new_spec.memory_mib(), getattr(new_spec, "gpus", 1))
    now = iso(utc_now())
    reason = f"{record.tier.value} → {tier.value}" + (f"; {note}" if note else "")
    fields = {"tier": tier.value, "spec": new_spec.model_dump_json(), "pending_tier": ""}
    if approved or tier is not record.tier:
        fields["approved_tier"] = tier.value if approved else ""
    if record.state is not JobState.QUEUED:
        registry.update(job_id, {**fields, "queue": where.queue})
        registry.append_event(job_id, Event(at=now, type="promoted", reason=reason, by=by))
        return where.queue
    task_id = new_task_id()
    attempt = {"n": len(record.attempts) + 1, "task_id": task_id, "queue": where.queue, "created_at": now}
    registry.transition(job_id, Change(
        to=JobState.QUEUED, expect_task=record.attempts[-1].task_id, fields={**fields, "queue": where.queue,
        "task_id": task_id}, attempt_patch={"ended_at": now, "outcome": "promoted"}, new_attempt=attempt,
        event=Event(at=now, type="promoted", state=JobState.QUEUED, reason=reason, by=by),
    ))  # fmt: skip
    with contextlib.suppress(BrokerUnavailable):
        dispatch.revoke(record.attempts[-1].task_id)  # best effort: the claim's task-id check is the guarantee
        # and out of its old queue: a gang queue has no consumer to pop and skip it, and depth would count it forever
        withdraw(registry.client, record.queue, record.attempts[-1].task_id, registry.url)
    submitted = parse_iso(record.submitted_at).timestamp()
    dispatch.send(record.kind, job_id, task_id, where.queue, labels(new_spec), submitted_ts=submitted)
    place_by_submit_time(registry.client, where.queue, task_id, submitted, registry.url)
    return where.queue
