"""The written order in which GPUs take queued jobs, and each queued job's place and start time under it (pure).

**The order** (what a free GPU takes next; docs/eta.md; workers follow it through :mod:`infra.queue_order`):

1. Highest tier first (``critical > high > medium > low > batch``), among the size-class queues the GPU fits.
2. Inside a tier, the **oldest submitted** of the jobs at the front of those queues (each queue is a list in
   submit order; a preempted job is requeued at its tail), ties to the larger size class.
3. One exception: the front job of the GPU's **own largest size class** (work no smaller card can hold) goes first
   when it was submitted at most :data:`JUMP_BOUND_S` after the oldest front job. So an older job is passed only
   by bigger jobs submitted within that bound after it: a bounded number, never an endless stream.

:func:`standings` replays that order over a snapshot (each GPU free now or when its running job's remaining time
ends; each started job holds its GPU for its expected runtime) and gives every queued job its ``queue_position``
(1 + the queued jobs that will start before it on a GPU it could use) and ``eta_start`` (seconds from
now). Jobs submitted later are foreseen only as a load: higher-tier work arriving at the recent rate stretches a
job's ETA (:func:`arrival_shares`). Not modelled: preemption (a waiting job of a higher tier than a running one will
preempt it; its ETA here is when a GPU frees by itself, an upper bound).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from routing.tiers import SIZE_CLASSES, TIERS, Tier, classes_fitting, queue_name, queues_for_gpu, rank, tier_of_queue

JUMP_BOUND_S = 600.0
MAX_SHARE = 0.9  # higher tiers never count as taking more than 90 % of the fleet: an ETA at most 10 × the replay
_CLASS_RANK = {sc.name: i for i, sc in enumerate(SIZE_CLASSES)}


def _class_rank(queue: str) -> int:
    return _CLASS_RANK[queue.rsplit(".", 1)[1]]


def pick(gpu_mib: int, heads: Mapping[str, float]) -> str | None:
    """The queue a free GPU with ``gpu_mib`` MiB takes its next job from, by the written order; ``heads`` maps each
    non-empty queue to the submit time of its front job (queues the GPU does not fit are ignored). None: nothing."""
    mine = set(queues_for_gpu(gpu_mib))
    for tier in TIERS:
        fronts = {q: ts for q, ts in heads.items() if q in mine and tier_of_queue(q) is tier}
        if not fronts:
            continue
        oldest = min(fronts.values())
        big = queue_name(tier, classes_fitting(gpu_mib)[0])
        if big in fronts and fronts[big] <= oldest + JUMP_BOUND_S:
            return big
        return min(fronts, key=lambda q: (fronts[q], -_class_rank(q)))
    return None


@dataclass(frozen=True, slots=True)
class Queued:
    """A waiting job: its queue (``yoloq.<tier>.<class>``), submit time and expected runtime (None: never ends)."""

    job_id: str
    queue: str
    submitted_ts: float
    runtime_s: float | None


@dataclass(frozen=True, slots=True)
class Device:
    """A live GPU: its usable memory and the seconds until its running job ends (0: free now; inf: never)."""

    gpu_id: str
    memory_mib: int
    free_in_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Standing:
    """Where a queued job stands: its position among jobs competing for the same GPUs and its start, in seconds
    from now (both None when no live GPU will take it), with the reason when None."""

    job_id: str
    queue_position: int | None
    eta_start_s: float | None
    gpu_id: str | None = None
    reason: str = ""


def in_submit_order(jobs: Sequence[Queued]) -> dict[str, list[Queued]]:
    """Queues as lists front first, for a snapshot that lacks the broker's own lists: each in submit order."""
    out: dict[str, list[Queued]] = {}
    for job in sorted(jobs, key=lambda j: (j.submitted_ts, j.job_id)):
        out.setdefault(job.queue, []).append(job)
    return out


def _simulate(devices: Sequence[Device], queues: Mapping[str, Sequence[Queued]]) -> list[tuple[Queued, float, str]]:
    """Replay the order: the GPU that frees first takes its next job; returns (job, start s, GPU) in start order."""
    fronts = {q: 0 for q, jobs in queues.items() if jobs}
    free = [(d.free_in_s, d.gpu_id, d.memory_mib) for d in devices if not math.isinf(d.free_in_s)]
    heapq.heapify(free)
    started: list[tuple[Queued, float, str]] = []
    while free and fronts:
        at, gpu_id, mib = heapq.heappop(free)
        queue = pick(mib, {q: queues[q][i].submitted_ts for q, i in fronts.items()})
        if queue is None:
            continue  # nothing waiting fits this GPU, and nothing new arrives in the replay
        job = queues[queue][fronts[queue]]
        fronts[queue] += 1
        if fronts[queue] == len(queues[queue]):
            del fronts[queue]
        started.append((job, at, gpu_id))
        if job.runtime_s is not None:
            heapq.heappush(free, (at + job.runtime_s, gpu_id, mib))
    return started


def arrival_shares(recent: Sequence[tuple[Tier, float]], window_s: float, gpus: int) -> dict[Tier, float]:
    """Per tier, the share of the fleet that work of strictly higher tiers arriving meanwhile takes, from the jobs
    submitted in the last ``window_s`` ((tier, expected runtime) each), capped at :data:`MAX_SHARE`."""
    if window_s <= 0 or gpus <= 0:
        return dict.fromkeys(TIERS, 0.0)
    load = {t: sum(s for tier, s in recent if tier is t) / (window_s * gpus) for t in TIERS}
    return {t: min(sum(load[h] for h in TIERS[: rank(t)]), MAX_SHARE) for t in TIERS}


def standings(
    devices: Sequence[Device], queues: Mapping[str, Sequence[Queued]], shares: Mapping[Tier, float] | None = None
) -> dict[str, Standing]:
    """Every queued job's position and ETA under the written order (``queues`` front first, as workers see them).

    ``shares`` (:func:`arrival_shares`): a job of tier T waits ``ETA / (1 - share[T])`` instead: while the jobs ahead
    of it drain, higher-tier work keeps arriving and goes first (the busy-period argument of priority queues)."""
    started = _simulate(devices, queues)
    shares = shares or {}
    usable = {sc.bound_mib: [d.gpu_id for d in devices if d.memory_mib >= sc.bound_mib] for sc in SIZE_CLASSES}
    starts_on = dict.fromkeys((d.gpu_id for d in devices), 0)
    out: dict[str, Standing] = {}
    for job, at, gpu_id in started:
        ahead = sum(starts_on[g] for g in usable[_bound(job.queue)])
        stretch = 1.0 / (1.0 - shares.get(tier_of_queue(job.queue), 0.0))
        out[job.job_id] = Standing(job.job_id, ahead + 1, at * stretch, gpu_id)
        starts_on[gpu_id] += 1
    for jobs in queues.values():
        for job in jobs:
            if job.job_id not in out:
                fits = any(d.memory_mib >= _bound(job.queue) for d in devices)
                why = "the GPUs that fit it are held by jobs that never end" if fits else "no live GPU can hold it"
                out[job.job_id] = Standing(job.job_id, None, None, None, why)
    return out


def _bound(queue: str) -> int:
    return SIZE_CLASSES[_class_rank(queue)].bound_mib
