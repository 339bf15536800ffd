"""Backfill with a reservation: the blocked head job keeps its place in time, idle GPUs still work (pure).

The waiting jobs are taken in the scheduling order (tier, then submit time, then job id). :func:`plan` decides, for
one instant ``now`` and the frozen list of devices (``routing.sharing.Device``, tenants with their expected ends):

1. Jobs that fit now start, best fit (``routing.sharing.pick``; a K-GPU job takes K whole devices of one host,
   ``routing.gang.choose``), until the first job that does not fit: the **head**. With ``BackfillPolicy.spread``,
   while the idle devices can give every waiting job one of its own (:func:`room_for_all`), a one-GPU job takes an
   idle device (best fit among them) rather than joining a shared one: alone it runs at full speed, and nothing
   waits for the room it leaves; once they cannot, or while a gang waits to gather idle devices, jobs pack.
2. The head gets a **reservation**: the device (or, for a gang, the K devices of one host) expected to be able to take
   it first, from the running jobs' expected ends (``routing.sharing.ready_at``; a job started on loan counts as
   free at once). If that time has come and only loans stand in the way, the loans are **reclaimed** (checkpointed
   and requeued: their start said so). A head that no device of the fleet can ever hold gets no reservation and the
   next job is examined as a head instead.
3. Every later job may start on devices outside the reservation as before; on a reserved device it may start only if
   it **does not delay the reservation** (the device can still take the head at the reserved time: its expected end
   is before it, or, on a shared device, the room is enough for both), or, when ``BackfillPolicy.loans`` is on and
   the job is preemptible, **on loan** until the reservation: it will be checkpointed then (its cost is its
   checkpoint and restart, stated in the reason); never once the reservation is due (the loan would end at once).
   Otherwise it waits, with the reason.

Only one reservation is held (EASY backfill, as Slurm's default): later blocked jobs wait without one, so no job is
ever delayed by a reservation made for a job behind it. With ``BackfillPolicy.reserve`` off, step 2 is skipped: every
job starts wherever it fits (greedy, what yoloq did before; the baseline of ``bench/simulate.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from routing.gang import Slot, choose
from routing.sharing import Device, SharePolicy, Tenant, fits, pick, ready_at, with_tenant
from routing.tiers import Tier, rank


@dataclass(frozen=True, slots=True)
class Job:
    """A waiting job: tier, placement need per GPU, submit time, expected runtime, and how many GPUs it needs."""

    job_id: str
    tier: Tier
    need_mib: int
    submitted_at: float
    expected_s: float
    gpus: int = 1
    preemptible: bool = True
    move_cost_s: float = 0.0


@dataclass(frozen=True, slots=True)
class BackfillPolicy:
    """Whether the head job gets a reservation, whether loans are allowed, the sharing rules, and spreading."""

    reserve: bool = True
    loans: bool = True
    share: SharePolicy = field(default_factory=SharePolicy)
    spread: bool = False  # a job takes an idle device of its own while there is one for every waiting job


@dataclass(frozen=True, slots=True)
class Start:
    """Start ``job_id`` on ``gpu_ids`` now; ``loan_until`` is set when it runs on a reservation's device on loan."""

    job_id: str
    gpu_ids: tuple[str, ...]
    reason: str
    loan_until: float | None = None


@dataclass(frozen=True, slots=True)
class Reservation:
    """``job_id`` will start on ``gpu_ids`` at ``start_at`` (expected); nothing may start there that delays it."""

    job_id: str
    gpu_ids: tuple[str, ...]
    start_at: float
    reason: str


@dataclass(frozen=True, slots=True)
class Reclaim:
    """A loan whose reservation has come: checkpoint ``job_id`` on ``gpu_id`` and requeue it."""

    job_id: str
    gpu_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Plan:
    """What to start, the reservation held, the loans to reclaim, and why every other job waits."""

    starts: tuple[Start, ...]
    reservation: Reservation | None
    reclaims: tuple[Reclaim, ...]
    notes: tuple[tuple[str, str], ...]


def order(jobs: tuple[Job, ...]) -> list[Job]:
    """The scheduling order: highest tier first, then oldest, then job id (a total order)."""
    return sorted(jobs, key=lambda j: (rank(j.tier), j.submitted_at, j.job_id))


def _slots(devices: dict[str, Device], job: Job, now: float, share: SharePolicy) -> tuple[Slot, ...]:
    """Each device as a gang member sees it: a whole device, free when its last non-loan tenant leaves."""
    slots = []
    for d in devices.values():
        at = ready_at(replace(d, shared=False), job.need_mib, now, share)
        if at is not None:
            slots.append(Slot(d.gpu_id, d.host, d.memory_mib, at))
    return tuple(slots)


def room_for_all(devices: tuple[Device, ...], waiting: tuple[Job, ...]) -> bool:
    """Whether the idle devices can give every waiting job a device of its own (never while a gang gathers).

    Largest need against largest idle device, in turn: in one dimension this greedy matching is exact.
    """
    if any(j.gpus > 1 for j in waiting):
        return False
    needs = sorted((j.need_mib for j in waiting), reverse=True)
    idle = sorted((d.memory_mib for d in devices if not d.tenants), reverse=True)
    return len(needs) <= len(idle) and all(need <= memory for need, memory in zip(needs, idle, strict=False))


def _fit_now(devices: dict[str, Device], job: Job, now: float, share: SharePolicy,
             spread: bool = False) -> tuple[str, ...] | None:  # fmt: skip
    if job.gpus == 1:
        spot = pick(tuple(devices.values()), job.need_mib, share, spread=spread)
        return None if spot is None else (spot.gpu_id,)
    idle = {g: d for g, d in devices.items() if not d.tenants}
    gang = choose(_slots(idle, job, now, share), job.gpus, job.need_mib, now)
    return None if gang is None else gang.gpu_ids


def _reserve(devices: dict[str, Device], job: Job, now: float, share: SharePolicy) -> Reservation | None:
    if job.gpus == 1:
        times = [(at, g) for g, d in devices.items() if (at := ready_at(d, job.need_mib, now, share)) is not None]
        if not times:
            return None
        at, gpu = min(times)
        gpus: tuple[str, ...] = (gpu,)
    else:
        gang = choose(_slots(devices, job, now, share), job.gpus, job.need_mib)
        if gang is None:
            return None
        at, gpus = gang.start_at, gang.gpu_ids
    where = ", ".join(gpus)
    why = (f"head of the queue ({job.tier.value}, {job.gpus} × {job.need_mib} MiB) fits nothing now; "
           f"GPU {where} is expected to take it first, at +{at - now:.0f} s")  # fmt: skip
    return Reservation(job.job_id, gpus, at, why)


def _reclaims(devices: dict[str, Device], res: Reservation, need_mib: int, share: SharePolicy) -> list[Reclaim]:
    """The loans to end on the reserved devices so the head fits (cheapest first)."""
    out = []
    for gpu in res.gpu_ids:
        device = devices[gpu]
        loans = sorted((t for t in device.tenants if t.loan_until is not None), key=lambda t: (t.move_cost_s, t.job_id))
        kept = list(device.tenants)
        while loans and not fits(replace(device, tenants=tuple(kept)), need_mib, share):
            loan = loans.pop(0)
            kept.remove(loan)
            out.append(Reclaim(loan.job_id, gpu, f"loan ended: GPU {gpu} is reserved for {res.job_id} from now"))
    return out


@dataclass(frozen=True, slots=True)
class _Hold:
    """The head job and its reservation, as the jobs behind it see them."""

    head: Job
    res: Reservation
    now: float


def _delays(devices: dict[str, Device], hold: _Hold, gpus: tuple[str, ...], tenant: Tenant, share: SharePolicy) -> bool:
    """Whether starting ``tenant`` on ``gpus`` moves the head's reservation later."""
    lone = hold.head.gpus > 1
    for gpu in sorted(set(gpus) & set(hold.res.gpu_ids)):
        device = with_tenant(devices[gpu], tenant)
        at = ready_at(replace(device, shared=device.shared and not lone), hold.head.need_mib, hold.now, share)
        if at is None or at > hold.res.start_at:
            return True
    return False


def _later(devices: dict[str, Device], job: Job, hold: _Hold, now: float,
           policy: BackfillPolicy) -> tuple[tuple[str, ...] | None, str, float | None]:  # fmt: skip
    """Where a job behind the head may start without delaying it, why, and the loan's end if it is a loan."""
    share, res, head = policy.share, hold.res, hold.head.job_id
    outside = {g: d for g, d in devices.items() if g not in res.gpu_ids}
    if (spot := _fit_now(outside, job, now, share)) is not None:
        return spot, "backfill on GPUs outside the head's reservation", None
    spot = _fit_now(devices, job, now, share)
    if spot is None:
        return None, "no GPU fits it now", None
    end = now + job.expected_s
    if not _delays(devices, hold, spot, Tenant(job.job_id, job.tier, job.need_mib, end), share):
        return spot, f"backfill: expected to end at +{end - now:.0f} s, before the reservation of {head}", None
    if policy.loans and job.preemptible and res.start_at > now:  # a loan due at once would only churn
        why = (f"on loan until the reservation of {head} at +{res.start_at - now:.0f} s (expected end "
               f"+{end - now:.0f} s); reclaimed then at its checkpoint cost of {job.move_cost_s:.0f} s")  # fmt: skip
        return spot, why, res.start_at
    return None, f"would delay the reservation of {head} (expected end +{end - now:.0f} s)", None


def plan(now: float, devices: tuple[Device, ...], waiting: tuple[Job, ...], policy: BackfillPolicy) -> Plan:
    """What starts now, the head's reservation and the loans to reclaim (see the module docstring for the rules)."""
    state = {d.gpu_id: d for d in devices}
    starts: list[Start] = []
    notes: list[tuple[str, str]] = []
    hold: _Hold | None = None
    reclaims: list[Reclaim] = []
    spread = policy.spread and room_for_all(devices, waiting)
    for job in order(waiting):
        loan: float | None = None
        if hold is None:
            spot, why = _fit_now(state, job, now, policy.share, spread), "fits now"
            if spot is None:
                res = _reserve(state, job, now, policy.share) if policy.reserve else None
                notes.append((job.job_id, "fits no GPU now" if res is None else res.reason))
                if res is not None:
                    hold = _Hold(job, res, now)
                    reclaims = _reclaims(state, res, job.need_mib, policy.share) if res.start_at <= now else []
                continue
        else:
            spot, why, loan = _later(state, job, hold, now, policy)
            if spot is None:
                notes.append((job.job_id, why))
                continue
        for gpu in spot:
            state[gpu] = with_tenant(state[gpu], Tenant(job.job_id, job.tier, job.need_mib, now + job.expected_s,
                                                        job.move_cost_s, loan_until=loan))  # fmt: skip
        starts.append(Start(job.job_id, spot, f"{why}: GPU {', '.join(spot)}", loan))
    return Plan(tuple(starts), None if hold is None else hold.res, tuple(reclaims), tuple(notes))
