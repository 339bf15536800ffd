"""Decode a job hash from Redis into the typed :class:`~tasks.records.JobRecord` users see."""

from __future__ import annotations

import json
from typing import Any

from routing.admission import covers
from routing.tiers import Tier
from tasks.records import Attempt, Event, JobRecord


def _json(raw: dict[str, str], key: str, empty: Any) -> Any:
    text = raw.get(key)
    if not text:
        return empty
    value = json.loads(text)
    # Redis' cjson encodes an empty Lua table as {}: an empty list of attempts comes back as a dict.
    if isinstance(empty, list) and isinstance(value, dict):
        return empty
    return value


def to_record(raw: dict[str, str], events_raw: list[str]) -> JobRecord:
    """Build the record from the hash and the event list; preemptions are derived from the history."""
    events = [Event.model_validate_json(e) for e in events_raw]
    # An approval is for a tier (routing.admission.covers). The untiered ``approved`` flag of older versions counts for
    # nothing: it could have been given at high and carried to critical by a promotion.
    approved_tier = Tier(raw["approved_tier"]) if raw.get("approved_tier") else None
    return JobRecord(
        job_id=raw["job_id"],
        kind=raw["kind"],
        name=raw.get("name") or None,
        tier=raw["tier"],
        team=raw["team"],
        state=raw["state"],
        queue=raw["queue"],
        memory_mib=int(raw["memory_mib"]),
        spec=_json(raw, "spec", {}),
        attempts=[Attempt.model_validate(a) for a in _json(raw, "attempts", [])],
        preemptions=[e for e in events if e.type == "preempted"],
        worker=raw.get("worker") or None,
        gpu=raw.get("gpu") or None,
        progress=_json(raw, "progress", {}),
        checkpoint=raw.get("checkpoint") or None,
        submitted_at=raw["submitted_at"],
        started_at=raw.get("started_at") or None,
        finished_at=raw.get("finished_at") or None,
        heartbeat_at=raw.get("heartbeat_at") or None,
        result=_json(raw, "result", None),
        error=raw.get("error") or None,
        events=events,
        frozen=raw.get("frozen") == "1",
        approved=covers(approved_tier, Tier(raw["tier"])),
        approved_tier=approved_tier,
        submitted_by=raw.get("submitted_by") or None,
        pending_tier=raw.get("pending_tier") or None,
        borrowed_from=raw.get("borrowed_from") or None,
    )
