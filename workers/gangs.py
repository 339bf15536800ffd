"""The supervisor's gang placer: multi-GPU jobs (``gpus`` > 1) start on K whole GPUs of one host, together or not at
all, and free them together (docs/placement.md, gangs).

A gang job waits in its tier's gang queue, which no worker consumes. Each tick the leading supervisor:

1. releases every hold whose job no longer needs it: the attempt it was placed for ended (succeeded, failed,
   cancelled, or preempted and requeued: a preemption frees all K at once), or a held GPU's worker left the fleet;
2. starts each hold that has settled (held for ``settle_s``, longer than a worker takes to stop consuming its tier
   queues) with every device idle: the job's message moves, in one script, to the device queue of the hold's first
   GPU, whose worker runs it with all K GPUs visible;
3. places waiting gangs by :func:`routing.gang.plan` on the GPUs that take work: K idle GPUs of one host are held at
   once; for the first gang that finds none, the K GPUs expected free first are held while they drain (one such
   reservation at a time), so single jobs stop landing on them and the gang cannot starve.

A worker that took a single job just as its GPU was held gives it back (tasks/gang_attempt.py); the settle time and
that check together mean a gang never shares a device.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from infra.gang_holds import DEFRAG, GangHolds
from infra.queues import move
from routing.gang import Candidate, GangJob, Slot, backfill, plan
from routing.preemption import Running
from routing.runtime_estimate import Sample
from routing.tiers import device_queue, queues_for_gpu, rank
from tasks import expected_runtime, lifecycle
from tasks.errors import JobNotFound
from tasks.records import Event, JobRecord, iso, parse_iso, utc_now
from tasks.runtime import Runtime
from tasks.specs import gpus_of
from tasks.states import JobState

log = logging.getLogger("yoloq.gangs")
SETTLE_S = 2.5  # > workers.cordon.CHECK_INTERVAL_S: a held GPU's worker has stopped taking tier-queue jobs
HANDOVER_S = 60.0  # a gang handed to its first GPU that has not started by then lost its message (a Redis error)


@dataclass(frozen=True)
class Seen:
    """What the supervisor's snapshot read this tick, reused: no second read of the registry."""

    now: float
    queued: list[JobRecord]
    running: list[JobRecord]
    taking_work: list[dict[str, Any]]  # live, ready, uncordoned worker claims
    remaining: dict[str, float]  # worker node → seconds its running job has left
    history: list[Sample] = field(default_factory=list)  # runtime history: waiting jobs' expected runtimes
    holds: list[dict[str, Any]] = field(default_factory=list)  # every gang hold (infra.gang_holds), read once a tick
    victims: dict[str, Running] = field(default_factory=dict)  # job id → the running job as the preemption rules see it


def node_of(host: str, index: int) -> str:
    """A GPU worker's Celery node name (workers/launch.py)."""
    return f"gpu{index}@{host}"


def is_gang(record: JobRecord) -> bool:
    """Whether the supervisor, not a worker's tier queues, places this job."""
    return gpus_of(record.spec) > 1


class GangPlacer:
    """Holds, starts and releases gangs; only the leading supervisor calls :meth:`tick`."""

    def __init__(self, rt: Runtime, say: Callable[[str], None], settle_s: float = SETTLE_S) -> None:
        self.rt, self.say, self.settle_s = rt, say, settle_s
        self.holds = GangHolds(rt.registry.client, rt.settings.redis_url)

    def tick(self, seen: Seen) -> None:
        """Release, start, then place (this order: what a release frees is placeable in the same tick)."""
        jobs = {r.job_id: r for r in (*seen.queued, *seen.running)}
        live = {(str(w["host"]), int(w["gpu"]["index"])) for w in seen.taking_work}
        busy = {str(r.worker) for r in seen.running}
        current = []
        for hold in seen.holds:
            record = jobs.get(str(hold["job_id"])) or self._fresh(str(hold["job_id"]))
            why = _stale(hold, record, live, seen.now)
            if why:
                self.holds.release(str(hold["job_id"]), str(hold["host"]), hold["gpus"])
                self.say(f"released GPUs {_gpus(hold)} of {hold['host']} held for {hold['job_id']}: {why}")
            else:
                current.append(hold)
                if hold.get("kind") == DEFRAG:
                    continue  # workers.defrag starts and lets go of its own holds
                if record is not None and record.state is not JobState.QUEUED and not hold["task_id"]:
                    self.holds.dispatched(record.job_id, record.attempts[-1].task_id, seen.now)  # started, unrecorded
                elif record is not None and not hold["task_id"]:
                    lent = _active_loans(hold, jobs)  # a lent GPU is busy until its loan ends, even before it starts
                    if not self._start(
                        seen.now, hold, record, busy | {node_of(str(hold["host"]), int(i)) for i in lent}
                    ):
                        self._loans(seen, hold, lent, jobs, busy)  # never once started: the gang uses every GPU
        self._place(seen, current, busy)

    def _fresh(self, job_id: str) -> JobRecord | None:
        try:
            return self.rt.registry.get(job_id)
        except JobNotFound:
            return None

    def _start(self, now: float, hold: dict[str, Any], record: JobRecord, busy: set[str]) -> bool:
        """Hand a settled hold's message to its first GPU's worker once every held GPU is idle; True when handed."""
        host, gpus = str(hold["host"]), [int(g) for g in hold["gpus"]]
        if now - float(hold["held_at"]) < self.settle_s or any(node_of(host, g) in busy for g in gpus):
            return False
        task_id = record.attempts[-1].task_id
        if not move(self.rt.registry.client, record.queue, device_queue(host, gpus[0]), task_id, self.rt.registry.url):
            return False  # not waiting there (lost: the resender publishes it again, the next tick moves that one)
        self.holds.dispatched(record.job_id, task_id, now)
        reason = f"GPUs {_gpus(hold)} of {host} idle and held together: started on {node_of(host, gpus[0])}"
        self.rt.registry.append_event(record.job_id, Event(at=iso(utc_now()), type="gang-started", reason=reason,
                                                           by="supervisor"))  # fmt: skip
        self.say(f"{record.job_id}: {reason}")
        return True

    def _loans(
        self, seen: Seen, hold: dict[str, Any], active: dict[str, JobRecord], jobs: dict[str, JobRecord], busy: set[str]
    ) -> None:
        """Backfill a draining reservation: lend each idle held GPU to a waiting one-GPU job expected to end before
        the gang is due (routing.gang.backfill); once it is due, reclaim loans still running at their checkpoint."""
        host, gang, due = str(hold["host"]), str(hold["job_id"]), float(hold["start_at"])
        if seen.now >= due:
            for record in active.values():
                if record.state is JobState.RUNNING and lifecycle.preempt_request_of(record) is None:
                    reason = f"backfill loan reclaimed: gang {gang} is due on its GPUs"
                    lifecycle.request_preempt(self.rt.registry, self.rt.leases, record.job_id, reason, "supervisor",
                                              for_job=gang)  # fmt: skip
                    self.say(f"preempt {record.job_id} for {gang}: {reason}")
            return
        lent = {r.job_id for r in active.values()}
        for index in (int(g) for g in hold["gpus"]):
            if str(index) in active or node_of(host, index) in busy:
                continue
            memory = next((int(w["gpu"]["memory_mib"]) for w in seen.taking_work
                           if (str(w["host"]), int(w["gpu"]["index"])) == (host, index)), 0)  # fmt: skip
            waiting = tuple(
                Candidate(r.job_id, rank(r.tier), parse_iso(r.submitted_at).timestamp(), r.memory_mib,
                          expected_runtime.estimate(r, seen.history).seconds)
                for r in seen.queued if not is_gang(r) and r.job_id not in lent and r.queue in queues_for_gpu(memory)
            )  # fmt: skip
            chosen = backfill(seen.now, due, memory, waiting)
            if chosen is None:
                return
            record = jobs[chosen[0]]
            task_id = record.attempts[-1].task_id
            # the message first: a loan recorded for a message that could not move would hold the GPU for nothing;
            # a move whose hold vanished meanwhile just runs on a GPU nobody holds any more
            if move(
                self.rt.registry.client, record.queue, device_queue(host, index), task_id, self.rt.registry.url
            ) and self.holds.lend(gang, index, record.job_id, task_id):
                lent.add(record.job_id)
                reason = f"{chosen[1]} of gang {gang}: GPU {index} of {host}"
                self.rt.registry.append_event(record.job_id, Event(at=iso(utc_now()), type="backfilled",
                                                                   reason=reason, by="supervisor"))  # fmt: skip
                self.say(f"{record.job_id}: {reason}")

    def _place(self, seen: Seen, current: list[dict[str, Any]], busy: set[str]) -> None:
        """Hold GPUs for waiting gangs (routing.gang.plan), each hold all-or-nothing in Redis."""
        held_jobs = {str(h["job_id"]) for h in current}
        queued = {r.job_id for r in seen.queued}
        waiting = tuple(
            GangJob(r.job_id, rank(r.tier), parse_iso(r.submitted_at).timestamp(), gpus_of(r.spec), r.memory_mib)
            for r in seen.queued if is_gang(r) and r.job_id not in held_jobs and _made_room_for(r) not in queued
        )  # fmt: skip
        if not waiting:
            return
        held = {(str(h["host"]), int(g)) for h in current for g in h["gpus"]}
        slots = tuple(
            Slot(str(index), host, int(w["gpu"]["memory_mib"]), _free_at(seen, node_of(host, index)))
            for w in seen.taking_work
            if (host := str(w["host"]), index := int(w["gpu"]["index"])) not in held
        )  # fmt: skip
        reserving = any(not h["task_id"] and any(node_of(str(h["host"]), int(g)) in busy for g in h["gpus"])
                        for h in current)  # fmt: skip
        for choice in plan(seen.now, waiting, slots, reserving):
            gpus = tuple(int(g) for g in choice.gpu_ids)
            fields = {"held_at": seen.now, "start_at": choice.start_at, "reason": choice.reason}
            if self.holds.hold(choice.job_id, choice.host, gpus, fields):
                continue  # another placement holds one of them (a supervisor failover): next tick, from fresh state
            self.rt.registry.append_event(choice.job_id, Event(at=iso(utc_now()), type="gang-held",
                                                               reason=choice.reason, by="supervisor"))  # fmt: skip
            self.say(f"{choice.job_id}: {choice.reason}")


def _made_room_for(record: JobRecord) -> str:
    """The job a preempted gang yielded its GPUs to: the gang is not held again before that job has started, or it
    would take back the GPUs it was preempted from ('' when it was not preempted for a job)."""
    last = record.preemptions[-1] if record.preemptions else None
    return str(getattr(last, "for_job", "") or "") if last is not None else ""


def _active_loans(hold: dict[str, Any], jobs: dict[str, JobRecord]) -> dict[str, JobRecord]:
    """GPU index → the lent job that still waits for it or runs on it (it holds the GPU until it ends)."""
    out = {}
    for index, entry in (hold.get("loans") or {}).items():
        record = jobs.get(str(entry.get("job_id")))
        if record is None or not record.attempts or record.attempts[-1].task_id != entry.get("task_id"):
            continue
        waiting = record.state is JobState.QUEUED
        here = record.state in (JobState.RUNNING, JobState.PREEMPTING) and record.worker == node_of(
            str(hold["host"]), int(index)
        )  # running elsewhere (its message was taken before the move): not this GPU's loan
        if waiting or here:
            out[str(index)] = record
    return out


def _free_at(seen: Seen, node: str) -> float:
    left = seen.remaining.get(node)
    if left is None:
        return seen.now
    return seen.now + (left if math.isfinite(left) else 10 * 365 * 86400.0)  # a replica: only preemption frees it


def _gpus(hold: dict[str, Any]) -> str:
    return ",".join(str(g) for g in hold["gpus"])


def _stale(hold: dict[str, Any], record: JobRecord | None, live: set[tuple[str, int]], now: float = 0.0) -> str:
    """Why a hold must go ('' while its job still needs it)."""
    if record is None:
        return "the job is gone"
    current = record.attempts[-1].task_id if record.attempts else ""
    if record.state in (JobState.RUNNING, JobState.PREEMPTING):  # '': a leader died between the move and recording it
        return "" if hold["task_id"] in ("", current) else "another attempt of it runs"
    if record.state is not JobState.QUEUED:
        return f"the job is {record.state.value}"
    return _stale_queued(hold, current, live, now)


def _stale_queued(hold: dict[str, Any], current: str, live: set[tuple[str, int]], now: float) -> str:
    """Why a queued gang's hold must go ('' while it waits for its GPUs or for its handed-over attempt to start)."""
    if hold["task_id"] and hold["task_id"] != current:
        return "its attempt ended (preempted or requeued): all its GPUs are free together"
    if hold["task_id"] and now - float(hold.get("dispatched_at") or now) > HANDOVER_S:
        return f"handed to its first GPU {HANDOVER_S:.0f} s ago and never started (the resender publishes it again)"
    if any((str(hold["host"]), int(g)) not in live for g in hold["gpus"]):
        return "a held GPU no longer takes work (its worker left, or it was cordoned)"
    return ""
