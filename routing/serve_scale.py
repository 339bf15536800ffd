"""How many replicas a deployment should run, from its load (pure; acted on by ``workers.serving``).

Signals, each turned into a replica count, the largest wins, clamped to ``[min, max]``:

- **throughput**: ``ceil(rps / target_rps_per_replica)``;
- **latency**: p99 above its target asks for one replica more than now (p99 cannot say how many). The scaler judges
  only requests answered since the deployment last changed (its replica count, or a replica warming up), and only
  once :data:`P99_MIN_REQUESTS` of them are in: the latencies of a cold start, of an outage's waited-out backlog or of
  the deployment it was before describe replicas it does not have now. Judged over its newest requests instead, one
  slow burst asked for one more replica at every tick that had traffic, up to the maximum, and held it there;
- **backlog**: requests queued beyond what the replicas take in one batch each ask for one more;
- **GPU utilisation**: above the target (70 %, the product description's example) asks for one more;
- **wake**: a request waiting with no replica asks for one (a scale-to-zero deployment's first request).

Scale-out waits ``up_delay_s`` of sustained demand (0: at once) except a wake, which never waits; scale-in waits
``down_delay_s`` of sustained surplus and steps down one replica at a time (each stopped replica drains), never
while a replica is warming up on its GPU; a replica still waiting for a GPU (``unplaced``) may be withdrawn while no
request is queued and the placed replicas, judged on every signal, do not ask for it, so one asked for by a burst
cannot wait on a full fleet for ever, to take the next free GPU long after the burst (and one a p99 still asks for is
not withdrawn and asked for again at every down delay). A deployment with ``min 0`` goes to zero after
``down_delay_s`` without a request.

Healing (replacing replica jobs that ended: failed, cancelled by hand) backs off: the first replacement goes at once,
the next ones wait 10 s, 20 s, ... up to 10 min while no replacement gets all replicas ready, so a version that cannot
load is retried less and less often instead of every tick.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Load:
    """A deployment's load as last measured."""

    replicas: int  # replica jobs running or starting (what the deployment has now)
    queued: int  # requests waiting in its list
    rps: float  # requests answered per second over the last interval
    p99_ms: float | None  # of recent requests; None with no traffic
    gpu_util: float | None = None  # mean of its replicas' GPUs (0-1); None where unknown (CPU, simulated)
    ready: int | None = None  # replicas warmed up and answering; None: all of them
    unplaced: int = 0  # replica jobs not on a GPU yet (queued for one, or held): withdrawing one wastes no warm-up

    @property
    def warming(self) -> bool:
        """Some replica it should have is not ready yet (a cold start in progress)."""
        return self.ready is not None and self.ready < self.replicas


@dataclass(frozen=True)
class Targets:
    """The deployment's bounds and targets (``tasks.model_records.Deployment``) and the scaler's delays."""

    min_replicas: int
    max_replicas: int
    rps_per_replica: float
    p99_ms: float
    max_batch: int = 8
    gpu_util: float = 0.7
    up_delay_s: float = 0.0
    down_delay_s: float = 60.0


@dataclass(frozen=True)
class Pending:
    """Since when the scaler has wanted more (``up_since``) or fewer (``down_since``) replicas than it has."""

    up_since: float | None = None
    down_since: float | None = None


@dataclass(frozen=True)
class Verdict:
    """The replica count to run now, why, and the pending state for the next round."""

    replicas: int
    reason: str
    pending: Pending


P99_MIN_REQUESTS = 100  # the fewest requests a p99 is judged on (nearest rank: the 99th of 100 leaves out the worst)
HEAL_BASE_S = 10.0  # the wait before the second replacement in a row
HEAL_MAX_S = 600.0  # ... doubling up to this


@dataclass(frozen=True)
class Heal:
    """Replacements submitted since the deployment last had all its replicas ready, and when the last one went."""

    count: int = 0
    last_at: float = 0.0


def judged_p99(p99_ms: float | None, counted: int, rps: float) -> float | None:
    """The p99 the latency signal reads: None without traffic now or with fewer than :data:`P99_MIN_REQUESTS`
    requests answered since the deployment last changed (see the module docstring)."""
    return p99_ms if p99_ms is not None and rps > 0 and counted >= P99_MIN_REQUESTS else None


def judge_anew(known: tuple[int, int] | None, *, replicas: int, ready: int, unplaced: int, answered: int) -> bool:
    """Whether the deployment changed since ``known`` (its replica and request counts when the p99 last started
    counting): first seen, scaled by anyone, a placed replica warming up, or a request counter gone back (Redis
    restored from an older snapshot). Then its p99 counts from ``answered`` on."""
    return known is None or known[0] != replicas or ready < replicas - unplaced or answered < known[1]


def heal(state: Heal, *, missing: int, all_ready: bool, now: float) -> tuple[bool, Heal, str]:
    """Whether to replace ``missing`` ended replica jobs now, the state after, and why: back-off so a replica that
    fails at every start is not resubmitted every tick."""
    if all_ready:
        state = Heal()
    if missing <= 0:
        return False, state, ""
    if state.count == 0:
        return True, Heal(1, now), f"replace {missing} ended replica(s)"
    wait = min(HEAL_BASE_S * 2 ** (state.count - 1), HEAL_MAX_S)
    if now - state.last_at >= wait:
        return True, Heal(state.count + 1, now), f"replace {missing} ended replica(s), try {state.count + 1}"
    return False, state, f"replacement {state.count + 1} waits {wait - (now - state.last_at):.0f} s (back-off)"


def wanted(load: Load, targets: Targets) -> tuple[int, str]:
    """The replica count the load asks for (before delays), clamped to the bounds, and the signal that set it. While
    replicas warm up, latency, backlog and GPU figures describe a deployment not all there yet (each would ask for
    one more every round, up to the maximum): throughput alone counts."""
    if load.warming:
        load = Load(load.replicas, 0, load.rps, None)
    now = load.replicas
    asks = [(math.ceil(load.rps / targets.rps_per_replica), f"{load.rps:.1f} req/s")]
    if load.p99_ms is not None and load.p99_ms > targets.p99_ms and now > 0:
        asks.append((now + 1, f"p99 {load.p99_ms:.0f} ms over {targets.p99_ms:.0f} ms"))
    if now > 0 and load.queued > now * targets.max_batch:
        asks.append((now + 1, f"{load.queued} requests queued"))
    if load.gpu_util is not None and load.gpu_util > targets.gpu_util and now > 0:
        asks.append((now + 1, f"GPU {load.gpu_util:.0%} busy over {targets.gpu_util:.0%}"))
    if load.queued > 0 and now == 0:
        asks.append((1, "a request waits and no replica runs"))
    count, why = max(asks, key=lambda ask: ask[0])
    if count < targets.min_replicas:
        return targets.min_replicas, f"the minimum is {targets.min_replicas}"
    if count > targets.max_replicas:
        return targets.max_replicas, f"{why}, capped at the maximum {targets.max_replicas}"
    return count, why


def _kept_warming(load: Load, targets: Targets) -> str | None:
    """Why a deployment not all ready keeps its replicas (None: the surplus may go): never shrink a cold start begun
    on a GPU; when only replicas waiting for a GPU are missing, the placed ones, judged on every signal, say whether
    the load still needs one of them (a p99 they cannot meet keeps its replica in the GPU queue)."""
    placed = load.replicas - load.unplaced
    if not load.unplaced or load.queued or (load.ready or 0) < placed:
        return "replicas still warming up"
    placed_want, why = wanted(Load(placed, 0, load.rps, load.p99_ms, load.gpu_util), targets)
    return f"a replica waits for a GPU: {why}" if placed_want > placed else None


def decide(load: Load, targets: Targets, pending: Pending, now: float) -> Verdict:
    """The count to run now: scale out after ``up_delay_s`` (a wake at once), in by one after ``down_delay_s``."""
    want, why = wanted(load, targets)
    have = load.replicas
    if want > have:
        since = pending.up_since if pending.up_since is not None else now
        if have == 0 or now - since >= targets.up_delay_s:
            return Verdict(want, f"scale out to {want}: {why}", Pending())
        return Verdict(have, f"wait to scale out ({why})", Pending(up_since=since))
    if want < have and load.warming and (kept := _kept_warming(load, targets)):
        return Verdict(have, kept, Pending())
    if want < have:
        since = pending.down_since if pending.down_since is not None else now
        if now - since >= targets.down_delay_s:
            return Verdict(have - 1, f"scale in to {have - 1}: {why}", Pending())
        return Verdict(have, f"wait to scale in ({why})", Pending(down_since=since))
    return Verdict(have, f"steady: {why}", Pending())
