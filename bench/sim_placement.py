"""The placement schedulers of ``bench.simulate``: yoloq with backfill reservations and/or GPU sharing (issue 18).

``PlacementSim`` places through ``routing.backfill.plan`` (greedy best fit when backfill is off, which on whole
GPUs is exactly the old ``yoloq`` row's placement), preempts through ``routing.preemption.decide`` like ``yoloq``,
and with sharing defragments through ``routing.sharing.defragment``. The simulation's own assumptions, stated:

* Sharing is opted in by the 8 × 80 GB cards (``yoloq worker --share``); the 40 GB cards stay whole. A job's need is
  its placement need (CUDA context included); co-tenants keep ``routing.sharing``'s margin (5 %, at least 1 GiB).
* Compute on a shared card (not measured: a model): a job alone keeps ``demand = 0.25 + 0.75 × need / 80 GiB`` of
  the card busy (8 GiB: 0.33 … 70 GiB: 0.91); co-tenants each run at ``min(1, 1 / Σ demand) × 0.85`` of their solo
  speed (15 % lost to time-slicing and cache interference whenever a card holds two jobs or more).
* Expected runtimes are the true work × a seeded log-normal error (``expected_runtime``, sigma 0.3); a running job's
  expected remaining time is never under 10 min (a job past its estimate is expected to end soon, not now).
* Loans, reclaims and defragmentation moves cost the moved job a 60 s restart (cooperative checkpoint: ~no work
  lost), as preemptions do. A defragmentation runs for the blocked head only when its moves cost less GPU time than
  the head's expected wait for its reservation. A packed card is cleared for a blocked head by requeueing tenants
  of a strictly lower tier never preempted yet (``decide`` gives one victim per waiting job, which cannot free a
  card of several jobs); the reserved low/batch share is not applied on that path (a simulation gap). For a
  critical head only, a tenant with no budget left moves into the place of an evictable tenant of another card,
  which is requeued instead (``routing.sharing`` displacement: nobody is preempted twice in a day).
* With sharing, a job takes an idle card of its own while the idle cards can seat every waiting job
  (``routing.backfill.room_for_all``), and once nothing waiting fits an idle whole (unshared) card, a co-tenant of a
  shared card moves onto it (``routing.sharing.spread_moves``; never onto a reservation's cards or, while a gang
  waits, onto cards it could gather). A gang member never moves alone (its tenants are ``frozen``).
"""

from __future__ import annotations

from dataclasses import replace

from bench.sim_day import RESTART_S, STEP_S, Job, expected_runtime, fleet
from routing.backfill import BackfillPolicy, Plan, plan
from routing.backfill import Job as Queued
from routing.defrag import choose
from routing.preemption import Gpu, Policy, Running, Snapshot, Waiting, decide
from routing.sharing import (
    Defrag,
    Device,
    SharePolicy,
    Tenant,
    room_mib,
    spread_moves,
)

SHARE = SharePolicy()
POLICY = Policy()
SHARE_MIN_MIB = 81_920
INTERFERENCE = 0.85
REMAIN_FLOOR_S = 600.0


def demand(need_mib: int) -> float:
    """The share of a card's compute a job keeps busy alone: larger models and batches fill more of it."""
    return min(1.0, 0.25 + 0.75 * need_mib / 81_920)


def speed(tenants: list[Job]) -> float:
    """Each co-tenant's speed relative to running alone (1.0 for a lone job)."""
    if len(tenants) <= 1:
        return 1.0
    return min(1.0, 1.0 / sum(demand(j.need_mib) for j in tenants)) * INTERFERENCE


class PlacementSim:
    """The fleet (several jobs per card where shared), the queue, and yoloq's placement with the chosen options."""

    def __init__(self, jobs: list[Job], *, backfill: bool, sharing: bool, seed: int) -> None:
        self.memory = fleet()
        self.host = {g: f"h{i // 4}" for i, g in enumerate(self.memory)}
        self.shared = {g: sharing and m >= SHARE_MIN_MIB for g, m in self.memory.items()}
        self.on: dict[str, list[Job]] = {g: [] for g in self.memory}
        self.policy = BackfillPolicy(reserve=backfill, loans=backfill, share=SHARE, spread=sharing)
        self.sharing, self.pending, self.now = sharing, list(jobs), 0.0
        self.waiting: list[Job] = []
        self.done: list[Job] = []
        self.busy_s = 0.0
        self.counts = {"loans": 0, "reclaims": 0, "defrag_moves": 0, "spread_moves": 0, "partial_starts": 0}
        for job in jobs:
            job.expected_s = expected_runtime(job, seed)

    def running(self) -> list[Job]:
        """Every running job once (a gang sits on several cards)."""
        return list({j.job_id: j for jobs in self.on.values() for j in jobs}.values())

    def _tenant(self, job: Job) -> Tenant:
        left = max(job.expected_s - job.done_s, REMAIN_FLOOR_S)
        return Tenant(
            job.job_id,
            job.tier,
            job.need_mib,
            self.now + left,
            RESTART_S,
            frozen=job.width > 1,
            loan_until=job.loan_until,
        )  # a gang member never moves alone

    def devices(self) -> tuple[Device, ...]:
        """The fleet as routing sees it, with each card's tenants and their expected ends."""
        return tuple(Device(g, m, self.host[g], self.shared[g], tuple(self._tenant(j) for j in self.on[g]))
                     for g, m in self.memory.items())  # fmt: skip

    def _start(self, job: Job, gpus: tuple[str, ...], loan_until: float | None) -> None:
        if len(gpus) != job.width or len({self.host[g] for g in gpus}) != 1:
            self.counts["partial_starts"] += 1  # never expected: the gang rule is all K on one host
        for gpu in gpus:
            self.on[gpu].append(job)
        job.gpus, job.run_since, job.loan_until = gpus, self.now, loan_until
        job.started = self.now if job.started is None else job.started
        self.waiting.remove(job)
        self.counts["loans"] += loan_until is not None

    def stop(self, job: Job) -> None:
        """Checkpoint and requeue (preemption or a loan reclaimed): off every card it holds at once."""
        for gpu in job.gpus:
            self.on[gpu].remove(job)
        job.gpus, job.loan_until = (), None
        job.done_s = max(0.0, job.done_s - RESTART_S)
        job.preempted_at.append(self.now)
        self.waiting.append(job)

    def place(self) -> Plan:
        """Start what ``routing.backfill.plan`` starts and reclaim the loans it ends."""
        queued = tuple(Queued(j.job_id, j.tier, j.need_mib, j.submitted, max(j.expected_s - j.done_s, REMAIN_FLOOR_S),
                              j.width, True, RESTART_S) for j in self.waiting)  # fmt: skip
        decided = plan(self.now, self.devices(), queued, self.policy)
        by_id = {j.job_id: j for j in self.waiting}
        for start in decided.starts:
            self._start(by_id[start.job_id], start.gpu_ids, start.loan_until)
        running = {j.job_id: j for j in self.running()}
        for reclaim in decided.reclaims:
            if reclaim.job_id in running and running[reclaim.job_id].gpus:
                self.stop(running[reclaim.job_id])
                self.counts["reclaims"] += 1
        return decided

    def preemptions(self) -> None:
        """``routing.preemption.decide`` on the fleet cut into one slice per tenant (the room it would leave)."""
        gpus, running, owner = [], [], {}
        for device in self.devices():
            if not device.tenants:
                gpus.append(Gpu(device.gpu_id, device.memory_mib))
            for tenant, job in zip(device.tenants, self.on[device.gpu_id], strict=True):
                sid = f"{device.gpu_id}|{job.job_id}"
                rest = replace(device, tenants=tuple(t for t in device.tenants if t is not tenant))
                gpus.append(Gpu(sid, room_mib(rest, SHARE), sid))
                running.append(
                    Running(
                        sid,
                        job.tier,
                        sid,
                        since_checkpoint_s=(self.now - job.run_since) % 600,
                        remaining_s=job.work_s - job.done_s,
                        preempted_at=tuple(job.preempted_at),
                    )
                )
                owner[sid] = job  # fmt: skip
        share = 0.10 * len(self.memory) / len(gpus)  # the reserve stays 10 % of the 16 cards, not of the slices
        waiting = tuple(Waiting(j.job_id, j.tier, j.need_mib, j.submitted) for j in self.waiting if j.width == 1)
        snap = Snapshot(self.now, tuple(gpus), waiting, tuple(running), Policy(reserved_share=share))
        for preemption in decide(snap).preemptions:
            if (victim := owner[preemption.victim]).gpus:
                self.stop(victim)

    def defragment(self, decided: Plan) -> bool:
        """Move small jobs so the blocked head fits one card, when that costs less than waiting for it
        (``routing.defrag.choose``, the supervisor's rule)."""
        if not self.sharing:
            return False
        running = {j.job_id: j for j in self.running()}
        waiting = tuple(Waiting(j.job_id, j.tier, j.need_mib, j.submitted) for j in self.waiting if j.width == 1)
        res = decided.reservation
        answer = choose(
            waiting, self.devices(), self.now, policy=POLICY, share=SHARE,
            spent=frozenset(j.job_id for j in running.values() if j.preempted_at),  # the day is one day
            reservation=(res.job_id, res.start_at) if res is not None else None,
        )  # fmt: skip
        if not isinstance(answer, Defrag):
            return False
        for move in answer.moves:
            job = running[move.job_id]
            if not move.to_gpu:
                self.stop(job)
                continue
            self.relocate(job, move.from_gpu, move.to_gpu)
        return True

    def relocate(self, job: Job, from_gpu: str, to_gpu: str, count: str = "defrag_moves") -> None:
        """Checkpoint ``job`` and resume it on another card at once (a move: no wait, no preemption counted)."""
        self.on[from_gpu].remove(job)
        self.on[to_gpu].append(job)
        job.gpus, job.run_since, job.moves = (to_gpu,), self.now, job.moves + 1
        job.done_s = max(0.0, job.done_s - RESTART_S)
        self.counts[count] += 1

    def spread(self, decided: Plan) -> None:
        """Give idle cards a tenant of a shared card (``routing.sharing.spread_moves``) once nothing waiting fits."""
        running = {j.job_id: j for j in self.running()}
        held = set(decided.reservation.gpu_ids if decided.reservation else ())
        for gang in (j for j in self.waiting if j.width > 1):  # idle cards a waiting gang may gather stay idle
            held |= {g for g, jobs in self.on.items() if not jobs and self.memory[g] >= gang.need_mib}
        for move in spread_moves(self.devices(), self.now, SHARE, keep_idle=frozenset(held)):
            self.relocate(running[move.job_id], move.from_gpu, move.to_gpu, "spread_moves")

    def _queued_view(self) -> list[Queued]:
        return [Queued(j.job_id, j.tier, j.need_mib, j.submitted, j.expected_s, j.width) for j in self.waiting]

    def progress(self) -> None:
        """One clock step of work: each job at the speed its slowest card allows; finished jobs leave."""
        rates = {g: speed(jobs) for g, jobs in self.on.items() if jobs}
        self.busy_s += STEP_S * len(rates)
        for job in self.running():
            rate = min(rates[g] for g in job.gpus)
            job.done_s += STEP_S * rate
            if job.done_s >= job.work_s:
                for gpu in job.gpus:
                    self.on[gpu].remove(job)
                job.finished, job.gpus, job.loan_until = self.now, (), None
                self.done.append(job)

    def step(self) -> None:
        """Arrivals, work, placement, preemption, placement again, defragmentation; then the clock moves."""
        while self.pending and self.pending[0].submitted <= self.now:
            self.waiting.append(self.pending.pop(0))
        self.progress()
        self.place()
        self.preemptions()
        decided = self.place()
        if self.defragment(decided):
            decided = self.place()
        if self.sharing:
            self.spread(decided)
        self.now += STEP_S
