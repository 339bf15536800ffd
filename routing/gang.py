"""Gang placement: a job that needs K GPUs gets K whole devices on one host, all at once or not at all (pure).

Placement (:func:`choose`) works on a frozen list of :class:`Slot` (one per device, with the time it is expected to be
free) and assigns the whole gang from that one snapshot: there is no partial answer. Among hosts that have K devices
with enough memory, ordered:

1. For a start now (``at <= now``): the host with the fewest fitting devices free (best fit: keep the hosts with many
   free devices for larger gangs), then host name.
2. For a reservation: the earliest time K devices of the host are free (the K-th earliest ``free_at``), then fewest
   fitting devices, then host name. Inside a host, devices are taken in (``free_at``, GPU id) order.

Acting on a placement, several supervisors or workers may race for the same devices. :func:`claim` takes a gang's
devices one at a time **in one global order** (host, then GPU id) and, at the first device another owner holds, gives
back every device it took (``Claim.granted`` is False, ``owners`` unchanged). Two gangs competing for overlapping
devices therefore never deadlock: the one that takes the lowest contested device first gets all of them, the other
holds none and retries later (tests/unit/test_gang.py checks every interleaving). :func:`members` names every device
of a gang, so stopping one member (a preemption, a failure) frees all K.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Slot:
    """One device as gang placement sees it: host, memory, and when it is expected to be free (now when idle)."""

    gpu_id: str
    host: str
    memory_mib: int
    free_at: float


@dataclass(frozen=True, slots=True)
class GangChoice:
    """K devices of one host and the time all of them are free."""

    host: str
    gpu_ids: tuple[str, ...]
    start_at: float


@dataclass(frozen=True, slots=True)
class Claim:
    """The result of claiming a gang's devices: all of them, or none with the device that was taken first."""

    granted: bool
    owners: dict[str, str]
    reason: str


def _per_host(slots: tuple[Slot, ...], need_mib: int, k: int, now: float | None) -> dict[str, list[Slot]]:
    hosts: dict[str, list[Slot]] = {}
    for slot in slots:
        if slot.memory_mib >= need_mib and (now is None or slot.free_at <= now):
            hosts.setdefault(slot.host, []).append(slot)
    return {h: sorted(s, key=lambda x: (x.free_at, x.gpu_id)) for h, s in hosts.items() if len(s) >= k}


def choose(slots: tuple[Slot, ...], k: int, need_mib: int, now: float | None = None) -> GangChoice | None:
    """K devices of one host for a gang: free at ``now`` when given (a start), else the earliest (a reservation)."""
    if k < 1:
        raise ValueError(f"a gang needs at least one GPU, got {k}")
    hosts = _per_host(slots, need_mib, k, now)
    if not hosts:
        return None
    if now is not None:
        host = min(hosts, key=lambda h: (len(hosts[h]), h))
    else:
        host = min(hosts, key=lambda h: (hosts[h][k - 1].free_at, len(hosts[h]), h))
    chosen = hosts[host][:k]
    return GangChoice(host, tuple(s.gpu_id for s in chosen), chosen[-1].free_at)


def claim_order(gpu_ids: tuple[str, ...], host: str) -> list[tuple[str, str]]:
    """The one global order every claimant uses (host, then GPU id): the reason two gangs cannot deadlock."""
    return sorted((host, g) for g in gpu_ids)


def claim_step(
    owners: Mapping[str, str], gang_id: str, host: str, gpu_ids: tuple[str, ...]
) -> tuple[dict[str, str], str]:
    """One atomic step of the claim protocol (what one SET NX does), so racing claimants can be checked step by step.

    Returns the owners after the step and what happened: ``"took <gpu>"`` (the next device in global order was free),
    ``"granted"`` (the gang holds all its devices) or ``"backed off: <gpu> held by <owner>"`` (everything given back).
    """
    for _, gpu in claim_order(gpu_ids, host):
        holder = owners.get(gpu)
        if holder == gang_id:
            continue
        if holder is None:
            return {**owners, gpu: gang_id}, f"took {gpu}"
        return release(owners, gang_id), f"backed off: {gpu} held by {holder}"
    return dict(owners), "granted"


def claim(owners: Mapping[str, str], gang_id: str, host: str, gpu_ids: tuple[str, ...]) -> Claim:
    """Take all of a gang's devices or none: in global order, giving back what was taken at the first conflict."""
    after, what = dict(owners), ""
    while not what.startswith(("granted", "backed off")):
        after, what = claim_step(after, gang_id, host, gpu_ids)
    if what == "granted":
        return Claim(True, after, f"all {len(gpu_ids)} GPUs of {host} taken together")
    return Claim(False, after, f"GPU {what.removeprefix('backed off: ')}: none of the {len(gpu_ids)} GPUs taken")


def members(owners: Mapping[str, str], gang_id: str) -> tuple[str, ...]:
    """Every device a gang holds: stopping any member (preemption, failure) releases all of them together."""
    return tuple(sorted(g for g, holder in owners.items() if holder == gang_id))


def release(owners: Mapping[str, str], gang_id: str) -> dict[str, str]:
    """The owners map with all of a gang's devices given back at once."""
    return {g: holder for g, holder in owners.items() if holder != gang_id}


@dataclass(frozen=True, slots=True)
class GangJob:
    """A waiting multi-GPU job as the placer sees it (``rank``: its tier's rank, 0 most urgent)."""

    job_id: str
    rank: int
    submitted_at: float
    k: int
    need_mib: int


@dataclass(frozen=True, slots=True)
class Hold:
    """Devices to hold for a gang now: all idle (it starts once they are settled) or a reservation that drains."""

    job_id: str
    host: str
    gpu_ids: tuple[str, ...]
    start_at: float
    reason: str


def plan(now: float, jobs: tuple[GangJob, ...], slots: tuple[Slot, ...], reserving: bool) -> tuple[Hold, ...]:
    """The holds to take this tick, in scheduling order (tier, submit time): each gang that idle devices of one host
    can take now; for the first that cannot, unless a reservation is draining already (one at a time, EASY), the K
    devices expected free first, held so that no new job lands on them while they drain."""
    holds, free = [], list(slots)
    for job in sorted(jobs, key=lambda j: (j.rank, j.submitted_at, j.job_id)):
        start = choose(tuple(free), job.k, job.need_mib, now)
        if start is not None:
            holds.append(
                Hold(
                    job.job_id,
                    start.host,
                    start.gpu_ids,
                    now,
                    f"{job.k} idle GPUs of {start.host} ({', '.join(start.gpu_ids)}) held together",
                )
            )
        elif not reserving and (later := choose(tuple(free), job.k, job.need_mib)) is not None:
            reserving, start = True, later
            holds.append(
                Hold(
                    job.job_id,
                    later.host,
                    later.gpu_ids,
                    later.start_at,
                    f"head of the gangs: GPUs {', '.join(later.gpu_ids)} of {later.host} reserved, "
                    f"expected free together at +{max(0.0, later.start_at - now):.0f} s",
                )
            )
        else:
            continue
        taken = {(start.host, g) for g in start.gpu_ids}
        free = [s for s in free if (s.host, s.gpu_id) not in taken]
    return tuple(holds)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A waiting one-GPU job that might run on a reserved GPU until the reservation is due."""

    job_id: str
    rank: int
    submitted_at: float
    need_mib: int
    expected_s: float | None  # None: unknown, never lent


MARGIN_SHARE, MARGIN_MAX_S = 0.2, 60.0  # a loan ends before the reservation by 20 % of the wait, at most 60 s


def backfill(now: float, start_at: float, memory_mib: int, waiting: tuple[Candidate, ...]) -> tuple[str, str] | None:
    """The job (and why) that may use an idle GPU held for a draining gang until it is due (Slurm's backfill): the
    first in scheduling order that fits and is expected to end before ``start_at`` with a margin (expected runtimes
    err). Should it overrun anyway, the placer reclaims it at its checkpoint when the reservation is due."""
    margin_s = min(MARGIN_MAX_S, MARGIN_SHARE * max(0.0, start_at - now))
    for job in sorted(waiting, key=lambda j: (j.rank, j.submitted_at, j.job_id)):
        if job.need_mib > memory_mib or job.expected_s is None:
            continue
        end = now + job.expected_s
        if end + margin_s <= start_at:
            return job.job_id, (f"backfill: expected to end at +{job.expected_s:.0f} s, before the reservation due at "
                                f"+{start_at - now:.0f} s")  # fmt: skip
    return None
