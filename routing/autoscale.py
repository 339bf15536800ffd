"""How many GPU workers to run, and on which devices (pure; time is a parameter).

Inputs are what the queue-per-tier layout really holds: per tier and size class, the jobs waiting (every list of
the tier's queues plus messages reserved by a worker but not yet running), the live workers (idle, or busy with a
job of some tier) and the devices that have no worker. Rules:

1. **Scale up**: waiting jobs are matched to idle workers first (largest memory need first, smallest idle GPU that
   fits); each ``jobs_per_worker`` jobs left unmatched justify starting a worker on the smallest free device that
   fits them, up to ``max_workers``. A shortage must last ``up_delay_s`` before workers start.
2. **Scale down**: idle workers no waiting job needs, beyond ``min_workers``, stop after the surplus has lasted
   ``down_delay_s`` (largest devices first: they are the expensive ones). Idle workers stop at once.
3. **Safe scale-in**: when the fleet is above ``max_workers`` (an operator lowered it) and idle workers are not
   enough, busy workers are **drained** (lowest tier first): their job checkpoints and is requeued, never killed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from routing.tiers import Tier

RANK: dict[Tier, int] = {tier: index for index, tier in enumerate(Tier)}


@dataclass(frozen=True, slots=True)
class Device:
    """A GPU (real or simulated) that has no live worker."""

    device_id: str
    memory_mib: int


@dataclass(frozen=True, slots=True)
class Worker:
    """A live worker: its device and, when busy, the tier of the job it runs."""

    worker_id: str
    memory_mib: int
    busy_tier: Tier | None = None


@dataclass(frozen=True, slots=True)
class Config:
    """Autoscaler knobs (defaults: one job per GPU worker, scale up at once, scale down after 5 minutes)."""

    jobs_per_worker: int = 1
    min_workers: int = 0
    max_workers: int = 64
    up_delay_s: float = 0.0
    down_delay_s: float = 300.0


@dataclass(frozen=True, slots=True)
class State:
    """What the policy remembers between polls: since when a shortage or a surplus has lasted."""

    short_since: float | None = None
    surplus_since: float | None = None


@dataclass(frozen=True, slots=True)
class Context:
    """One poll's snapshot. ``waiting`` maps a memory need (MiB, the size-class bound) to the jobs waiting for it."""

    now: float
    waiting: dict[int, int]
    workers: tuple[Worker, ...]
    free_devices: tuple[Device, ...]
    config: Config = field(default_factory=Config)


@dataclass(frozen=True, slots=True)
class Decision:
    """Devices to start a worker on, idle workers to stop, busy workers to drain, and why."""

    start: tuple[str, ...] = ()
    stop: tuple[str, ...] = ()
    drain: tuple[str, ...] = ()
    reason: str = "steady"

    @property
    def changes(self) -> bool:
        """Whether the backend has anything to do."""
        return bool(self.start or self.stop or self.drain)


def _unmatched(ctx: Context) -> tuple[list[int], list[Worker]]:
    """Waiting jobs no idle worker can take (their memory needs, largest first), and the idle workers left over."""
    idle = sorted((w for w in ctx.workers if w.busy_tier is None), key=lambda w: (w.memory_mib, w.worker_id))
    left: list[int] = []
    for need in sorted(ctx.waiting, reverse=True):
        for _ in range(max(0, ctx.waiting[need])):
            fit = next((i for i, w in enumerate(idle) if w.memory_mib >= need), None)
            if fit is None:
                left.append(need)
            else:
                idle.pop(fit)
    return left, idle


def _starts(ctx: Context, needs: list[int]) -> tuple[list[str], int]:
    """Devices to start for unmatched needs (one per ``jobs_per_worker`` jobs) and how many jobs fit no device."""
    cfg = ctx.config
    room = max(0, cfg.max_workers - len(ctx.workers))
    free = sorted(ctx.free_devices, key=lambda d: (d.memory_mib, d.device_id))
    starts: list[str] = []
    stranded = 0
    pending: dict[str, int] = {}  # device chosen -> jobs it will serve
    for need in needs:
        host = next((d for d in starts if pending[d] < cfg.jobs_per_worker and _mem(free, d) >= need), None)
        if host is None and len(starts) < room:
            device = next((d for d in free if d.memory_mib >= need and d.device_id not in pending), None)
            host = device.device_id if device else None
            if host is not None:
                starts.append(host)
        if host is None:
            stranded += 1
            continue
        pending[host] = pending.get(host, 0) + 1
    return starts, stranded


def _mem(devices: list[Device], device_id: str) -> int:
    return next(d.memory_mib for d in devices if d.device_id == device_id)


def _scale_in(ctx: Context, spare: list[Worker]) -> tuple[list[str], list[str]]:
    """Idle workers to stop and busy ones to drain to get within ``max_workers`` (drain lowest tier first)."""
    over = len(ctx.workers) - ctx.config.max_workers
    if over <= 0:
        return [], []
    stop = [w.worker_id for w in sorted(spare, key=lambda w: (-w.memory_mib, w.worker_id))][:over]
    busy = sorted((w for w in ctx.workers if w.busy_tier is not None),
                  key=lambda w: (-RANK[w.busy_tier or Tier.BATCH], w.worker_id))  # fmt: skip
    return stop, [w.worker_id for w in busy[: over - len(stop)]]


def desired(ctx: Context, state: State) -> tuple[Decision, State]:
    """This poll's actions and the state to pass to the next poll (see the module docstring for the rules)."""
    cfg = ctx.config
    needs, spare = _unmatched(ctx)
    stop, drain = _scale_in(ctx, spare)
    if stop or drain:
        reason = f"{len(ctx.workers)} workers exceed max_workers {cfg.max_workers}"
        return Decision(stop=tuple(stop), drain=tuple(drain), reason=reason), State()
    starts, stranded = _starts(ctx, needs)
    note = f"; {stranded} waiting jobs fit no free device or exceed max_workers" if stranded else ""
    if starts:
        since = ctx.now if state.short_since is None else state.short_since
        if ctx.now - since < cfg.up_delay_s:
            return Decision(reason=f"{len(needs)} jobs wait for a worker; up delay not reached{note}"), State(since)
        reason = f"{len(needs)} waiting jobs fit no idle worker: start {len(starts)}{note}"
        return Decision(start=tuple(starts), reason=reason), State()
    surplus = sorted(spare, key=lambda w: (-w.memory_mib, w.worker_id))[: max(0, len(ctx.workers) - cfg.min_workers)]
    if not surplus:
        return Decision(reason=f"steady: {len(ctx.workers)} workers{note}"), State()
    since = ctx.now if state.surplus_since is None else state.surplus_since
    if ctx.now - since < cfg.down_delay_s:
        return Decision(reason=f"{len(surplus)} idle workers; down delay not reached{note}"), State(None, since)
    reason = f"{len(surplus)} workers idle for {ctx.now - since:.0f} s and no waiting job needs them"
    return Decision(stop=tuple(w.worker_id for w in surplus), reason=reason), State()


def replicas_for(depth: int, jobs_per_worker: int, min_workers: int, max_workers: int) -> int:
    """The replica count a queue-length scaler (KEDA) would ask for at this depth: the plain formula, for comparison."""
    return max(min_workers, min(max_workers, math.ceil(max(0, depth) / max(1, jobs_per_worker))))
