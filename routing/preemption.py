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

import bisect
import math
from dataclasses import dataclass, field

from routing.fleet_fit import too_big
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


FETCH_BYTES_PER_S = 200e6  # S3 → worker, measured on SeaweedFS here (bench/results/preempt.md: 228–290 MB/s)


def restart_cost_s(checkpoint_bytes: int, publish_s: float, fetch_bytes_per_s: float = FETCH_BYTES_PER_S) -> float:
    """What a preemption costs besides lost work: publishing the checkpoint once more now, fetching it at resume.

    The job process's start-up is the same for every victim, so it does not change their order and is left out.
    """
    return max(0.0, publish_s) + max(0, checkpoint_bytes) / fetch_bytes_per_s


def urgent_cutoffs(now: float, policy: Policy) -> dict[Tier, float]:
    """Per tier, the latest submit time that makes a waiting job urgent (one comparison per job in the hot loop)."""
    return {tier: now - policy.urgent_fraction * target.within_s for tier, target in policy.targets.items()}


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


@dataclass
class _Plan:
    """Mutable state of one decision: free GPUs by size, open victims in order, what is known to fail."""

    snap: Snapshot
    free: list[tuple[int, str]]
    buckets: dict[int, list[Running]]  # by GPU memory: open victims (not frozen/preempting/taken), in victim order
    spent_buckets: dict[int, list[Running]]  # the same for jobs whose budget is used (victims of SLA-urgent jobs only)
    memory: dict[str, int]
    low_running: int
    reserved: int
    spent: frozenset[str]  # jobs whose preemption budget is used up
    protected_rank: int = -1  # lowest tier among frozen / already-preempting jobs (they still need a reason)
    taken: set[str] = field(default_factory=set)
    failed: list[tuple[int, bool, int, str]] = field(default_factory=list)

    def take_free(self, need: int) -> str | None:
        """The smallest free GPU that fits ``need`` (removed from the plan), if any."""
        if not self.free or self.free[-1][0] < need:
            return None
        return self.free.pop(bisect.bisect_left(self.free, (need, "")))[1]

    def known_failure(self, rank: int, urgent: bool, need: int) -> str | None:
        """A job no more urgent, of no higher tier and needing no less than one that found no victim finds none."""
        for f_rank, f_urgent, f_need, reason in self.failed:
            if rank >= f_rank and need >= f_need and (f_urgent or not urgent):
                return reason
        return None


def _first_in(bucket: list[Running], job: Waiting, plan: _Plan) -> int | None:
    if not bucket or RANK[bucket[0].tier] <= RANK[job.tier]:
        return None  # lowest tier first: nothing in this bucket is lower than the waiting job
    if job.tier in RESERVED_TIERS or plan.low_running - 1 >= plan.reserved:
        return 0
    for index, candidate in enumerate(bucket):  # at the reserve: only jobs outside low/batch may yield
        if RANK[candidate.tier] <= RANK[job.tier]:
            return None
        if candidate.tier not in RESERVED_TIERS:
            return index
    return None


def _pick(job: Waiting, plan: _Plan, urgent: bool) -> Running | None:
    """The first eligible victim in victim order among GPUs big enough for ``job`` (removed from the plan)."""
    best: tuple[list[Running], int] | None = None
    for buckets in (plan.buckets, plan.spent_buckets) if urgent else (plan.buckets,):
        for size, bucket in buckets.items():
            if size < job.need_mib:
                continue
            index = _first_in(bucket, job, plan)
            if index is not None and (best is None or victim_order(bucket[index]) < victim_order(best[0][best[1]])):
                best = (bucket, index)
    return None if best is None else best[0].pop(best[1])


def _why_none(job: Waiting, plan: _Plan, urgent: bool) -> str:
    """The reason a waiting job got no victim (slow path, once per kind of failure)."""
    rank = RANK[job.tier]
    fitting = [r for r in plan.snap.running if r.job_id not in plan.taken and RANK[r.tier] > rank
               and plan.memory.get(r.gpu_id, 0) >= job.need_mib]  # fmt: skip
    if not fitting:
        return "no lower-tier job runs on a GPU that fits it"
    refusals = {_refusal(r, job, plan.snap, urgent, plan.low_running) for r in fitting}
    return "every candidate is protected: " + "; ".join(sorted(str(r) for r in refusals))


def _buckets(snap: Snapshot, jobs: list[Running]) -> dict[int, list[Running]]:
    memory = {g.gpu_id: g.memory_mib for g in snap.gpus}
    buckets: dict[int, list[Running]] = {}
    for job in sorted(jobs, key=victim_order):
        buckets.setdefault(memory.get(job.gpu_id, 0), []).append(job)
    return buckets


def _plan(snap: Snapshot) -> _Plan:
    policy, soon_free = snap.policy, {r.gpu_id for r in snap.running if r.preempting}
    spent = frozenset(
        r.job_id for r in snap.running
        if sum(1 for t in r.preempted_at if snap.now - t < policy.window_s) >= policy.max_preemptions
    )  # fmt: skip
    open_jobs = [r for r in snap.running if not r.frozen and not r.preempting]
    return _Plan(
        snap=snap,
        free=sorted((g.memory_mib, g.gpu_id) for g in snap.gpus if g.job_id is None or g.gpu_id in soon_free),
        buckets=_buckets(snap, [r for r in open_jobs if r.job_id not in spent]),
        spent_buckets=_buckets(snap, [r for r in open_jobs if r.job_id in spent]),
        memory={g.gpu_id: g.memory_mib for g in snap.gpus},
        low_running=sum(1 for r in snap.running if r.tier in RESERVED_TIERS and not r.preempting),
        reserved=reserved_gpus(len(snap.gpus), policy.reserved_share),
        spent=spent,
        protected_rank=max((RANK[r.tier] for r in snap.running if r.frozen or r.preempting), default=-1),
    )


def _lowest_left(plan: _Plan) -> int:
    """Rank of the lowest tier still running and not taken (-1 when none): bucket heads are lowest tier first."""
    heads = [RANK[b[0].tier] for b in (*plan.buckets.values(), *plan.spent_buckets.values()) if b]
    return max([*heads, plan.protected_rank])


def decide(snap: Snapshot) -> Decision:
    """Choose the victims for the waiting jobs of ``snap`` (see the module docstring for the rules)."""
    plan = _plan(snap)
    preemptions: list[Preemption] = []
    notes: list[tuple[str, str]] = []
    order = sorted(snap.waiting, key=lambda w: (RANK[w.tier], w.submitted_at, w.job_id))
    cutoffs, lowest, examined = urgent_cutoffs(snap.now, snap.policy), _lowest_left(plan), 0
    largest = max((g.memory_mib for g in snap.gpus), default=0)
    for job in order:
        rank = RANK[job.tier]
        if not plan.free and lowest <= rank:  # no free GPU, no lower tier running: nothing left for anyone later
            break
        examined += 1
        if unfit := too_big(job.need_mib, largest, "running now"):  # its own reason, never a smaller job's
            notes.append((job.job_id, f"no live GPU can hold it: {unfit}"))
            continue
        spot = plan.take_free(job.need_mib) if plan.free else None
        if spot is not None:
            notes.append((job.job_id, f"fits free GPU {spot}"))
            continue
        urgent = job.submitted_at <= cutoffs.get(job.tier, -math.inf)
        known = plan.known_failure(rank, urgent, job.need_mib) if plan.failed else None
        victim = None if known else _pick(job, plan, urgent)
        if victim is None:
            why = known or _why_none(job, plan, urgent)
            if not known:
                plan.failed.append((rank, urgent, job.need_mib, why))
            notes.append((job.job_id, why))
            continue
        plan.taken.add(victim.job_id)
        lowest = _lowest_left(plan)
        plan.low_running -= victim.tier in RESERVED_TIERS and job.tier not in RESERVED_TIERS
        reason = (f"{job.tier.value} job {job.job_id} needs {job.need_mib} MiB and no free GPU fits; "
                  f"{victim.tier.value} job {victim.job_id} on GPU {victim.gpu_id} is first in victim order"
                  + (" (SLA-urgent)" if urgent and victim.job_id in plan.spent else ""))  # fmt: skip
        preemptions.append(Preemption(victim.job_id, job.job_id, victim.gpu_id, reason))
    if examined < len(order):
        rest = len(order) - examined
        notes.append(("*", f"{rest} more waiting jobs not examined: no free GPU and no lower-tier job left"))
    return Decision(tuple(preemptions), tuple(notes))
