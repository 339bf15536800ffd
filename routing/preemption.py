"""Victim selection: which running jobs yield their GPU to waiting higher-tier work (pure; time is a parameter).

The supervisor builds a frozen :class:`Snapshot` and calls :func:`decide`; every decision and every refusal carries
a reason. Rules, in the order they are applied to each waiting job (highest tier first, then oldest):

1. A waiting job that fits a free GPU (or one whose job is already being preempted) takes it: no preemption.
2. Candidates are running jobs of a **strictly lower** tier on a GPU with enough memory for the waiting job.
3. Never a frozen job, never a job already being preempted, never one chosen for another waiting job.
4. **Budget**: a job preempted ``max_preemptions`` times within ``window_s`` is not a candidate, unless the waiting
   job is **SLA-urgent** (it has waited ``urgent_fraction`` of its tier's start target): urgency overrides the
   budget, nothing else.
5. **Reserved share**: a higher-tier job may take a low/batch job's GPU only while the GPUs running low/batch work
   stay at or above the reserved count (``reserved_share`` of the fleet, at least one GPU on fleets of 4 or more);
   a low job preempting a batch job keeps the count and is not limited by it.
6. Among candidates, the documented total order: lowest tier first; then least work lost (seconds since its last
   checkpoint); then lowest restart cost; then most remaining time; last, job id. One victim per waiting job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from routing.sla import DEFAULT_TARGETS, SlaTarget
from routing.tiers import Tier

RANK: dict[Tier, int] = {tier: index for index, tier in enumerate(Tier)}
RESERVED_TIERS = frozenset({Tier.LOW, Tier.BATCH})


@dataclass(frozen=True, slots=True)
class Gpu:
    """One device of the fleet and the job it runs (None when idle)."""

    gpu_id: str
    memory_mib: int
    job_id: str | None = None


@dataclass(frozen=True, slots=True)
class Waiting:
    """A queued job: its tier, memory need and submit time (seconds, same clock as ``Snapshot.now``)."""

    job_id: str
    tier: Tier
    need_mib: int
    submitted_at: float


@dataclass(frozen=True, slots=True)
class Running:
    """A running job as a potential victim."""

    job_id: str
    tier: Tier
    gpu_id: str
    since_checkpoint_s: float = 0.0
    restart_cost_s: float = 0.0
    remaining_s: float = 0.0
    frozen: bool = False
    preempting: bool = False
    preempted_at: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class Policy:
    """The knobs of preemption (defaults from BRIEF §2)."""

    max_preemptions: int = 1
    window_s: float = 24 * 3600.0
    reserved_share: float = 0.10
    urgent_fraction: float = 0.8
    targets: dict[Tier, SlaTarget] = field(default_factory=lambda: dict(DEFAULT_TARGETS))


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything a decision looks at, frozen at one instant."""

    now: float
    gpus: tuple[Gpu, ...]
    waiting: tuple[Waiting, ...]
    running: tuple[Running, ...]
    policy: Policy = field(default_factory=Policy)


@dataclass(frozen=True, slots=True)
class Preemption:
    """Preempt ``victim`` on ``gpu_id`` to make room for ``for_job``; ``reason`` goes to both job histories."""

    victim: str
    for_job: str
    gpu_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Decision:
    """The preemptions to issue and, for every waiting job left as it is, why."""

    preemptions: tuple[Preemption, ...]
    notes: tuple[tuple[str, str], ...]


def reserved_gpus(fleet: int, share: float) -> int:
    """GPUs kept for low/batch work: ``share`` of the fleet (whole GPUs), at least one on fleets of 4 or more."""
    if fleet <= 0 or share <= 0:
        return 0
    return max(math.floor(share * fleet + 1e-9), 1 if fleet >= 4 else 0)


def is_urgent(job: Waiting, now: float, policy: Policy) -> bool:
    """A job that has waited ``urgent_fraction`` of its tier's start target is about to miss it."""
    target = policy.targets.get(job.tier)
    return target is not None and now - job.submitted_at >= policy.urgent_fraction * target.within_s


def victim_order(job: Running) -> tuple[int, float, float, float, str]:
    """The documented total order: lowest tier, least work lost, cheapest restart, most remaining, job id."""
    return (-RANK[job.tier], job.since_checkpoint_s, job.restart_cost_s, -job.remaining_s, job.job_id)


def _refusal(job: Running, waiting: Waiting, snap: Snapshot, urgent: bool, low_running: int) -> str | None:
    """Why ``job`` may not be a victim for ``waiting`` (None when it may)."""
    policy = snap.policy
    if job.frozen:
        return "frozen"
    if job.preempting:
        return "already being preempted"
    recent = [t for t in job.preempted_at if snap.now - t < policy.window_s]
    if len(recent) >= policy.max_preemptions and not urgent:
        return f"preemption budget used ({len(recent)} in {policy.window_s / 3600:g} h)"
    shrinks_reserve = job.tier in RESERVED_TIERS and waiting.tier not in RESERVED_TIERS
    if shrinks_reserve and low_running - 1 < reserved_gpus(len(snap.gpus), policy.reserved_share):
        return "reserved share for low/batch tiers"
    return None


def _fits_free(job: Waiting, free: list[Gpu]) -> Gpu | None:
    fitting = [g for g in free if g.memory_mib >= job.need_mib]
    return min(fitting, key=lambda g: (g.memory_mib, g.gpu_id)) if fitting else None


def _pick(job: Waiting, snap: Snapshot, taken: set[str], low_running: int) -> tuple[Running | None, str]:
    memory = {g.gpu_id: g.memory_mib for g in snap.gpus}
    urgent = is_urgent(job, snap.now, snap.policy)
    lower = [r for r in snap.running if RANK[r.tier] > RANK[job.tier] and r.job_id not in taken]
    fitting = [r for r in lower if memory.get(r.gpu_id, 0) >= job.need_mib]
    if not fitting:
        return None, "no lower-tier job runs on a GPU that fits it"
    refusals = {r.job_id: _refusal(r, job, snap, urgent, low_running) for r in fitting}
    eligible = [r for r in fitting if refusals[r.job_id] is None]
    if not eligible:
        reasons = sorted({str(v) for v in refusals.values()})
        return None, "every candidate is protected: " + "; ".join(reasons)
    return min(eligible, key=victim_order), "SLA-urgent" if urgent else ""


def decide(snap: Snapshot) -> Decision:
    """Choose the victims for the waiting jobs of ``snap`` (see the module docstring for the rules)."""
    soon_free = {r.gpu_id for r in snap.running if r.preempting}
    free = [g for g in snap.gpus if g.job_id is None or g.gpu_id in soon_free]
    low_running = sum(1 for r in snap.running if r.tier in RESERVED_TIERS and not r.preempting)
    taken: set[str] = set()
    preemptions: list[Preemption] = []
    notes: list[tuple[str, str]] = []
    for job in sorted(snap.waiting, key=lambda w: (RANK[w.tier], w.submitted_at, w.job_id)):
        spot = _fits_free(job, free)
        if spot is not None:
            free.remove(spot)
            notes.append((job.job_id, f"fits free GPU {spot.gpu_id}"))
            continue
        victim, why = _pick(job, snap, taken, low_running)
        if victim is None:
            notes.append((job.job_id, why))
            continue
        taken.add(victim.job_id)
        low_running -= victim.tier in RESERVED_TIERS and job.tier not in RESERVED_TIERS
        reason = (f"{job.tier.value} job {job.job_id} needs {job.need_mib} MiB and no free GPU fits; "
                  f"{victim.tier.value} job {victim.job_id} on GPU {victim.gpu_id} is first in victim order"
                  + (f" ({why})" if why else ""))  # fmt: skip
        preemptions.append(Preemption(victim.job_id, job.job_id, victim.gpu_id, reason))
    return Decision(tuple(preemptions), tuple(notes))
