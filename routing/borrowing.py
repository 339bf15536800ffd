"""Quota borrowing inside a cohort (Kueue's ``lendingLimit``), and reclaiming what was lent (pure).

The cohort is the whole fleet: every team with a quota at a tier may lend part of it to the others.

Rules:
1. A team under its **nominal** quota at a tier is admitted on its own quota (``routing.admission.admit``).
2. A team at or over its nominal quota may **borrow** one GPU from another team's unused quota at that tier: a
   lender ``L`` qualifies while ``own(L) + lent(L) < nominal(L)`` (it does not use that GPU itself) and
   ``lent(L) < lend(L)`` (its **lending limit**, 0 unless set). Among qualifying lenders: most unused quota first,
   then the team name. The job is marked ``borrowed_from = L`` and the reason names ``L``.
3. A lender **reclaims** when it needs its quota back: while ``own(L) + lent(L) > nominal(L)`` (it admitted its own
   work on quota it had lent) or ``lent(L) > lend(L)`` (an operator lowered the limit), the excess of its borrowed
   jobs at that tier is reclaimed: a queued one goes back to held at once, a running one is checkpoint-preempted and
   goes back to held. The 24 h preemption budget does not protect a borrower; a frozen job (an operator's explicit
   protection) does. Victim order: a queued job first (no work lost), then least work lost (seconds since its last
   checkpoint), then the most recently borrowed, last the job id.

``own`` counts a team's queued + running jobs at a tier that are not borrowed; ``lent`` counts the jobs of other
teams borrowed from it. A reclaimed job has ``borrowed_from`` cleared in the same step, so it is never reclaimed
twice, and is admitted again (on its own quota or a new loan) like any held job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from routing.admission import Admission, AdmissionRules, needs_approval, over_quota
from routing.tiers import Tier

Key = tuple[str, Tier]


@dataclass(frozen=True, slots=True)
class Ledger:
    """Queued + running jobs per (team, tier): ``own`` on the team's quota, ``lent`` borrowed from that team."""

    own: Mapping[Key, int] = field(default_factory=dict)
    lent: Mapping[Key, int] = field(default_factory=dict)

    def spare(self, team: str, tier: Tier, rules: AdmissionRules) -> int:
        """The team's quota at ``tier`` that nobody uses (0 when it has none)."""
        nominal = rules.quotas.get((team, tier), 0)
        return nominal - self.own.get((team, tier), 0) - self.lent.get((team, tier), 0)

    def admitted(self, team: str, tier: Tier, lender: str, gpus: int = 1) -> Ledger:
        """The ledger once a job of ``team`` taking ``gpus`` GPUs is admitted (on ``lender``'s quota when set)."""
        own, lent = dict(self.own), dict(self.lent)
        bucket, key = (lent, (lender, tier)) if lender else (own, (team, tier))
        bucket[key] = bucket.get(key, 0) + gpus
        return Ledger(own, lent)


def lender_for(team: str, tier: Tier, rules: AdmissionRules, ledger: Ledger, gpus: int = 1) -> str:
    """The team that lends ``team`` ``gpus`` GPUs at ``tier`` now (rule 2; a gang borrows from one lender), or ""
    when nobody can."""
    best: tuple[int, str] | None = None
    for (lender, at), limit in rules.lend.items():
        if at is not tier or lender == team or ledger.lent.get((lender, tier), 0) + gpus > limit:
            continue
        spare = ledger.spare(lender, tier, rules)
        if spare >= gpus and (best is None or (-spare, lender) < best):
            best = (-spare, lender)
    return "" if best is None else best[1]


def admit(
    team: str, tier: Tier, approved: Tier | None, rules: AdmissionRules, ledger: Ledger, *, gpus: int = 1
) -> Admission:
    """Admit a job of ``gpus`` GPUs on the team's own quota, else on a loan (rule 2), else hold (approval comes
    first, as always)."""
    if needs_approval(team, tier, approved, rules):
        return Admission(True, tier, "awaiting approval: critical jobs need `yoloq approve`")
    own = ledger.own.get((team, tier), 0)
    over = over_quota(team, tier, own, rules, gpus)
    if not over:
        return Admission(False, tier)
    lender = lender_for(team, tier, rules, ledger, gpus)
    if not lender:
        return Admission(True, tier, over + "; no team lends unused quota at this tier")
    lent, limit = ledger.lent.get((lender, tier), 0) + gpus, rules.lend[(lender, tier)]
    reason = (f"borrowed from team {lender}: team {team} has {own} of {rules.quotas[(team, tier)]} {tier.value}-tier "
              f"GPUs in use; {lender} now lends {lent} of at most {limit}")  # fmt: skip
    return Admission(False, tier, reason, borrowed_from=lender)


def release_plan(
    held: Sequence[tuple[str, str, Tier, float, Tier | None]],
    ledger: Ledger,
    rules: AdmissionRules,
    gpus: Mapping[str, int] | None = None,
) -> list[tuple[str, Admission]]:
    """Held jobs ``(job_id, team, tier, submitted_at, approved_tier)`` that may go now, oldest first, each with its
    verdict (which says whether it borrows, and from whom); each release counts for the next one (``gpus``: the
    gangs among them, by job id)."""
    released, sizes = [], gpus or {}
    for job_id, team, tier, _, approved in sorted(held, key=lambda h: (h[3], h[0])):
        k = sizes.get(job_id, 1)
        verdict = admit(team, tier, approved, rules, ledger, gpus=k)
        if not verdict.held:
            released.append((job_id, verdict))
            ledger = ledger.admitted(team, tier, verdict.borrowed_from, k)
    return released


@dataclass(frozen=True, slots=True)
class Borrowed:
    """A queued or running job on another team's quota, as a reclaim candidate."""

    job_id: str
    team: str
    lender: str
    tier: Tier
    running: bool = False
    frozen: bool = False
    since_checkpoint_s: float = 0.0
    borrowed_at: float = 0.0
    gpus: int = 1  # a gang gives back all its GPUs at once


@dataclass(frozen=True, slots=True)
class Reclaim:
    """Give ``job_id``'s loan back to ``lender``: hold it again (after a checkpoint-preemption when running)."""

    job_id: str
    lender: str
    running: bool
    reason: str


def reclaim_order(job: Borrowed) -> tuple[bool, float, float, str]:
    """Rule 3's total order: queued before running, least work lost, most recently borrowed, job id."""
    return (job.running, job.since_checkpoint_s, -job.borrowed_at, job.job_id)


def _excess(lender: str, tier: Tier, rules: AdmissionRules, ledger: Ledger) -> tuple[int, str]:
    """How many loans ``lender`` takes back at ``tier`` now, and why."""
    own, lent = ledger.own.get((lender, tier), 0), ledger.lent.get((lender, tier), 0)
    nominal, limit = rules.quotas.get((lender, tier), 0), rules.lend.get((lender, tier), 0)
    if own + lent > nominal:
        return own + lent - nominal, f"uses {own} of its {nominal} {tier.value}-tier GPUs and lent {lent}"
    if lent > limit:
        return lent - limit, f"lent {lent} {tier.value}-tier GPUs and now lends at most {limit}"
    return 0, ""


def reclaims(rules: AdmissionRules, ledger: Ledger, borrowed: Sequence[Borrowed]) -> list[Reclaim]:
    """The loans to take back now (rule 3), each with its reason; frozen borrowers are skipped."""
    out: list[Reclaim] = []
    by_lender: dict[Key, list[Borrowed]] = {}
    for job in sorted(borrowed, key=reclaim_order):
        by_lender.setdefault((job.lender, job.tier), []).append(job)
    for (lender, tier), jobs in sorted(by_lender.items(), key=lambda item: (item[0][0], item[0][1].value)):
        count, why = _excess(lender, tier, rules, ledger)
        for job in [j for j in jobs if not j.frozen]:
            if count <= 0:
                break
            reason = f"reclaim: team {lender} needs its quota back ({why}); team {job.team}'s job gives its loan back"
            out.append(Reclaim(job.job_id, lender, job.running, reason))
            count -= job.gpus
    return out
