"""The simulated day's model, shared by ``bench.simulate`` and ``bench.sim_placement``: jobs, arrivals, fleet."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from routing.tiers import Tier

STEP_S, DAY_S, RESTART_S, NOISE_SIGMA = 30.0, 24 * 3600.0, 60.0, 0.3
RATES_PER_H = {Tier.CRITICAL: 0.5, Tier.HIGH: 1.5, Tier.MEDIUM: 2.0, Tier.LOW: 3.0, Tier.BATCH: 2.0}
HOURS = {Tier.CRITICAL: (0.3, 1.0), Tier.HIGH: (1, 3), Tier.MEDIUM: (1, 4), Tier.LOW: (2, 8), Tier.BATCH: (4, 12)}
RANK = {t: i for i, t in enumerate(Tier)}


@dataclass
class Job:
    """One simulated job: how much work it needs and what happened to it."""

    job_id: str
    tier: Tier
    need_mib: int
    submitted: float
    work_s: float
    done_s: float = 0.0
    started: float | None = None
    finished: float | None = None
    gpu: str | None = None
    run_since: float = 0.0
    preempted_at: list[float] = field(default_factory=list)
    expected_s: float = 0.0  # what the scheduler believes the work takes (true work × noise, see expected_runtime)
    gpus: tuple[str, ...] = ()  # where it runs in the placement simulation (several for a gang)
    width: int = 1  # GPUs it needs (a gang when > 1)
    loan_until: float | None = None
    moves: int = 0


def expected_runtime(job: Job, seed: int) -> float:
    """The runtime a scheduler would expect: true work × a log-normal error (sigma 0.3: ±35 % at one sigma)."""
    return job.work_s * math.exp(random.Random(f"{seed}:{job.job_id}").gauss(0.0, NOISE_SIGMA))


def arrivals(seed: int) -> list[Job]:
    """Poisson arrivals per tier over one day, with durations and memory needs drawn per tier."""
    rng, jobs = random.Random(seed), list[Job]()
    for tier, rate in RATES_PER_H.items():
        t = 0.0
        while (t := t + rng.expovariate(rate / 3600)) < DAY_S:
            hours = rng.uniform(*HOURS[tier])
            jobs.append(Job(f"{tier.value}-{len(jobs)}", tier, rng.choice((8, 16, 24, 40, 70)) * 1024, t, hours * 3600))
    return sorted(jobs, key=lambda j: j.submitted)


def fleet() -> dict[str, int]:
    """16 GPUs: 8 × 80 GB, 8 × 40 GB (ids sort in fleet order)."""
    return {f"g{i:02d}": (81_920 if i < 8 else 40_960) for i in range(16)}


GANG_RATE_PER_H, GANG_TIERS, GANG_WIDTHS, GANG_HOURS = 0.5, (Tier.HIGH, Tier.MEDIUM), (2, 4), (1.0, 4.0)


def gang_arrivals(seed: int) -> list[Job]:
    """The same day plus multi-GPU jobs (0.5/h, high or medium, 2 or 4 GPUs of 24 or 40 GiB, 1-4 h), own stream.

    The gangs come from a random stream of their own, so the single-GPU arrivals are exactly :func:`arrivals`'.
    """
    rng, gangs, t = random.Random(f"gangs:{seed}"), list[Job](), 0.0
    while (t := t + rng.expovariate(GANG_RATE_PER_H / 3600)) < DAY_S:
        tier, width = rng.choice(GANG_TIERS), rng.choice(GANG_WIDTHS)
        need, hours = rng.choice((24, 40)) * 1024, rng.uniform(*GANG_HOURS)
        gangs.append(Job(f"gang-{len(gangs)}", tier, need, t, hours * 3600, width=width))
    return sorted(arrivals(seed) + gangs, key=lambda j: j.submitted)
