"""Admission against live usage: hold a submission (approval, quota) or let it in; release held jobs in order.

The rules are pure (``routing.admission``); this module reads the registry for usage and applies the verdicts.
"""

from __future__ import annotations

import contextlib

from infra.admission_rules import AdmissionStore
from infra.celery_control import CeleryDispatch
from infra.queues import place_by_submit_time
from infra.registry import Change, RedisRegistry
from routing.admission import Admission, admit, release_order, tier_for
from routing.tiers import Tier
from tasks import lifecycle
from tasks.errors import InvalidTransition
from tasks.records import Event, iso, parse_iso, utc_now
from tasks.specs import JobSpec
from tasks.states import JobState

ACTIVE = (JobState.QUEUED, JobState.RUNNING, JobState.PREEMPTING)


def usage(registry: RedisRegistry) -> dict[tuple[str, Tier], int]:
    """Queued + running jobs per (team, tier): what quotas count."""
    counts: dict[tuple[str, Tier], int] = {}
    for state in ACTIVE:
        for record in registry.many(registry.ids(state, limit=100_000)):
            counts[(record.team, record.tier)] = counts.get((record.team, record.tier), 0) + 1
    return counts


def on_submit(registry: RedisRegistry, store: AdmissionStore, spec: JobSpec) -> tuple[JobSpec, Admission, str]:
    """The spec as it will run (a demoted team's critical job runs at high), the verdict, and any tier note."""
    rules = store.rules()
    tier, note = tier_for(spec.team, spec.tier, rules)
    if tier is not spec.tier:
        spec = spec.model_copy(update={"tier": tier})
    used = usage(registry).get((spec.team, tier), 0) if (spec.team, tier) in rules.quotas else 0
    return spec, admit(spec.team, tier, approved=False, usage=used, rules=rules), note


def approve(registry: RedisRegistry, job_id: str, by: str) -> None:
    """Approve a held critical job; the supervisor releases it on its next tick (quota permitting)."""
    record = registry.get(job_id)
    if record.state is not JobState.HELD:
        raise InvalidTransition(f"job {job_id} is {record.state.value}; only held jobs wait for approval")
    registry.update(job_id, {"approved": "1"})
    registry.append_event(job_id, Event(at=iso(utc_now()), type="approved", reason="approved for its tier", by=by))


def release_held(registry: RedisRegistry, dispatch: CeleryDispatch, store: AdmissionStore) -> list[str]:
    """Send every held job the rules now admit, oldest first; returns their ids."""
    held = registry.many(registry.ids(JobState.HELD, limit=100_000))
    if not held:
        return []
    by_id = {r.job_id: r for r in held}
    rows = [(r.job_id, r.team, r.tier, parse_iso(r.submitted_at).timestamp(), r.approved) for r in held]
    released = []
    for job_id in release_order(rows, usage(registry), store.rules()):
        record, now = by_id[job_id], iso(utc_now())
        event = Event(at=now, type="released", state=JobState.QUEUED, reason="admitted: approval and quota allow it",
                      by="supervisor")  # fmt: skip
        with contextlib.suppress(InvalidTransition):  # cancelled meanwhile
            registry.transition(job_id, Change(to=JobState.QUEUED, event=event))
            task_id, submitted = record.attempts[-1].task_id, parse_iso(record.submitted_at).timestamp()
            dispatch.send(record.kind, job_id, task_id, record.queue, lifecycle.labels(record), submitted_ts=submitted)
            place_by_submit_time(registry.client, record.queue, task_id, submitted, registry.url)
            released.append(job_id)
    return released
