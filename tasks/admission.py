"""Admission against live usage: hold a submission (approval, quota) or let it in, on its own quota or on one
borrowed from another team (``routing.borrowing``); release held jobs in order; promote a job under the same rules,
and approve a held job or a promotion (never one's own: four-eyes). A submission that names no tier gets its team's
default tier.

An approval is recorded with its tier (``approved_tier``) and counts for that tier and below; a move to another tier
voids it (``tasks.lifecycle.promote``), and approving a job that needs no approval is refused (InvalidTransition).

The rules are pure (``routing.admission``); this module reads the registry for usage and applies the verdicts.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass

from pydantic import BaseModel

from infra.admission_rules import AdmissionStore
from infra.celery_control import CeleryDispatch
from infra.queues import place_by_submit_time
from infra.registry import Change, RedisRegistry
from routing.admission import (
    Admission,
    Promotion,
    nothing_to_approve,
    promotion,
    self_approval,
    submitted_tier,
    tier_for,
)
from routing.borrowing import Ledger, admit, release_plan
from routing.tiers import Tier
from tasks import lifecycle
from tasks.errors import InvalidTransition, NotAllowed
from tasks.records import Event, JobRecord, iso, parse_iso, utc_now
from tasks.specs import JobSpec, gpus_of
from tasks.states import TERMINAL, JobState

ACTIVE = (JobState.QUEUED, JobState.RUNNING, JobState.PREEMPTING)


def usage(registry: RedisRegistry) -> dict[tuple[str, Tier], int]:
    """Queued + running jobs per (team, tier): what quotas count."""
    counts: dict[tuple[str, Tier], int] = {}
    for record in registry.in_states(ACTIVE):
        counts[(record.team, record.tier)] = counts.get((record.team, record.tier), 0) + gpus_of(record.spec)
    return counts


def ledger(registry: RedisRegistry) -> Ledger:
    """Queued + running jobs per (team, tier), on their own quota or lent by another team: what borrowing counts."""
    return ledger_of(registry.in_states(ACTIVE))


def ledger_of(records: list[JobRecord]) -> Ledger:
    """:func:`ledger` of records already read (each counted by its state's index: callers pass active ones)."""
    own: dict[tuple[str, Tier], int] = {}
    lent: dict[tuple[str, Tier], int] = {}
    for record in records:
        key = (record.borrowed_from, record.tier) if record.borrowed_from else (record.team, record.tier)
        bucket = lent if record.borrowed_from else own
        bucket[key] = bucket.get(key, 0) + gpus_of(record.spec)  # quotas count GPUs: a gang counts K
    return Ledger(own, lent)


def tier_given(spec: object) -> bool:
    """Whether a submission names its tier (dict, JSON text or spec): one that does not gets its team's default."""
    if isinstance(spec, BaseModel):
        return "tier" in spec.model_fields_set
    if isinstance(spec, str):
        with contextlib.suppress(ValueError):
            spec = json.loads(spec)
    return not isinstance(spec, dict) or spec.get("tier") is not None


def on_submit(
    registry: RedisRegistry, store: AdmissionStore, spec: JobSpec, *, tier_named: bool = True
) -> tuple[JobSpec, Admission, str]:
    """The spec as it will run (its team's default tier when it named none; a demoted team's critical job runs at
    high), the verdict (held, or admitted on its own or a borrowed quota), and any tier note."""
    rules = store.rules()
    asked, default_note = submitted_tier(spec.team, spec.tier if tier_named else None, rules)
    tier, note = tier_for(spec.team, asked, rules)
    note = "; ".join(filter(None, (default_note, note)))
    if tier is not spec.tier:
        spec = spec.model_copy(update={"tier": tier})
    counts = ledger(registry) if (spec.team, tier) in rules.quotas else Ledger()
    return spec, admit(spec.team, tier, None, rules, counts, gpus=getattr(spec, "gpus", 1)), note


@dataclass(frozen=True)
class Promoted:
    """What a promotion did: the job's tier and queue now, and the tier that waits for approval (if any)."""

    tier: Tier
    queue: str
    pending_tier: Tier | None = None
    note: str = ""

    def as_dict(self) -> dict[str, str | None]:
        """The JSON the CLI (``promote --json``) and the HTTP API print."""
        pending = self.pending_tier.value if self.pending_tier else None
        return {"tier": self.tier.value, "queue": self.queue, "pending_tier": pending, "note": self.note}


def promote(
    registry: RedisRegistry, dispatch: CeleryDispatch, store: AdmissionStore, job_id: str, tier: Tier, *, by: str
) -> Promoted:
    """Move a job to ``tier`` under the rules a submission obeys: a demoted team's job stops at high, a promotion that
    needs approval waits for it (the job keeps its tier and place), a queued or running job stays within its team's
    quota (InvalidTransition otherwise; nothing changes)."""
    record = registry.get(job_id)
    if record.state in TERMINAL:
        raise InvalidTransition(f"job {job_id} already {record.state.value}; nothing to promote")
    verdict = _promotion(registry, store, record, tier, approved=record.approved_tier)
    if verdict.refused:
        raise InvalidTransition(f"job {job_id} cannot be promoted to {verdict.tier.value}: {verdict.refused}")
    if verdict.awaits_approval:
        registry.update(job_id, {"pending_tier": verdict.tier.value})
        reason = f"{record.tier.value} → {verdict.tier.value} awaits approval (`yoloq approve`, by someone else)"
        registry.append_event(job_id, Event(at=iso(utc_now()), type="promotion-requested", reason=reason, by=by))
        return Promoted(record.tier, record.queue, verdict.tier, verdict.note)
    queue = lifecycle.promote(registry, dispatch, job_id, verdict.tier, by, note=verdict.note)
    if record.borrowed_from and verdict.tier is not record.tier:  # the loan was for its old tier; the new one's quota
        registry.update(job_id, {"borrowed_from": ""})  # (checked above) holds it on its own: cleared once moved
    return Promoted(verdict.tier, queue, note=verdict.note)


def approve(registry: RedisRegistry, dispatch: CeleryDispatch, store: AdmissionStore, job_id: str, *, by: str) -> None:
    """Approve a held critical job for its tier (the supervisor releases it on its next tick, quota permitting) or a
    promotion that waits for approval (applied now, in the requester's name); never by whoever submitted or promoted
    the job (NotAllowed), never a job with nothing to approve (InvalidTransition: an approval is for a tier)."""
    record = registry.get(job_id)
    if problem := self_approval(by, _requesters(record)):
        raise NotAllowed(problem)
    if record.state is JobState.HELD and record.pending_tier is None:
        if nothing := nothing_to_approve(record.team, record.tier, record.approved_tier, store.rules()):
            raise InvalidTransition(f"job {job_id} has nothing to approve: {nothing}")
        registry.update(job_id, {"approved_tier": record.tier.value})
        reason = f"approved for {record.tier.value}"
        registry.append_event(job_id, Event(at=iso(utc_now()), type="approved", reason=reason, by=by))
        return
    if record.pending_tier is None or record.state in TERMINAL:
        waiting = "only held critical jobs and promotions to critical wait for approval"
        raise InvalidTransition(f"job {job_id} is {record.state.value}; {waiting}")
    verdict = _promotion(registry, store, record, record.pending_tier, approved=record.pending_tier)
    if verdict.refused:
        raise InvalidTransition(f"job {job_id} cannot be promoted to {verdict.tier.value}: {verdict.refused}")
    reason = f"approved its promotion to {record.pending_tier.value}"
    registry.append_event(job_id, Event(at=iso(utc_now()), type="approved", reason=reason, by=by))
    note = "; ".join(filter(None, (f"approved by {by}", verdict.note)))
    lifecycle.promote(registry, dispatch, job_id, verdict.tier, _requester(record), note=note, approved=True)


def _promotion(
    registry: RedisRegistry, store: AdmissionStore, record: JobRecord, target: Tier, *, approved: Tier | None
) -> Promotion:
    """The rules' verdict on moving ``record`` to ``target`` now, with its team's usage (the job itself left out)."""
    rules = store.rules()
    used: dict[Tier, int] = {}
    if any(team == record.team for team, _ in rules.quotas):  # usage reads every active job: only when it counts
        used = {tier: n for (team, tier), n in usage(registry).items() if team == record.team}
        if record.state in ACTIVE:
            used[record.tier] = used.get(record.tier, 0) - gpus_of(record.spec)
    held = record.state is JobState.HELD
    return promotion(record.team, target, approved=approved, held=held, usage=used, rules=rules,
                     gpus=gpus_of(record.spec))  # fmt: skip


def _requester(record: JobRecord) -> str:
    """Who asked for the promotion that waits for approval: the promotion is theirs, the approval the approver's."""
    asked = [e.by for e in record.events if e.type == "promotion-requested"]
    return asked[-1] if asked else ""


def _requesters(record: JobRecord) -> set[str]:
    """Whoever submitted the job or changed its tier: none of them may approve it."""
    promoters = {e.by for e in record.events if e.type in ("promoted", "promotion-requested")}
    return promoters | {record.submitted_by or ""}


def release_held(registry: RedisRegistry, dispatch: CeleryDispatch, store: AdmissionStore) -> list[str]:
    """Send every held job the rules now admit, oldest first; returns their ids."""
    held = registry.many(registry.ids(JobState.HELD, limit=100_000))
    if not held:
        return []
    by_id = {r.job_id: r for r in held}
    rows = [(r.job_id, r.team, r.tier, parse_iso(r.submitted_at).timestamp(), r.approved_tier) for r in held]
    released = []
    gangs = {r.job_id: gpus_of(r.spec) for r in held if gpus_of(r.spec) > 1}
    for job_id, verdict in release_plan(rows, ledger(registry), store.rules(), gangs):
        record, now = by_id[job_id], iso(utc_now())
        reason = "admitted: approval and quota allow it" + (f"; {verdict.reason}" if verdict.reason else "")
        event = Event(at=now, type="released", state=JobState.QUEUED, reason=reason, by="supervisor")
        fields = {"borrowed_from": verdict.borrowed_from}
        with contextlib.suppress(InvalidTransition):  # cancelled meanwhile
            registry.transition(job_id, Change(to=JobState.QUEUED, event=event, fields=fields))
            task_id, submitted = record.attempts[-1].task_id, parse_iso(record.submitted_at).timestamp()
            dispatch.send(record.kind, job_id, task_id, record.queue, lifecycle.labels(record), submitted_ts=submitted)
            place_by_submit_time(registry.client, record.queue, task_id, submitted, registry.url)
            released.append(job_id)
    return released
