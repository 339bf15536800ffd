"""Credit scores against live history: turn critical jobs' cancellations and operators' judgements into strikes,
score every team (``routing.credit``) and demote or restore it, audited ``by: credit``.

The sweep reads the audit stream from where it last stopped (``cancelled`` entries; each is one job's end), so its
cost is the new entries, not the whole history. It runs on the supervisor's tick, at most every
``Options.credit_interval_s``.
"""

from __future__ import annotations

import json

from infra.admission_rules import AdmissionStore
from infra.credit_store import CreditStore
from infra.registry import RedisRegistry
from routing.credit import Assessment, CreditPolicy, Strike, assess_all, strike_kind
from routing.tiers import Tier
from tasks.errors import InvalidTransition, JobNotFound
from tasks.records import Event, JobRecord, iso, parse_iso, utc_now


def _strike_of(record: JobRecord) -> str:
    """The strike a cancelled job earns: critical only; never approved when it waited for an approval it never got."""
    awaited = any("awaiting approval" in e.reason for e in record.events if e.type == "submitted")
    return strike_kind(record.tier, cancelled=record.state.value == "cancelled",
                       approved=record.approved_tier is not None, awaited_approval=awaited)  # fmt: skip


def collect(registry: RedisRegistry, credit: CreditStore) -> int:
    """Turn the audit entries since the last sweep into strikes; returns how many were new."""
    added = 0
    while entries := credit.audit_since():
        for _, fields in entries:
            event = json.loads(fields.get("event", "{}"))
            if event.get("type") != "cancelled" or not fields.get("job"):
                continue
            try:
                record = registry.get(fields["job"])
            except JobNotFound:
                continue
            if kind := _strike_of(record):
                added += credit.add_strike(record.team, kind, record.job_id, parse_iso(event["at"]).timestamp())
        credit.advance(entries[-1][0])
    return added


def sweep(registry: RedisRegistry, rules: AdmissionStore, credit: CreditStore, now: float,
          policy: CreditPolicy) -> list[Assessment]:  # fmt: skip
    """Collect new strikes, score every team, apply each demotion or restoration; returns the assessments."""
    collect(registry, credit)
    rows = credit.strikes(now - policy.horizon_s())
    strikes = {team: [Strike(at, kind, job) for at, kind, job in found] for team, found in rows.items()}
    verdicts = assess_all(strikes, rules.rules().credit_demoted, now, policy)
    for verdict in verdicts:
        if verdict.change:
            rules.set_credit_demoted(verdict.team, verdict.demoted, verdict.reason)
    credit.save_scores({v.team: v.score for v in verdicts})
    return verdicts


def judge_non_urgent(registry: RedisRegistry, credit: CreditStore, job_id: str, *, by: str, reason: str = "") -> None:
    """An operator's judgement that a critical job was not urgent: a strike against its team, in its history."""
    record = registry.get(job_id)
    asked = Tier.CRITICAL in (record.tier, record.pending_tier)
    if not asked:
        raise InvalidTransition(f"job {job_id} is {record.tier.value}; only critical jobs can be judged non-urgent")
    now = utc_now()
    if not credit.add_strike(record.team, "non-urgent", job_id, now.timestamp()):
        raise InvalidTransition(f"job {job_id} was already judged non-urgent")
    why = "judged not urgent" + (f": {reason}" if reason else "") + f"; a strike against team {record.team}"
    registry.append_event(job_id, Event(at=iso(now), type="judged-non-urgent", reason=why, by=by))
