"""The job record as users see it (``yoloq job ID --json``, BRIEF §4), and the clock format it uses."""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from routing.tiers import Tier
from tasks.states import JobState


def utc_now() -> datetime:
    """The current time, always timezone-aware UTC."""
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """ISO-8601 UTC with milliseconds, the one timestamp format on the wire."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    """Inverse of :func:`iso`."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def new_job_id() -> str:
    """A sortable, collision-resistant id: milliseconds since the epoch (hex) then 6 random hex digits."""
    return f"j{int(time.time() * 1000):011x}{secrets.token_hex(3)}"


# Decisions about a job made by someone other than the job itself (operator, supervisor, admission, recovery):
# these also go to the audit log (infra.audit).
AUDITED_EVENTS = frozenset({
    "approved", "released", "preempt-requested", "preempt-escalated", "cancel-requested", "cancelled",
    "frozen", "unfrozen", "promoted", "promotion-requested", "reclaimed", "judged-non-urgent",
})  # fmt: skip


class Event(BaseModel):
    """One entry of a job's append-only history: what happened, why, and who did it."""

    model_config = ConfigDict(frozen=True, extra="allow")

    at: str
    type: str
    state: JobState | None = None
    reason: str = ""
    by: str = ""


class Attempt(BaseModel):
    """One run of a job on one worker, with the Celery task id it was sent under."""

    model_config = ConfigDict(frozen=True, extra="allow")

    n: int
    task_id: str
    queue: str
    created_at: str
    started_at: str | None = None
    ended_at: str | None = None
    outcome: str | None = None
    worker: str | None = None
    gpu: str | None = None


class JobRecord(BaseModel):
    """Everything the registry knows about a job; the source of truth, not Celery's result backend."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    kind: str
    name: str | None
    tier: Tier
    team: str
    state: JobState
    queue: str
    memory_mib: int
    spec: dict[str, Any]
    attempts: list[Attempt]
    preemptions: list[Event]
    worker: str | None
    gpu: str | None
    progress: dict[str, Any]
    checkpoint: str | None
    submitted_at: str
    started_at: str | None
    finished_at: str | None
    heartbeat_at: str | None
    result: dict[str, Any] | None
    error: str | None
    events: list[Event]
    frozen: bool = False
    approved: bool = False  # approved for the tier it has now (``approved_tier`` covers ``tier``)
    approved_tier: Tier | None = None  # the tier an approval was given for: it covers that tier and those below
    submitted_by: str | None = None  # who submitted it (``key:<name>``, ``cli:<user>``): four-eyes on approval
    pending_tier: Tier | None = None  # a promotion that waits for approval (the job runs at ``tier`` meanwhile)
    borrowed_from: str | None = None  # admitted on this team's unused quota (routing.borrowing); cleared on reclaim


def audited(event: Event) -> bool:
    """Whether an event is a decision for the audit log (admission holds or demotions, lease-expiry requeues too)."""
    return event.type in AUDITED_EVENTS or event.by in {"admission", "recovery"}
