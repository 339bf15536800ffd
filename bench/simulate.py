"""A day of mixed traffic on a 16-GPU fleet, simulated with the real policy code (no Celery, a 30 s clock).

Three schedulers on the same seeded arrivals:
- ``fifo``: one queue in submit order, no preemption (plain Celery with one queue);
- ``priority``: strict tier order, and a waiting job preempts the lowest-tier running job that fits, always
  (no budget, no reserved share: what a team gets from priorities alone);
- ``yoloq``: strict tier order and ``routing.preemption.decide`` (budget 1/24 h, reserved share, SLA urgency,
  least-work-lost order).
A preempted job loses the work since its last checkpoint (every 10 min, or a mid-epoch one on request: yoloq and
priority both use the cooperative path, so ~0) plus a 60 s restart, and goes back to waiting.

Run: ``.venv/bin/python -m bench.simulate``; writes bench/results/simulation.{json,md} and docs/img/simulation.png.
"""

from __future__ import annotations

import json
import random
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from routing.preemption import Gpu, Policy, Running, Snapshot, Waiting, decide
from routing.sla import percentile
from routing.tiers import Tier

ROOT = Path(__file__).resolve().parents[1]
STEP_S, DAY_S, RESTART_S = 30.0, 24 * 3600.0, 60.0
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


def arrivals(seed: int) -> list[Job]:
    """Poisson arrivals per tier over one day, with durations and memory needs drawn per tier."""
    rng, jobs = random.Random(seed), []
    for tier, rate in RATES_PER_H.items():
        t = 0.0
        while (t := t + rng.expovariate(rate / 3600)) < DAY_S:
            hours = rng.uniform(*HOURS[tier])
            jobs.append(Job(f"{tier.value}-{len(jobs)}", tier, rng.choice((8, 16, 24, 40, 70)) * 1024, t, hours * 3600))
    return sorted(jobs, key=lambda j: j.submitted)


def _fleet() -> dict[str, int]:
    return {f"g{i}": (81_920 if i < 8 else 40_960) for i in range(16)}


class Sim:
    """The fleet, the waiting and running jobs, and one scheduler's rules."""

    def __init__(self, kind: str, jobs: list[Job]) -> None:
        self.kind, self.pending, self.now = kind, list(jobs), 0.0
        self.memory = _fleet()
        self.on: dict[str, Job | None] = dict.fromkeys(self.memory)
        self.waiting: list[Job] = []
        self.done: list[Job] = []
        self.busy_s = 0.0

    def order(self) -> list[Job]:
        if self.kind == "fifo":
            return sorted(self.waiting, key=lambda j: j.submitted)
        return sorted(self.waiting, key=lambda j: (RANK[j.tier], j.submitted))

    def place(self) -> None:
        for job in self.order():
            free = [g for g, j in self.on.items() if j is None and self.memory[g] >= job.need_mib]
            if not free:
                if self.kind == "fifo":
                    return  # head-of-line: one queue, nothing overtakes
                continue
            gpu = min(free, key=lambda g: self.memory[g])
            self.on[gpu], job.gpu, job.run_since = job, gpu, self.now
            job.started = self.now if job.started is None else job.started
            self.waiting.remove(job)

    def preempt(self, victim: Job) -> None:
        if victim.gpu is None:
            return
        self.on[victim.gpu] = None
        victim.gpu, victim.done_s = None, max(0.0, victim.done_s - RESTART_S)  # restart cost, ~no work lost
        victim.preempted_at.append(self.now)
        self.waiting.append(victim)

    def preemptions(self) -> None:
        running = [j for j in self.on.values() if j is not None]
        if self.kind == "priority":
            for job in self.order():
                fits = [
                    r for r in running if RANK[r.tier] > RANK[job.tier] and self.memory[r.gpu or ""] >= job.need_mib
                ]
                if fits:
                    victim = max(fits, key=lambda r: (RANK[r.tier], r.run_since))
                    running.remove(victim)
                    self.preempt(victim)
        elif self.kind == "yoloq":
            snap = Snapshot(
                self.now,
                tuple(Gpu(g, self.memory[g], j.job_id if j else None) for g, j in self.on.items()),
                tuple(Waiting(j.job_id, j.tier, j.need_mib, j.submitted) for j in self.waiting),
                tuple(Running(j.job_id, j.tier, j.gpu or "", since_checkpoint_s=(self.now - j.run_since) % 600,
                              remaining_s=j.work_s - j.done_s, preempted_at=tuple(j.preempted_at)) for j in running),
                Policy(),
            )  # fmt: skip
            by_id = {j.job_id: j for j in running}
            for p in decide(snap).preemptions:
                self.preempt(by_id[p.victim])

    def step(self) -> None:
        while self.pending and self.pending[0].submitted <= self.now:
            self.waiting.append(self.pending.pop(0))
        for gpu, job in self.on.items():
            if job is None:
                continue
            job.done_s += STEP_S
            self.busy_s += STEP_S
            if job.done_s >= job.work_s:
                job.finished, self.on[gpu], job.gpu = self.now, None, None
                self.done.append(job)
        self.place()
        self.preemptions()
        self.place()
        self.now += STEP_S


def run(kind: str, seed: int) -> dict[str, Any]:
    """Simulate one day (plus a drain of at most one more) and summarise it."""
    jobs = arrivals(seed)
    sim = Sim(kind, [Job(j.job_id, j.tier, j.need_mib, j.submitted, j.work_s) for j in jobs])
    while sim.now < DAY_S:
        sim.step()
    waits = {t: [j.started - j.submitted for j in sim.done + list(sim.on.values()) if j and j.tier is t and j.started
                 is not None] for t in Tier}  # fmt: skip
    started = [j for j in sim.done + [j for j in sim.on.values() if j] + sim.waiting]
    preempts = [len(j.preempted_at) for j in started]
    return {
        "scheduler": kind,
        "critical_p95_wait_min": round((percentile(waits[Tier.CRITICAL], 0.95) or 0) / 60, 1),
        "critical_started": len(waits[Tier.CRITICAL]),
        "high_p95_wait_min": round((percentile(waits[Tier.HIGH], 0.95) or 0) / 60, 1),
        "preemptions_per_job": round(statistics.mean(preempts), 3) if preempts else 0.0,
        "max_preemptions_one_job": max(preempts, default=0),
        "gpu_utilisation": round(sim.busy_s / (DAY_S * len(sim.memory)), 3),
        "low_batch_finished": sum(1 for j in sim.done if j.tier in (Tier.LOW, Tier.BATCH)),
        "finished": len(sim.done),
        "waits_min": {t.value: [round(w / 60, 1) for w in waits[t]] for t in Tier},
    }


def main() -> None:
    """Run the three schedulers on the same arrivals; write JSON, Markdown and the plot."""
    rows = [run(kind, seed=11) for kind in ("fifo", "priority", "yoloq")]
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "simulation.json").write_text(json.dumps(rows, indent=2))
    cols = ["scheduler", "critical_p95_wait_min", "high_p95_wait_min", "preemptions_per_job", "max_preemptions_one_job",
            "gpu_utilisation", "low_batch_finished", "finished"]  # fmt: skip
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    (out / "simulation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    _plot(rows, ROOT / "docs" / "img" / "simulation.png")


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for row in rows:
        for ax, tier in zip(axes, ("critical", "low"), strict=True):
            waits = sorted(row["waits_min"][tier])
            ax.plot(waits, [i / max(len(waits), 1) for i in range(len(waits))], label=row["scheduler"])
            ax.set_title(f"{tier}: time to start (CDF)")
            ax.set_xlabel("minutes")
            ax.set_xscale("symlog")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    main()
