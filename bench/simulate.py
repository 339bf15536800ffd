"""A day of mixed traffic on a 16-GPU fleet, simulated with the real policy code (no Celery, a 30 s clock).

Schedulers on the same seeded arrivals:
- ``fifo``: one queue in submit order, no preemption (plain Celery with one queue);
- ``priority``: strict tier order, and a waiting job preempts the lowest-tier running job that fits, always
  (no budget, no reserved share: what a team gets from priorities alone);
- ``yoloq``: strict tier order and ``routing.preemption.decide`` (budget 1/24 h, reserved share, SLA urgency,
  least-work-lost order);
- ``yoloq+backfill``, ``yoloq+sharing``, ``yoloq+backfill+sharing``: yoloq placing through ``routing.backfill`` (a
  reservation for the blocked head) and/or ``routing.sharing`` (the 80 GB cards shared, defragmentation), in
  ``bench.sim_placement`` (its docstring states the compute and runtime-error models).
The last four also run on the same day plus multi-GPU jobs (``sim_day.gang_arrivals``). docs/placement.md reads them.
A preempted job loses the work since its last checkpoint (every 10 min, or a mid-epoch one on request: yoloq and
priority both use the cooperative path, so ~0) plus a 60 s restart, and goes back to waiting.

Run: ``.venv/bin/python -m bench.simulate``; writes bench/results/simulation.{json,md} and docs/img/simulation.png.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.sim_day import DAY_S, RANK, RESTART_S, STEP_S, Job, arrivals, fleet, gang_arrivals
from bench.sim_placement import PlacementSim
from bench.sim_report import GANG_COLUMNS, NEW_COLUMNS, OLD_COLUMNS, plot, summarise, table
from routing.preemption import Gpu, Policy, Running, Snapshot, Waiting, decide

ROOT = Path(__file__).resolve().parents[1]


class Sim:
    """The fleet, the waiting and running jobs, and one scheduler's rules."""

    def __init__(self, kind: str, jobs: list[Job]) -> None:
        self.kind, self.pending, self.now = kind, list(jobs), 0.0
        self.memory = fleet()
        self.on: dict[str, Job | None] = dict.fromkeys(self.memory)
        self.waiting: list[Job] = []
        self.done: list[Job] = []
        self.busy_s = 0.0

    def running(self) -> list[Job]:
        """The jobs on a GPU now."""
        return [j for j in self.on.values() if j is not None]

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


KINDS = ("fifo", "priority", "yoloq", "yoloq+backfill", "yoloq+sharing", "yoloq+backfill+sharing")


def run(kind: str, seed: int, gangs: bool = False) -> dict[str, Any]:
    """Simulate one day of ``kind`` on the seeded arrivals (with the multi-GPU jobs when ``gangs``), summarised."""
    jobs = gang_arrivals(seed) if gangs else arrivals(seed)
    if kind in ("fifo", "priority", "yoloq") and not gangs:
        sim: Sim | PlacementSim = Sim(kind, jobs)
    else:
        sim = PlacementSim(jobs, backfill="backfill" in kind, sharing="sharing" in kind, seed=seed)
    while sim.now < DAY_S:
        sim.step()
    counts = sim.counts if isinstance(sim, PlacementSim) else {}
    return summarise(kind, sim.done + sim.running(), sim.waiting, sim.busy_s, counts)


def main() -> None:
    """Run every scheduler on the same arrivals; write JSON, Markdown and the plot."""
    rows = [run(kind, seed=11) for kind in KINDS]
    gang_rows = [run(kind, seed=11, gangs=True) for kind in KINDS[2:]]
    for row in gang_rows:
        row["scheduler"] += " (gangs)"
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "simulation.json").write_text(json.dumps({"day": rows, "day_with_gangs": gang_rows}, indent=2))
    lines = [*table(rows, OLD_COLUMNS), "", *table(rows, NEW_COLUMNS), "", *table(gang_rows, GANG_COLUMNS)]
    (out / "simulation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(rows, ROOT / "docs" / "img" / "simulation.png")


if __name__ == "__main__":
    main()
