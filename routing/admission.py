"""Admission: whether a submitted (or held) job may enter the Celery queues now, and on which tier (pure).

Rules, in order:
1. A team on the **demoted** list has its critical submissions lowered to ``high`` (said in the reason).
2. A **critical** job needs an operator's approval (``yoloq approve ID``) unless its team is pre-approved; until
   then it is ``held`` ("awaiting approval"), outside the queues.
3. **Quotas**: GPUs per tier per team. A job whose team already has ``quota`` jobs of that tier queued or running
   is ``held`` ("over quota"); held jobs are released oldest first as their team's usage drops.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from routing.tiers import Tier


@dataclass(frozen=True, slots=True)
class AdmissionRules:
    """Operator-set state: quotas per (team, tier), demoted teams, teams whose critical jobs need no approval."""

    quotas: dict[tuple[str, Tier], int] = field(default_factory=dict)
    demoted: frozenset[str] = frozenset()
    pre_approved: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Admission:
    """The verdict: ``held`` or not, the tier the job runs at, and why (empty when plainly admitted)."""

    held: bool
    tier: Tier
    reason: str = ""


def tier_for(team: str, tier: Tier, rules: AdmissionRules) -> tuple[Tier, str]:
    """The tier a submission runs at: a demoted team's critical work runs at high."""
    if tier is Tier.CRITICAL and team in rules.demoted:
        return Tier.HIGH, f"team {team} is demoted: critical submissions run at high"
    return tier, ""


def admit(team: str, tier: Tier, approved: bool, usage: int, rules: AdmissionRules) -> Admission:
    """Admit or hold one job; ``usage`` = the team's queued + running jobs at the job's (final) tier."""
    if tier is Tier.CRITICAL and not approved and team not in rules.pre_approved:
        return Admission(True, tier, "awaiting approval: critical jobs need `yoloq approve`")
    quota = rules.quotas.get((team, tier))
    if quota is not None and usage >= quota:
        return Admission(True, tier, f"over quota: team {team} has {usage} of {quota} {tier.value}-tier GPUs in use")
    return Admission(False, tier)


def release_order(held: list[tuple[str, str, Tier, float, bool]], usage: dict[tuple[str, Tier], int],
                  rules: AdmissionRules) -> list[str]:  # fmt: skip
    """Held jobs ``(job_id, team, tier, submitted_at, approved)`` that may be released now, oldest first.

    Each release counts against its team's usage for the next one, so a freed quota slot admits one job, not all.
    """
    used = dict(usage)
    released = []
    for job_id, team, tier, _, approved in sorted(held, key=lambda h: (h[3], h[0])):
        verdict = admit(team, tier, approved, used.get((team, tier), 0), rules)
        if not verdict.held:
            released.append(job_id)
            used[(team, tier)] = used.get((team, tier), 0) + 1
    return released
