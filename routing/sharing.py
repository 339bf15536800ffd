"""GPU sharing: several jobs on one large GPU when their memory fits, and defragmentation when it does not (pure).

Sharing is opt-in per device (``Device.shared``, a worker started with ``--share``). The memory model:

* A job's ``need_mib`` is its *placement* need, as everywhere in yoloq: the torch peak of ``routing.memory`` plus its
  own CUDA context (``routing.memory.CUDA_CONTEXT_MIB`` = 512 MiB, BRIEF §5 measured 300-500 MiB on an H100), so k
  tenants carry k contexts: a context is per process and is never shared.
* A job alone on a device fits when ``need <= memory`` (the whole-GPU rule, unchanged).
* On a shared device, a job joins its tenants when ``sum(needs) + need + margin <= memory``, with
  ``margin = max(margin_min_mib, margin_fraction × memory)`` (1 GiB / 5 %: a tenant's peak above its estimate must not
  OOM the others), and at most ``max_tenants`` jobs share one device.

:func:`pick` places a job by best fit (least room left after it, then GPU id), so small jobs pack together and the
large holes stay whole. :func:`ready_at` says when a device will be able to take a job, from its tenants' expected
ends (backfill reservations use it). :func:`defragment` answers a big job that fits no device while the room it
needs exists, scattered over shared devices: the cheapest set of movable jobs (checkpoint-and-restart cost) whose
move to other devices makes one device able to take it; a job of a higher tier than the big job is never moved, nor
a frozen one. Tenants the caller names ``evictable`` (the preemption rules let them go) are requeued when they fit
nowhere else, so urgent work can clear a packed card: one victim per waiting job never frees a card of four. With
``displace``, a tenant that may not be requeued (its budget is used) and fits nowhere takes the place of an evictable
tenant of another card, which is requeued instead: the budget keeps a job from going back to the queue twice a day,
and a move (checkpoint, resume elsewhere at once) does not send it there. :func:`spread_moves` gives an idle card
that takes no co-tenants a job from a shared card once nothing waiting fits it: the job runs alone, faster.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

from routing.tiers import Tier, rank


@dataclass(frozen=True, slots=True)
class Tenant:
    """A job running on a device: its placement need, expected end, and what moving it would cost."""

    job_id: str
    tier: Tier
    need_mib: int
    expected_end: float
    move_cost_s: float = 0.0
    frozen: bool = False
    loan_until: float | None = None  # started by backfill on a reserved device: reclaimable when the reservation comes
    pinned: bool = False  # never moved to another device (moved lately); may still be requeued when evictable


@dataclass(frozen=True, slots=True)
class Device:
    """One GPU: its memory, host, whether it accepts several jobs, and the jobs on it."""

    gpu_id: str
    memory_mib: int
    host: str = ""
    shared: bool = False
    tenants: tuple[Tenant, ...] = ()


@dataclass(frozen=True, slots=True)
class SharePolicy:
    """The knobs of sharing: safety margin per shared device and the most jobs one device takes."""

    margin_fraction: float = 0.05
    margin_min_mib: int = 1024
    max_tenants: int = 4
    slowdown: float = 0.15  # the least speed a co-tenant loses to time-slicing (what a move to an idle card regains)


@dataclass(frozen=True, slots=True)
class Move:
    """Checkpoint ``job_id`` on ``from_gpu`` and resume it on ``to_gpu`` (empty: requeue it, a preemption)."""

    job_id: str
    from_gpu: str
    to_gpu: str
    cost_s: float


@dataclass(frozen=True, slots=True)
class Defrag:
    """The moves that let ``for_job`` start on ``gpu_id``, their total cost, and why."""

    for_job: str
    gpu_id: str
    moves: tuple[Move, ...]
    cost_s: float
    reason: str


def margin_mib(memory_mib: int, policy: SharePolicy) -> int:
    """Memory a shared device keeps free, so one tenant's peak above its estimate does not OOM the others."""
    return max(policy.margin_min_mib, int(policy.margin_fraction * memory_mib))


def room_mib(device: Device, policy: SharePolicy) -> int:
    """The largest need one more job may have on ``device`` (0 when it takes none)."""
    if not device.tenants:
        return device.memory_mib
    if not device.shared or len(device.tenants) >= policy.max_tenants:
        return 0
    used = sum(t.need_mib for t in device.tenants)
    return max(0, device.memory_mib - used - margin_mib(device.memory_mib, policy))


def room_for(memory_mib: int, needs: list[int], policy: SharePolicy) -> int:
    """:func:`room_mib` of a shared device known only by its tenants' needs (a worker's ledger, a snapshot's jobs)."""
    tenants = tuple(Tenant(f"t{i}", Tier.MEDIUM, need, 0.0) for i, need in enumerate(needs))
    return room_mib(Device("gpu", memory_mib, shared=True, tenants=tenants), policy)


def fits(device: Device, need_mib: int, policy: SharePolicy) -> bool:
    """Whether a job of ``need_mib`` may start on ``device`` now."""
    return 0 < need_mib <= room_mib(device, policy)


def pick(devices: tuple[Device, ...], need_mib: int, policy: SharePolicy, *, spread: bool = False) -> Device | None:
    """The best-fit device for a job (least room left after it, then GPU id), or None when none fits now.

    With ``spread``, an idle device that fits comes first (best fit among the idle ones).
    """
    fitting = [d for d in devices if fits(d, need_mib, policy)]
    return min(fitting, key=lambda d: (spread and bool(d.tenants), room_mib(d, policy) - need_mib, d.gpu_id),
               default=None)  # fmt: skip


def release_at(tenant: Tenant, now: float) -> float:
    """When a tenant leaves its device: at its expected end, or now for a loan (reclaimable at any time)."""
    return now if tenant.loan_until is not None else max(now, tenant.expected_end)


def ready_at(device: Device, need_mib: int, now: float, policy: SharePolicy) -> float | None:
    """The earliest expected time ``device`` can take a job of ``need_mib`` (None: never, it is too small)."""
    if need_mib > device.memory_mib:
        return None
    left = sorted(device.tenants, key=lambda t: (release_at(t, now), t.job_id))
    at = now
    while not fits(replace(device, tenants=tuple(left)), need_mib, policy):
        at = release_at(left.pop(0), now)
    return at


def with_tenant(device: Device, tenant: Tenant) -> Device:
    """``device`` with one more job on it (callers check :func:`fits` first)."""
    return replace(device, tenants=(*device.tenants, tenant))


def _rehome(job: Tenant, others: list[Device], policy: SharePolicy) -> str | None:
    """Place ``job`` on one of ``others`` (updated in place), returning the GPU id, or None."""
    spot = pick(tuple(others), job.need_mib, policy)
    if spot is None:
        return None
    others[others.index(spot)] = with_tenant(spot, job)
    return spot.gpu_id


def _displace(job: Tenant, others: list[Device], policy: SharePolicy, evictable: frozenset[str]) -> Move | None:
    """Make room for ``job`` elsewhere by requeueing one ``evictable`` tenant it may replace (``others`` updated).

    The budget protects a job from going back to the queue, not from moving: a protected tenant of the card being
    cleared moves into the place of an evictable one, which is requeued instead (one requeue either way). Victim
    order: lowest tier first, then cheapest restart, then job id.
    """
    swaps = [(-rank(t.tier), t.move_cost_s, t.job_id, i, t) for i, d in enumerate(others) for t in d.tenants
             if t.job_id in evictable and fits(replace(d, tenants=tuple(x for x in d.tenants if x is not t)),
                                               job.need_mib, policy)]  # fmt: skip
    if not swaps:
        return None
    *_, index, victim = min(swaps)
    device = others[index]
    others[index] = replace(device, tenants=(*(t for t in device.tenants if t is not victim), job))
    return Move(victim.job_id, device.gpu_id, "", victim.move_cost_s)


def _moves_for(target: Device, subset: tuple[Tenant, ...], devices: tuple[Device, ...], need_mib: int, *,
               policy: SharePolicy, evictable: frozenset[str], displace: bool) -> list[Move] | None:  # fmt: skip
    """Moving ``subset`` off ``target`` (largest first) so that a ``need_mib`` job fits it; None when impossible.

    A job that fits nowhere else is requeued (``to_gpu`` empty) when it is ``evictable``; otherwise it takes the
    place of an evictable tenant of another card, which is requeued (:func:`_displace`); else the set fails.
    """
    kept = tuple(t for t in target.tenants if t not in subset)
    if not fits(replace(target, tenants=kept), need_mib, policy):
        return None
    others = [d for d in devices if d.gpu_id != target.gpu_id]
    moves: list[Move] = []
    for job in sorted(subset, key=lambda t: (-t.need_mib, t.job_id)):
        to = None if job.pinned else _rehome(job, others, policy)  # a pinned one here is evictable: requeued
        if to is None and job.job_id not in evictable:
            if not displace or (swap := _displace(job, others, policy, evictable)) is None:
                return None
            moves.append(swap)
            to = swap.from_gpu
        moves.append(Move(job.job_id, target.gpu_id, to or "", job.move_cost_s))
    return moves


def defragment(
    job_id: str,
    tier: Tier,
    need_mib: int,
    devices: tuple[Device, ...],
    policy: SharePolicy,
    *,
    evictable: frozenset[str] = frozenset(),
    displace: bool = False,
) -> Defrag | str:
    """The cheapest moves that let a blocked job start on one shared device, or why there are none.

    Order of plans: fewest requeued jobs, then least total move cost, then fewest moves, then GPU id. Only shared
    devices whose memory holds the job are targets; only tenants that are not frozen and not of a higher tier than
    the job move (nor a ``pinned`` one, unless it is evictable: then it is only ever requeued). ``evictable`` names the
    tenants the preemption rules let go (strictly lower tier, budget left: the caller decides): one that has nowhere
    to move is requeued, so a packed card can still be cleared for urgent work (one victim per waiting job would never
    free it).
    """
    if (spot := pick(devices, need_mib, policy)) is not None:
        return f"fits GPU {spot.gpu_id} now: nothing to move"
    targets = [d for d in devices if d.shared and d.tenants and d.memory_mib >= need_mib]
    if not targets:
        return f"no shared GPU of {need_mib} MiB or more holds jobs that could move"
    best: tuple[int, float, int, str, list[Move]] | None = None
    for target in targets:
        stays = [t for t in target.tenants if t.frozen or t.pinned or rank(t.tier) < rank(tier)]
        movable = [t for t in target.tenants if t.job_id in evictable or t not in stays]
        for size in range(1, len(movable) + 1):
            for subset in itertools.combinations(movable, size):
                moves = _moves_for(
                    target, subset, devices, need_mib, policy=policy, evictable=evictable, displace=displace
                )
                if moves is not None:
                    evicted = sum(1 for m in moves if not m.to_gpu)
                    key = (evicted, sum(m.cost_s for m in moves), len(moves), target.gpu_id, moves)
                    best = key if best is None or key[:4] < best[:4] else best
    if best is None:
        return "no set of movable jobs (same or lower tier, not frozen) fits elsewhere and none may be preempted"
    _, cost, _, gpu_id, moves = best
    names = ", ".join(f"{m.job_id} → {m.to_gpu or 'queue (preempted)'}" for m in moves)
    reason = (f"{need_mib} MiB fits no GPU now, but the room is scattered over shared GPUs: moving {names} "
              f"(checkpoint cost {cost:.0f} s) makes GPU {gpu_id} take it")  # fmt: skip
    return Defrag(job_id, gpu_id, tuple(moves), cost, reason)


def spread_moves(devices: tuple[Device, ...], now: float, policy: SharePolicy, *,
                 keep_idle: frozenset[str] = frozenset()) -> tuple[Move, ...]:  # fmt: skip
    """Moves that give idle devices a co-tenant of a shared one: it runs alone, its old card keeps the room.

    For when nothing waiting fits the idle devices (the caller places first). For each idle device not in
    ``keep_idle`` (a reservation's), smallest first: the tenant of a device holding two jobs or more with the longest
    expected remaining time among those that fit it, provided the speed it regains pays for the move
    (``remaining × slowdown > move_cost_s``); never a frozen job, one move per job.
    """
    moves: list[Move] = []
    moved: set[str] = set()
    idle = sorted((d for d in devices if not d.tenants and not d.shared and d.gpu_id not in keep_idle),
                  key=lambda d: (d.memory_mib, d.gpu_id))  # fmt: skip
    for spot in idle:
        movable = [(t.expected_end, t.job_id, d.gpu_id, t) for d in devices if len(d.tenants) >= 2
                   for t in d.tenants if not (t.frozen or t.pinned) and t.job_id not in moved
                   and t.need_mib <= spot.memory_mib
                   and (t.expected_end - now) * policy.slowdown > t.move_cost_s]  # fmt: skip
        if movable:
            _, job_id, from_gpu, tenant = max(movable, key=lambda m: (m[0], m[1]))
            moved.add(job_id)
            moves.append(Move(job_id, from_gpu, spot.gpu_id, tenant.move_cost_s))
    return tuple(moves)
