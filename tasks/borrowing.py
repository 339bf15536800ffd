"""Reclaim lent quota against live jobs (``routing.borrowing.reclaims``): a queued borrower goes back to held at
once; a running one is asked to checkpoint and yield (``lifecycle.request_preempt(hold=True)``), then waits held.

A queued one's ``borrowed_from`` is cleared in the same step as its ``reclaimed`` event (audited, ``by:
supervisor``); a running one's right after its preempt request is recorded, so a crash in between leaves a request
(that still ends in held: ``lifecycle.reclaim_asked``) rather than a forgotten loan. Either way the next tick's
ledger no longer counts the loan and never reclaims it twice.
"""

from __future__ import annotations

import contextlib

from infra.admission_rules import AdmissionStore
from infra.queues import withdraw
from infra.registry import Change, RedisRegistry
from routing.borrowing import Borrowed, Reclaim, reclaims
from tasks import lifecycle
from tasks.admission import ACTIVE, ledger_of
from tasks.errors import BrokerUnavailable, InvalidTransition
from tasks.records import Event, JobRecord, iso, parse_iso, utc_now
from tasks.runtime import Runtime
from tasks.specs import gpus_of
from tasks.states import JobState


def _borrowed(record: JobRecord, now: float) -> Borrowed:
    """A borrowed job as the rules see it: running or not, frozen, work lost since its last checkpoint."""
    running = record.state is not JobState.QUEUED
    saves = [parse_iso(e.at).timestamp() for e in record.events if e.type in ("checkpoint", "started")]
    released = [parse_iso(e.at).timestamp() for e in record.events if e.type in ("submitted", "released")]
    lost = now - max(saves) if running and saves else 0.0
    return Borrowed(record.job_id, record.team, str(record.borrowed_from), record.tier, running, record.frozen,
                    max(0.0, lost), max(released, default=0.0), gpus_of(record.spec))  # fmt: skip


def plan(registry: RedisRegistry, rules: AdmissionStore, now: float) -> tuple[list[Reclaim], bool]:
    """The loans to take back now, from one fresh read of the active jobs; and whether any job borrows."""
    records = registry.in_states(ACTIVE)
    borrowed = [_borrowed(r, now) for r in records if r.borrowed_from and r.state is not JobState.PREEMPTING]
    loans = any(r.borrowed_from for r in records)
    return (reclaims(rules.rules(), ledger_of(records), borrowed) if borrowed else []), loans


def apply(rt: Runtime, job: Reclaim) -> bool:
    """Take one loan back; False when the job moved on meanwhile (finished, already yielding)."""
    reg, now = rt.registry, iso(utc_now())
    record = reg.get(job.job_id)
    if not record.borrowed_from or record.state is JobState.PREEMPTING:
        return False
    if record.state is JobState.QUEUED:
        event = Event(at=now, type="reclaimed", state=JobState.HELD, reason=job.reason, by="supervisor")
        task_id = record.attempts[-1].task_id
        try:
            reg.transition(job.job_id, Change(to=JobState.HELD, expect_task=task_id, event=event,
                                              fields={"borrowed_from": ""}))  # fmt: skip
        except InvalidTransition:
            return False  # a worker claimed it meanwhile: the next tick sees it running
        with contextlib.suppress(BrokerUnavailable):  # best effort: a late delivery sees it held and skips it
            withdraw(reg.client, record.queue, task_id, reg.url)
        return True
    try:  # asked first: a crash before the loan is forgotten leaves a request that still ends in held (lifecycle)
        lifecycle.request_preempt(reg, rt.leases, job.job_id, job.reason, "supervisor", hold=True)
    except InvalidTransition:
        return False  # it ended meanwhile: the loan is back all the same, and nothing was reclaimed
    reg.update(job.job_id, {"borrowed_from": ""})
    reg.append_event(job.job_id, Event(at=now, type="reclaimed", reason=job.reason, by="supervisor"))
    return True
