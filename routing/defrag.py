"""When to defragment shared GPUs, and for whom (pure): the supervisor and the day simulation share this rule.

:func:`routing.sharing.defragment` finds the cheapest moves that let one blocked job start; this module decides
whether to ask for them at all:

* The **head** is the first waiting one-GPU job, in the scheduling order (highest tier, then oldest, then job id),
  whose need some GPU of the fleet could hold but no GPU can take now. Only the head defragments: the jobs behind it
  wait their turn, as they would for a whole GPU.
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


def blocked_head(waiting: tuple[Waiting, ...], devices: tuple[Device, ...], share: SharePolicy) -> Waiting | None:
    """The first waiting job that a GPU of the fleet could hold but none can take now (None: nobody is blocked so)."""
    largest = max((d.memory_mib for d in devices), default=0)
    return next((w for w in order(waiting) if w.need_mib <= largest and pick(devices, w.need_mib, share) is None),
                None)  # fmt: skip


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
    """The defragmentation to run now for the blocked head, or why none runs.

    ``spent``: tenants whose preemption budget is used; ``reservation``: (job id, start time) of the one reservation
    backfill keeps, if any (its job's wait ends then).
    """
    policy, share = policy or Policy(), share or SharePolicy()
    head = blocked_head(waiting, devices, share)
    if head is None:
        return "no waiting job is blocked by fragmentation: each fits a GPU now or no GPU could hold it"
    answer = defragment(
        head.job_id, head.tier, head.need_mib, devices, share,
        evictable=evictable(head, devices, spent, now, policy), displace=head.tier is Tier.CRITICAL,
    )  # fmt: skip
    if isinstance(answer, str) or not all(m.to_gpu for m in answer.moves):
        return answer  # a plan that requeues someone is a preemption, which the rules above allowed
    ready = [t for d in devices if (t := ready_at(d, head.need_mib, now, share)) is not None]
    wait = reservation[1] if reservation is not None and reservation[0] == head.job_id else min(ready)
    if answer.cost_s >= wait - now:
        return f"{head.job_id}: moving costs {answer.cost_s:.0f} s, not less than its expected wait {wait - now:.0f} s"
    return answer
