"""The supervisor: read a snapshot, let routing.preemption decide, act — as the leader of two or more replicas.

Each tick (at once when a job starts waiting: the registry publishes it on ``infra.wake``'s channel; and at least
every ``interval_s``): hold the leader lease (a standby only waits), requeue jobs whose attempt lease expired,
publish again queued jobs whose message was lost (:mod:`workers.resender`), build the snapshot (queued and running
jobs from the registry, live GPU workers from their claims), call :func:`routing.preemption.decide`, and apply it:
record the request with its reason and the job it makes room for, then set the preempt flag
(``tasks.lifecycle.request_preempt``). A victim that has not yielded after ``grace_s`` is escalated once with
``revoke(terminate=True, SIGKILL)``: its job process then gets the parent-death signal and checkpoints, and the
lease expiry requeues it from the newest checkpoint. Then multi-GPU jobs are placed (:mod:`workers.gangs`) and a job
blocked by memory scattered over shared GPUs gets one cleared (:mod:`workers.defrag`); ``decide`` sees a shared GPU
as a free GPU of the largest size class its room takes, and never its tenants. ``--dry-run`` prints decisions with
their reasons and applies none.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from infra.admission_rules import AdmissionStore
from infra.celery_control import CeleryDispatch
from infra.cordon import CordonStore, taking_work
from infra.credit_store import CreditStore
from infra.fleet_ceiling import FleetCeiling
from infra.gang_holds import held_devices
from infra.leader import LeaderLease
from infra.leases import Flag
from infra.presence import GpuClaims
from infra.runtime_history import RuntimeHistory
from infra.settings import Settings
from infra.wake import WakeListener
from routing.credit import CreditPolicy
from routing.fleet_fit import largest_seen, too_big
from routing.preemption import Decision, Policy, Running, Snapshot, Waiting, decide, restart_cost_s
from routing.runtime_estimate import Sample
from tasks import admission, borrowing, credit, expected_runtime, lifecycle
from tasks.app import create_app
from tasks.budget import budget_preemptions
from tasks.errors import InvalidTransition, YoloqError
from tasks.records import Event, JobRecord, iso, parse_iso, utc_now
from tasks.runtime import Runtime, build_runtime
from tasks.states import JobState
from workers.defrag import Defragmenter, as_gpu
from workers.gangs import GangPlacer, Seen, is_gang
from workers.resender import Resender
from workers.serving import ServingScaler

log = logging.getLogger("yoloq.supervisor")
HISTORY_TTL_S = 30.0


@dataclass(frozen=True)
class Options:
    """How the loop runs; the policy knobs live in :class:`routing.preemption.Policy`."""

    interval_s: float = 1.0
    grace_s: float = 60.0
    leader_ttl_s: float = 10.0
    resend_grace_s: float = 30.0  # a queued job's message missing this long (on two sweeps) is published again
    serve_down_delay_s: float = 60.0  # a deployment's surplus replica is stopped after this long (workers.serving)
    credit_interval_s: float = 30.0  # teams' credit scores are swept this often (tasks.credit)
    defrag: bool = True  # move jobs between shared GPUs to make room for a blocked one (workers.defrag)
    dry_run: bool = False


def _ts(text: str | None) -> float | None:
    return parse_iso(text).timestamp() if text else None


def _running(record: JobRecord, flagged: bool, now: float, history: list[Sample] | None = None) -> Running:
    """A running job as routing sees it: work lost since its checkpoint, remaining time from its expected runtime
    and its progress (tasks.expected_runtime)."""
    started = _ts(record.attempts[-1].started_at if record.attempts else None) or now
    saves = [e for e in record.events if e.type == "checkpoint"]
    last_ckpt = max((_ts(e.at) or 0.0 for e in saves), default=started)
    newest = saves[-1].model_dump() if saves else {}
    cost = restart_cost_s(int(newest.get("bytes", 0)), float(newest.get("publish_s", 0.0)))
    remaining = expected_runtime.remaining_s(record, history or [], now)
    lost = max(0.0, now - max(last_ckpt, started))
    if record.kind == "serve":  # a replica drains (answers what it holds) and loses no work; it never ends by itself
        lost = 0.0
    return Running(
        job_id=record.job_id, tier=record.tier, gpu_id=record.worker or "?",
        since_checkpoint_s=lost, restart_cost_s=cost, remaining_s=remaining,
        frozen=record.frozen, preempting=flagged or record.state is JobState.PREEMPTING,
        preempted_at=tuple(_ts(e.at) or 0.0 for e in budget_preemptions(record)),
    )  # fmt: skip


class Supervisor:
    """One supervisor replica; only the leader acts."""

    def __init__(self, rt: Runtime, options: Options, policy: Policy, identity: str, say: Callable[[str], None]):
        self.rt, self.options, self.policy, self.say = rt, options, policy, say
        client = rt.registry.client
        self.claims = GpuClaims(client, rt.settings.redis_url)
        self.cordons = CordonStore(client, rt.settings.redis_url)
        self.leader = LeaderLease(client, "supervisor", identity, options.leader_ttl_s, rt.settings.redis_url)
        self.escalated: set[str] = set()
        self.admission = AdmissionStore(client, rt.settings.redis_url)
        self.resender = Resender(rt, options.resend_grace_s, say, options.dry_run)
        self.ceiling = FleetCeiling(client, rt.settings.redis_url)
        self.live_sizes, self.queued = set[int](), list[JobRecord]()  # as the last snapshot saw them
        self.serving = ServingScaler(rt, say, options.serve_down_delay_s)
        self.history, self.history_at = list[Sample](), -HISTORY_TTL_S  # runtime history (docs/eta.md), cached
        self.credit, self.credit_policy = CreditStore(client, rt.settings.redis_url), CreditPolicy()
        self.credit_due, self.loans_seen = 0.0, True  # loans_seen: read the active jobs for loans on the first tick
        self.gangs, self.seen = GangPlacer(rt, say), Seen(0.0, [], [], [], {})
        drain = options.grace_s + rt.settings.lease_ttl_s + 60.0  # an ignored move is escalated and requeued by then
        self.defrag = Defragmenter(rt, say, policy, drain)

    def snapshot(self, now: float) -> tuple[Snapshot, list[JobRecord], set[str]]:
        """Queued and running jobs plus the live GPU workers, frozen at ``now``; also the running records and the
        ids of those flagged for preemption, which escalation reuses instead of reading them again."""
        reg = self.rt.registry
        queued = reg.many(reg.ids(JobState.QUEUED, limit=100_000))
        # Running records at one instant, each judged by its own state and events: a victim that requeued while the
        # snapshot was read must not look like a running job that nobody asked to stop (a second victim).
        active = (JobState.RUNNING, JobState.PREEMPTING)
        ids = reg.ids(JobState.RUNNING, limit=100_000) + reg.ids(JobState.PREEMPTING, limit=100_000)
        running = [r for r in reg.many(ids, atomic=True) if r.state in active]
        started = {r.job_id for r in running}  # read just before these: a job that started since is not also waiting
        queued = [r for r in queued if r.state is JobState.QUEUED and r.job_id not in started]
        flagged = {j for j, f in self.rt.leases.flags([r.job_id for r in running]).items() if f is Flag.PREEMPT}
        on: dict[str, list[JobRecord]] = {}
        for r in running:
            on.setdefault(str(r.worker), []).append(r)
        live = self.claims.live()
        self.live_sizes, self.queued = {int(w["gpu"]["memory_mib"]) for w in live}, queued
        working = taking_work(live, self.cordons.all())
        holds = self.gangs.holds.all()  # one read a tick, for this snapshot and the gang placer
        held = held_devices(holds)  # a cordoned device takes no work: freeing it would help no waiting job
        gpus = tuple(g for w in working if (g := as_gpu(w, on, held)) is not None)
        shared = {str(w["node"]) for w in live if w.get("shared")}
        waiting = tuple(  # gangs are placed by workers.gangs, not by one victim's GPU
            Waiting(r.job_id, r.tier, r.memory_mib, _ts(r.submitted_at) or now) for r in queued if not is_gang(r)
        )
        asked = {r.job_id for r in running if lifecycle.preempt_request_of(r) is not None}  # flag may be cleared since
        history = self._history(now)
        victims = tuple(_running(r, r.job_id in flagged | asked, now, history) for r in running)
        self.seen = Seen(now, queued, running, working, {v.gpu_id: v.remaining_s for v in victims}, history, holds,
                         {v.job_id: v for v in victims})  # fmt: skip
        judged = tuple(v for v in victims if v.gpu_id not in shared)  # a shared GPU's tenants are workers.defrag's
        return Snapshot(now, gpus, waiting, judged, self.policy), running, flagged

    def _history(self, now: float) -> list[Sample]:
        """Runtime history for remaining-time estimates, read again at most every HISTORY_TTL_S."""
        if now >= self.history_at + HISTORY_TTL_S:
            with contextlib.suppress(YoloqError):  # stale history beats no tick
                rows = RuntimeHistory(self.rt.registry.client, self.rt.settings.redis_url).samples()
                self.history, self.history_at = expected_runtime.samples(rows), now
        return self.history

    def tick(self, now: float | None = None) -> Decision | None:
        """One round: lead or stand by, recover, decide, act; returns the decision (None on a standby)."""
        if not self.options.dry_run and not self.leader.hold():
            return None
        now = time.time() if now is None else now
        if not self.options.dry_run:
            for job_id in lifecycle.recover_expired(self.rt.registry, self.rt.leases, self.rt.dispatch):
                self.say(f"recovered {job_id}: its attempt lease expired")
            for job_id in admission.release_held(self.rt.registry, self.rt.dispatch, self.admission):
                self.say(f"released held job {job_id}: approval and quota allow it")
        self._reclaim(now)
        self._sweep_credit(now)
        self.resender.maybe_sweep(now)
        snap, running, flagged = self.snapshot(now)
        decision = decide(snap)
        for p in decision.preemptions:
            if self.options.dry_run:
                self.say(f"would preempt {p.victim} for {p.for_job}: {p.reason}")
                continue
            self._preempt(p.victim, p.for_job, p.reason)
        if self.options.dry_run:
            for job_id, why in decision.notes:
                self.say(f"leave {job_id}: {why}")
        else:
            self._escalate(now, running, flagged | self._reflag(running, flagged))
            self._mark_unfit(now)
            self.gangs.tick(self.seen)
            if self.options.defrag:
                self.defrag.tick(self.seen, {p.for_job for p in decision.preemptions})
            self.serving.tick(now)
        return decision

    def _reclaim(self, now: float) -> None:
        """Take lent quota back for lenders that need it (tasks.borrowing): borrowers go back to held. Without
        lending limits and with no loan seen on the last tick, nobody can borrow: nothing is read."""
        if not self.loans_seen and not self.admission.rules().lend:
            return
        jobs, self.loans_seen = borrowing.plan(self.rt.registry, self.admission, now)
        for job in jobs:
            if self.options.dry_run:
                self.say(f"would reclaim {job.job_id}: {job.reason}")
            elif borrowing.apply(self.rt, job):
                self.say(f"reclaimed {job.job_id}: {job.reason}")

    def _sweep_credit(self, now: float) -> None:
        """Score the teams' use of the critical tier and demote or restore them (tasks.credit), every interval."""
        if self.options.dry_run or now < self.credit_due:
            return
        self.credit_due = now + self.options.credit_interval_s
        for verdict in credit.sweep(self.rt.registry, self.admission, self.credit, now, self.credit_policy):
            if verdict.change:
                self.say(f"credit: {verdict.change} team {verdict.team}: {verdict.reason}")

    def _mark_unfit(self, now: float) -> None:
        """Record the live GPU sizes for the door (submit), and tell each queued job no GPU can hold why, once."""
        self.ceiling.saw(self.live_sizes, now)
        largest = largest_seen(self.ceiling.seen(), now)
        for record in self.queued:
            unfit = too_big(record.memory_mib, largest, "seen in the fleet in the last 24 h")
            told = next((e.reason for e in reversed(record.events) if e.type == "unplaceable"), None)
            if unfit is None or f"no GPU can hold it: {unfit}" == told:
                continue
            reason = f"no GPU can hold it: {unfit}"
            self.rt.registry.append_event(record.job_id, Event(at=iso(utc_now()), type="unplaceable", reason=reason,
                                                               by="supervisor"))  # fmt: skip
            self.say(f"{record.job_id} waits: {reason}")

    def _preempt(self, victim: str, for_job: str, reason: str) -> None:
        try:
            lifecycle.request_preempt(self.rt.registry, self.rt.leases, victim, reason, "supervisor", for_job=for_job)
        except InvalidTransition as err:
            log.info("victim %s moved on before the request: %s", victim, err)
            return
        self.say(f"preempt {victim} for {for_job}: {reason}")

    def _reflag(self, running: list[JobRecord], flagged: set[str]) -> set[str]:
        """Set the flag of each victim whose preempt request is recorded but whose flag is not: a leader killed
        between the two writes (request first, then flag) left it so, and as the request makes it count as yielding,
        nobody would ask another job and the victim would run to its end. Only while a fresh read still shows the same
        attempt running: a victim that yielded meanwhile has had its flag cleared on purpose (issue 17's failover
        drill). Returns the jobs flagged again."""
        done = set()
        for record in running:
            if record.job_id in flagged or lifecycle.preempt_request_of(record) is None:
                continue
            fresh = self.rt.registry.get(record.job_id)
            same = fresh.state is JobState.RUNNING and fresh.attempts[-1].task_id == record.attempts[-1].task_id
            if same and self.rt.leases.flag(record.job_id) is None:
                self.rt.leases.set_flag(record.job_id, Flag.PREEMPT)
                done.add(record.job_id)
                self.say(f"flagged {record.job_id} again: its preempt request was recorded without the flag")
        return done

    def _escalate(self, now: float, running: list[JobRecord], flagged: set[str]) -> None:
        """Revoke (terminate) a victim that ignored its request for longer than the grace period, once."""
        reg = self.rt.registry
        for record in running:
            if record.state is not JobState.RUNNING or record.job_id not in flagged or record.job_id in self.escalated:
                continue
            asked = lifecycle.preempt_request_of(record)
            if asked is None or now - (_ts(asked.at) or now) < self.options.grace_s:
                continue
            task_id = record.attempts[-1].task_id
            self.rt.dispatch.terminate(task_id)
            self.escalated.add(record.job_id)
            reason = f"no checkpoint within {self.options.grace_s:g} s of the request: task {task_id} terminated"
            reg.append_event(record.job_id, Event(at=iso(utc_now()), type="preempt-escalated", reason=reason,
                                                  by="supervisor"))  # fmt: skip
            self.say(f"escalated {record.job_id}: {reason}")

    def run(self, stop: threading.Event) -> None:
        """Tick until ``stop`` is set, at once when a job starts waiting (``infra.wake``) and at least every interval;
        errors of one tick are logged and the next tick retries."""
        wakes = WakeListener(self.rt.registry.client)
        try:
            while not stop.is_set():
                try:
                    self.tick()
                except YoloqError as err:
                    log.warning("supervisor tick failed: %s", err)
                wakes.wait(self.options.interval_s)
        finally:
            wakes.close()
            if not self.options.dry_run:
                self.leader.release()


def build_supervisor(settings: Settings, options: Options, say: Callable[[str], None] = print) -> Supervisor:
    """A supervisor wired to the settings' Redis and broker, identified by host and pid."""
    rt = build_runtime(settings, CeleryDispatch(create_app(settings)))
    return Supervisor(rt, options, Policy(), f"{settings.host()}:{os.getpid()}", say)
