"""When to defragment shared GPUs, and for whom (pure): the supervisor and the day simulation share this rule.

:func:`routing.sharing.defragment` finds the cheapest moves that let one blocked job start; this module decides
whether to ask for them at all:

* The **blocked** jobs are the waiting one-GPU jobs whose need a shared GPU could hold but no GPU can take now. In
  the scheduling order (highest tier, then oldest, then job id), the first one with a plan that may run gets it: a
  blocked job that no plan helps (its tenants may not move, or moving costs more than it would wait) does not stop
  the ones behind it, as ``routing.preemption`` judges every waiting job. One defragmentation at a time.
* **Evictable** tenants (requeued when they fit nowhere else) are those the preemption rules let go for it: of a
  strictly lower tier, not frozen, and with their 24 h budget left (an SLA-urgent head ignores the budget, as
  ``routing.preemption`` does). ``reserved_share`` is not applied on this path: a shared card's tenants are slices of
  a GPU, not the whole GPUs the reserve counts.
* A **critical** head may displace: a tenant with no budget left moves into the place of an evictable tenant of
  another card, which is requeued instead.
* **Worth it**: a plan of moves only (nobody requeued) runs when its checkpoint cost is less than the head's expected
  wait (the earliest :func:`routing.sharing.ready_at` of any GPU, or its reservation's start when it holds one); a
  plan that requeues a job is a preemption, which the preemption rules above have already allowed.
"""

from __future__ import annotations

from routing.preemption import Policy, Waiting, is_urgent
from routing.sharing import Defrag, Device, SharePolicy, defragment, pick, ready_at
from routing.tiers import Tier, rank


def order(waiting: tuple[Waiting, ...]) -> list[Waiting]:
    """The scheduling order: highest tier first, then oldest, then job id (a total order)."""
    return sorted(waiting, key=lambda w: (rank(w.tier), w.submitted_at, w.job_id))


def blocked(waiting: tuple[Waiting, ...], devices: tuple[Device, ...], share: SharePolicy) -> list[Waiting]:
    """The waiting jobs a shared GPU could hold but no GPU can take now, in the scheduling order."""
    largest = max((d.memory_mib for d in devices if d.shared), default=0)
    return [w for w in order(waiting) if w.need_mib <= largest and pick(devices, w.need_mib, share) is None]


def evictable(
    head: Waiting, devices: tuple[Device, ...], spent: frozenset[str], now: float, policy: Policy
) -> frozenset[str]:
    """Tenants the preemption rules let go for ``head``: strictly lower tier, not frozen, budget left (or urgent)."""
    urgent = is_urgent(head, now, policy)
    lower = (t for d in devices for t in d.tenants if rank(t.tier) > rank(head.tier) and not t.frozen)
    return frozenset(t.job_id for t in lower if urgent or t.job_id not in spent)


def choose(
    waiting: tuple[Waiting, ...],
    devices: tuple[Device, ...],
    now: float,
    *,
    spent: frozenset[str] = frozenset(),
    reservation: tuple[str, float] | None = None,
    policy: Policy | None = None,
    share: SharePolicy | None = None,
) -> Defrag | str:
    """The defragmentation to run now for the first blocked job it helps, or why none runs (the first blocked job's
    reason). ``spent``: tenants whose preemption budget is used; ``reservation``: (job id, start time) of the one
    reservation backfill keeps, if any (its job's wait ends then)."""
    policy, share = policy or Policy(), share or SharePolicy()
    jobs = blocked(waiting, devices, share)
    if not jobs:
        return "no waiting job is blocked by fragmentation: each fits a GPU now or no shared GPU could hold it"
    reasons: list[str] = []
    tried: set[tuple[object, ...]] = set()  # jobs alike (tier, need, urgency, reservation) get the same answer
    for job in jobs:
        reserved_at = reservation[1] if reservation is not None and reservation[0] == job.job_id else None
        key = (job.tier, job.need_mib, is_urgent(job, now, policy), reserved_at)
        if key in tried:
            continue
        tried.add(key)
        answer = _plan(job, devices, now, spent=spent, reserved_at=reserved_at, policy=policy, share=share)
        if isinstance(answer, Defrag):
            return answer
        reasons.append(answer)
    return reasons[0]


def _plan(
    job: Waiting, devices: tuple[Device, ...], now: float, *, spent: frozenset[str], reserved_at: float | None,
    policy: Policy, share: SharePolicy,
) -> Defrag | str:  # fmt: skip
    """One blocked job's plan, when it may run: moves only when cheaper than its wait; a requeue as the rules allow."""
    answer = defragment(
        job.job_id, job.tier, job.need_mib, devices, share,
        evictable=evictable(job, devices, spent, now, policy), displace=job.tier is Tier.CRITICAL,
    )  # fmt: skip
    if isinstance(answer, str) or not all(m.to_gpu for m in answer.moves):
        return answer  # a plan that requeues someone is a preemption, which the rules above allowed
    ready = [t for d in devices if (t := ready_at(d, job.need_mib, now, share)) is not None]
    wait = reserved_at if reserved_at is not None else min(ready)
    if answer.cost_s >= wait - now:
        return f"{job.job_id}: moving costs {answer.cost_s:.0f} s, not less than its expected wait {wait - now:.0f} s"
    return answer
