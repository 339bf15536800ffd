"""The supervisor's defragmenter: a job that fits no GPU while the memory it needs lies scattered over shared GPUs
(``yoloq worker --share``) gets one GPU cleared by moving the cheapest small jobs (docs/placement.md,
defragmentation; the rule is ``routing.defrag.choose`` over ``routing.sharing.defragment``).

Each tick the leading supervisor, one defragmentation at a time:

1. **Plans**, when none is under way: each GPU that takes work, with its running jobs as tenants (placement needs,
   expected ends, restart costs), goes to :func:`routing.defrag.choose` with the waiting one-GPU jobs nobody is
   already making room for. A plan **holds** its target GPU for the blocked job (a one-device hold of
   :mod:`infra.gang_holds`: the GPU's worker stops taking tier-queue jobs, so the room being made is not taken by
   the next small job), then asks each moved job to checkpoint and resume on its new GPU's device queue (a requeued
   one goes back to its tier queue: that is a preemption, counted as one). A move does not spend the moved job's
   24 h budget: it resumes at once.
2. **Starts** it once the blocked job fits beside the tenants that stay (the GPU's share ledger, the admission's own
   truth): its message moves to the target's device queue, as a gang's does.
   A job moved once is not moved again within an hour (``MOVED_WITHIN_S``), so two blocked jobs cannot make a
   third ping-pong between GPUs.
3. **Lets go** of the hold as soon as the job runs (the GPU is shared again), when the hold went stale
   (``workers.gangs`` releases those: job gone, handed over and never started, GPU gone), or when the moves have not
   made the room within ``DRAIN_S`` (a tenant that ignored its request is escalated by the supervisor meanwhile).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from infra.gang_holds import DEFRAG, GangHolds
from infra.queues import move
from infra.share_ledger import ShareLedger
from routing.defrag import choose
from routing.preemption import Gpu, Policy, Running, Waiting
from routing.sharing import Defrag, Device, SharePolicy, Tenant, room_for
from routing.tiers import classes_fitting, device_queue, size_class_for
from tasks import lifecycle
from tasks.errors import InvalidTransition
from tasks.records import Event, JobRecord, iso, parse_iso, utc_now
from tasks.runtime import Runtime
from tasks.share_attempt import joins, prune
from tasks.states import JobState
from workers.gangs import Seen, is_gang, node_of

MOVED_WITHIN_S = 3600.0  # a job moved by a defragmentation is not moved again for an hour: no job ping-pongs
PRUNE_S = 5.0  # how often the shared GPUs' ledgers are swept of tenants whose attempt is over


class Defragmenter:
    """Plans, starts and lets go of defragmentations; only the leading supervisor calls :meth:`tick`.

    ``drain_s``: how long a hold waits for its moves to make room; more than the escalation grace plus an attempt's
    lease, so that a tenant that ignored its request has been terminated and requeued by then."""

    def __init__(self, rt: Runtime, say: Callable[[str], None], policy: Policy, drain_s: float) -> None:
        self.rt, self.say, self.policy, self.drain_s = rt, say, policy, drain_s
        self.holds = GangHolds(rt.registry.client, rt.settings.redis_url)
        self.ledger = ShareLedger(rt.registry.client, rt.settings.redis_url)
        self.pruned_at = 0.0

    def tick(self, seen: Seen, making_room: set[str]) -> None:
        """Advance the defragmentation under way, or plan one. ``making_room``: jobs a preemption is already freeing
        a GPU for."""
        shared = [w for w in seen.taking_work if w.get("shared")]
        if shared and seen.now >= self.pruned_at + PRUNE_S:  # a killed tenant's entry would shrink its GPU for good
            self.pruned_at = seen.now
            for w in shared:
                prune(self.rt, self.ledger, str(w["host"]), int(w["gpu"]["index"]))
        mine = [h for h in seen.holds if h.get("kind") == DEFRAG]
        for hold in mine:
            self._advance(seen, hold)
        if shared and not mine:
            self._plan(seen, making_room)

    def _advance(self, seen: Seen, hold: dict[str, Any]) -> None:
        """Ask the moves whose turn has come; start the held job once it fits beside the tenants that stay; let the
        GPU go once it runs, or when the moves are done or too slow and it still does not fit."""
        job_id, host, index = str(hold["job_id"]), str(hold["host"]), int(hold["gpus"][0])
        record = next((r for r in (*seen.queued, *seen.running) if r.job_id == job_id), None)
        if record is None or hold["task_id"]:
            return  # gone (workers.gangs releases the stale hold), or handed over (it lets go if it never starts)
        if record.state is not JobState.QUEUED:
            self._release(hold, f"{job_id} runs on {record.worker}: GPU {index} of {host} is shared again")
            return
        if self._fits(seen, host, index, record):
            task_id = record.attempts[-1].task_id
            if move(self.rt.registry.client, record.queue, device_queue(host, index), task_id, self.rt.registry.url):
                self.holds.dispatched(job_id, task_id, seen.now)
                self._event(job_id, "defrag-started", f"room made on GPU {index} of {host}: handed to "
                                                      f"{node_of(host, index)}")  # fmt: skip
            return
        if not self._ask(seen, hold):
            self._release(hold, f"its moves are done and {job_id} still does not fit (a job joined the GPU before "
                                "the hold): planning again")  # fmt: skip
        elif seen.now - float(hold["held_at"]) > self.drain_s:
            self._release(hold, f"the moves made no room for {job_id} within {self.drain_s:.0f} s")

    def _fits(self, seen: Seen, host: str, index: int, record: JobRecord) -> bool:
        """Whether the held job fits beside the GPU's live tenants (its ledger, with dead entries pruned)."""
        memory = next((int(w["gpu"]["memory_mib"]) for w in seen.taking_work
                       if (str(w["host"]), int(w["gpu"]["index"])) == (host, index)), 0)  # fmt: skip
        others = [need for job, need in prune(self.rt, self.ledger, host, index).items() if job != record.job_id]
        return memory > 0 and joins(memory, others, record.memory_mib)

    def _ask(self, seen: Seen, hold: dict[str, Any]) -> int:
        """Ask each move of the plan whose turn has come (again after a failover); returns the moves still to go."""
        pending, now_due = due(hold.get("moves", []), {r.job_id: r for r in seen.running})
        for job, dst in now_due:
            host, _, index = dst.rpartition("/")
            where = f"moved to GPU {index} of {host}" if dst else "requeued back to its queue"
            reason = f"defragmentation for {hold['job_id']}: {where}"
            try:
                lifecycle.request_preempt(self.rt.registry, self.rt.leases, job, reason, "supervisor",
                                          for_job=str(hold["job_id"]),
                                          move_to=device_queue(host, int(index)) if dst else "")  # fmt: skip
            except InvalidTransition:
                continue  # it ended meanwhile: its room is free already
            self.say(f"{job}: {reason}")
        return pending

    def _plan(self, seen: Seen, making_room: set[str]) -> None:
        """Ask routing for the cheapest plan; hold its target with the plan's moves, then ask for them."""
        holds = self.holds.all()  # afresh: the gang placer may have held GPUs since the snapshot
        lent = {str(e.get("job_id")) for h in holds for e in (h.get("loans") or {}).values()}
        asked = {str(getattr(e, "for_job", "")) for r in seen.running if (e := lifecycle.preempt_request_of(r))}
        skip = making_room | lent | asked  # a GPU is already being freed for these, or lent to them
        waiting = tuple(  # a job needs its size class's bound: a shared GPU's worker takes no larger class
            Waiting(r.job_id, r.tier, size_class_for(r.memory_mib).bound_mib, parse_iso(r.submitted_at).timestamp())
            for r in seen.queued if not is_gang(r) and r.job_id not in skip
        )  # fmt: skip
        spent = frozenset(j for j, v in seen.victims.items() if _spent(v, seen.now, self.policy))
        answer = choose(waiting, self._devices(seen, holds), seen.now, spent=spent, policy=self.policy)
        if not isinstance(answer, Defrag):
            return
        host, index = answer.gpu_id.rsplit("/", 1)
        moves = [[m.job_id, m.from_gpu, m.to_gpu] for m in answer.moves]
        fields = {"kind": DEFRAG, "held_at": seen.now, "start_at": seen.now, "reason": answer.reason, "moves": moves}
        if self.holds.hold(answer.for_job, host, (int(index),), fields):
            return  # held meanwhile (a gang, a failover): next tick, from fresh state
        self._event(answer.for_job, "defrag", answer.reason)
        self._ask(seen, {**fields, "job_id": answer.for_job})

    def _devices(self, seen: Seen, holds: list[dict[str, Any]]) -> tuple[Device, ...]:
        """Each GPU taking work and held by nobody, with its running jobs as tenants (GPU ids are ``host/index``)."""
        held = {(str(h["host"]), int(g)) for h in holds for g in h["gpus"]}
        on: dict[str, list[JobRecord]] = {}
        for record in seen.running:
            on.setdefault(str(record.worker), []).append(record)
        devices = []
        for w in seen.taking_work:
            host, index = str(w["host"]), int(w["gpu"]["index"])
            if (host, index) in held:
                continue
            tenants = tuple(_tenant(r, seen.victims.get(r.job_id), seen.now) for r in on.get(node_of(host, index), []))
            devices.append(Device(f"{host}/{index}", int(w["gpu"]["memory_mib"]), host, bool(w.get("shared")), tenants))
        return tuple(devices)

    def _release(self, hold: dict[str, Any], why: str) -> None:
        if self.holds.release(str(hold["job_id"]), str(hold["host"]), hold["gpus"]):
            self.say(f"released GPU {hold['gpus'][0]} of {hold['host']} held for {hold['job_id']}: {why}")

    def _event(self, job_id: str, kind: str, reason: str) -> None:
        self.rt.registry.append_event(job_id, Event(at=iso(utc_now()), type=kind, reason=reason, by="supervisor"))
        self.say(f"{job_id}: {reason}")


def due(moves: list[list[str]], running: dict[str, JobRecord]) -> tuple[int, list[tuple[str, str]]]:
    """(moves still to go, the (job, destination) to ask now) of a plan's moves ``[job, source, destination]``.

    A move is done once its job no longer runs on its source GPU (moved, requeued or ended). One still to go is asked
    unless it was asked already (a preempt request of this attempt), is leaving, or moves onto a GPU that the plan's
    other jobs have not left yet (displacement: the requeued tenant goes first, or the mover finds no room)."""
    left = {job for job, src, _ in moves if (r := running.get(job)) is None or r.worker != _node(src)}
    pending, asks = 0, []
    for job, _, dst in moves:
        if job in left:
            continue
        pending += 1
        record = running[job]
        blocked = bool(dst) and any(src == dst and other not in left for other, src, _ in moves)
        if not blocked and record.state is JobState.RUNNING and lifecycle.preempt_request_of(record) is None:
            asks.append((job, dst))
    return pending, asks


def _node(gpu_id: str) -> str:
    """A plan's GPU id (``host/index``) as its worker's node name."""
    host, _, index = gpu_id.rpartition("/")
    return node_of(host, int(index))


def as_gpu(claim: dict[str, Any], on: dict[str, list[JobRecord]], held: dict[tuple[str, int], str]) -> Gpu | None:
    """A GPU as the preemption rules see it: a whole GPU with its job (held: only to its gang's leader, as preempting
    the gang frees all its GPUs); a shared one as a free GPU of the largest size class its room takes (what its
    worker consumes, workers/sharing.py), or not at all when that is none."""
    node, memory, jobs = str(claim["node"]), int(claim["gpu"]["memory_mib"]), on.get(str(claim["node"]), [])
    holder = held.get((str(claim["host"]), int(claim["gpu"]["index"])))
    if claim.get("shared"):
        room = room_for(memory, [r.memory_mib for r in jobs], SharePolicy())
        usable = next((c.bound_mib for c in classes_fitting(room)), 0)
        return Gpu(node, usable) if holder is None and usable > 0 else None
    busy = jobs[-1].job_id if jobs else None
    return Gpu(node, memory, busy) if holder in (None, busy) else None


def _spent(victim: Running, now: float, policy: Policy) -> bool:
    """Whether the job's preemption budget is used (routing.preemption's rule)."""
    return len([t for t in victim.preempted_at if now - t < policy.window_s]) >= policy.max_preemptions


def _tenant(record: JobRecord, victim: Running | None, now: float) -> Tenant:
    """A running job as a tenant: a replica, a gang member, a frozen or already-leaving job never moves; one moved
    lately is pinned (not moved again; still requeued when the rules let it go)."""
    remaining = victim.remaining_s if victim is not None else 0.0
    fixed = victim is None or victim.frozen or victim.preempting or record.kind == "serve" or is_gang(record)
    pinned = any(getattr(e, "moved_to", "") and now - parse_iso(e.at).timestamp() < MOVED_WITHIN_S
                 for e in record.preemptions)  # fmt: skip
    cost = victim.restart_cost_s if victim is not None else 0.0
    return Tenant(
        record.job_id, record.tier, record.memory_mib, now + remaining, move_cost_s=cost, frozen=fixed, pinned=pinned
    )
