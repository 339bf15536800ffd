"""Admission: whether a submitted (or held) job may enter the Celery queues now, and on which tier (pure).

Rules, in order:
1. A team on the **demoted** list has its critical submissions lowered to ``high`` (said in the reason).
2. A **critical** job needs an operator's approval (``yoloq approve ID``) unless its team is pre-approved; until
   then it is ``held`` ("awaiting approval"), outside the queues. An approval is for a tier (:func:`covers`): it counts
   for that tier and those below, never above, so a job approved (or held) at ``high`` that is then promoted to
   ``critical`` waits for a new approval; and there is nothing to approve on a job whose tier needs none
   (:func:`nothing_to_approve`: refused, so that no approval is ever on record that nobody was asked for).
3. **Quotas**: GPUs per tier per team. A job whose team already has ``quota`` jobs of that tier queued or running
   is ``held`` ("over quota"); held jobs are released oldest first as their team's usage drops.

A **promotion** obeys the same rules (:func:`promotion`): a demoted team's job goes no higher than ``high``; a
promotion to ``critical`` that needs approval waits for it (the job keeps its tier and place meanwhile, never runs at
critical unapproved); a queued or running job is not promoted past its team's quota at the new tier (refused; a held
job's tier changes and its release checks approval and quota as for any held job). **Four-eyes**: whoever submitted
or promoted a job cannot approve it (:func:`self_approval`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from routing.tiers import Tier, rank


@dataclass(frozen=True, slots=True)
class AdmissionRules:
    """Operator-set state: quotas per (team, tier), demoted teams, teams whose critical jobs need no approval."""

    quotas: dict[tuple[str, Tier], int] = field(default_factory=dict)
    demoted: frozenset[str] = frozenset()
    pre_approved: frozenset[str] = frozenset()
    lend: dict[tuple[str, Tier], int] = field(default_factory=dict)  # lending limits (routing.borrowing)
    default_tier: dict[str, Tier] = field(default_factory=dict)  # a team's tier when a submission names none
    credit_demoted: frozenset[str] = frozenset()  # demoted by their credit score (routing.credit), not by hand


@dataclass(frozen=True, slots=True)
class Admission:
    """The verdict: ``held`` or not, the tier the job runs at, and why (empty when plainly admitted)."""

    held: bool
    tier: Tier
    reason: str = ""
    borrowed_from: str = ""  # admitted on this team's unused quota (routing.borrowing)


@dataclass(frozen=True, slots=True)
class Promotion:
    """The verdict on a promotion: the tier it gets (after demotion), why it was lowered, and whether it waits for
    approval or is refused (``refused`` says why; nothing changes then)."""

    tier: Tier
    note: str = ""
    awaits_approval: bool = False
    refused: str = ""


def tier_for(team: str, tier: Tier, rules: AdmissionRules) -> tuple[Tier, str]:
    """The tier a submission or promotion gets: a demoted team's critical work runs at high (by hand or by its
    credit score)."""
    if tier is Tier.CRITICAL and team in rules.demoted:
        return Tier.HIGH, f"team {team} is demoted: critical work runs at high"
    if tier is Tier.CRITICAL and team in rules.credit_demoted:
        return Tier.HIGH, f"team {team} is demoted by its credit score: critical work runs at high"
    return tier, ""


def submitted_tier(team: str, tier: Tier | None, rules: AdmissionRules) -> tuple[Tier, str]:
    """The tier a submission asks for: its own when it names one, else its team's default, else medium."""
    if tier is not None:
        return tier, ""
    if default := rules.default_tier.get(team):
        return default, f"team {team}'s default tier is {default.value}"
    return Tier.MEDIUM, ""


def covers(approved: Tier | None, tier: Tier) -> bool:
    """Whether an approval given for tier ``approved`` lets the job run at ``tier``: the same tier or a lower one,
    never a higher one (an approval at high says nothing about critical)."""
    return approved is not None and rank(tier) >= rank(approved)


def needs_approval(team: str, tier: Tier, approved: Tier | None, rules: AdmissionRules) -> bool:
    """Critical work waits for an operator unless the job is approved for it or its team is pre-approved."""
    return tier is Tier.CRITICAL and not covers(approved, tier) and team not in rules.pre_approved


def nothing_to_approve(team: str, tier: Tier, approved: Tier | None, rules: AdmissionRules) -> str:
    """Why a held job at ``tier`` has nothing to approve, or "" when it awaits approval: an approval nobody needed
    would stay on record for a tier nobody asked about."""
    if needs_approval(team, tier, approved, rules):
        return ""
    if tier is not Tier.CRITICAL:
        return f"only critical work needs approval, and this job is held at {tier.value}"
    if covers(approved, tier):
        return f"it is already approved for {tier.value}"
    return f"team {team} is pre-approved for critical work"


def over_quota(team: str, tier: Tier, usage: int, rules: AdmissionRules, gpus: int = 1) -> str:
    """Why a job of ``gpus`` GPUs does not fit beside the ``usage`` GPUs the team's jobs take at ``tier`` (a gang
    counts each of its GPUs), or "" when there is room (or no quota)."""
    quota = rules.quotas.get((team, tier))
    if quota is not None and usage + gpus > quota:
        needs = f"; this job needs {gpus}" if gpus > 1 else ""
        return f"over quota: team {team} has {usage} of {quota} {tier.value}-tier GPUs in use{needs}"
    return ""


def admit(
    team: str, tier: Tier, approved: Tier | None, usage: int, rules: AdmissionRules, *, gpus: int = 1
) -> Admission:
    """Admit or hold one job of ``gpus`` GPUs; ``usage`` = the GPUs of the team's queued + running jobs at the job's
    (final) tier."""
    if needs_approval(team, tier, approved, rules):
        return Admission(True, tier, "awaiting approval: critical jobs need `yoloq approve`")
    if over := over_quota(team, tier, usage, rules, gpus):
        return Admission(True, tier, over)
    return Admission(False, tier)


def promotion(
    team: str,
    target: Tier,
    *,
    approved: Tier | None,
    held: bool,
    usage: Mapping[Tier, int],
    rules: AdmissionRules,
    gpus: int = 1,
) -> Promotion:
    """Where a promotion to ``target`` may take a job now. ``approved``: the tier the job is approved for, if any;
    ``usage``: the team's queued + running jobs per tier, this job left out; ``held``: the job waits outside the
    queues (its release applies approval and quota)."""
    tier, note = tier_for(team, target, rules)
    if held:
        return Promotion(tier, note)
    if needs_approval(team, tier, approved, rules):
        return Promotion(tier, note, awaits_approval=True)
    return Promotion(tier, note, refused=over_quota(team, tier, usage.get(tier, 0), rules, gpus))


def self_approval(approver: str, requesters: Iterable[str]) -> str:
    """Why ``approver`` may not approve a job that ``requesters`` submitted or promoted (four-eyes), or ""."""
    if approver and approver in set(requesters):
        return f"four-eyes: {approver} submitted or promoted this job, so someone else must approve it"
    return ""


def release_order(held: list[tuple[str, str, Tier, float, Tier | None]], usage: dict[tuple[str, Tier], int],
                  rules: AdmissionRules) -> list[str]:  # fmt: skip
    """Held jobs ``(job_id, team, tier, submitted_at, approved_tier)`` that may be released now, oldest first.

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
