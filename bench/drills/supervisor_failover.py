"""Drill 5, supervisor failover under load: three supervisors (one leader, two standbys), every GPU busy with low
jobs, critical jobs arriving; the leader is killed with ``kill -9`` again and again (a new standby started after
each kill, as a process manager would), at three points of its work in turn:

* ``before``: killed, then the critical job arrives: no leader until a standby takes the lease; it must act;
* ``asked``: killed right after it recorded the preempt request, before the victim yielded: the next leader must not
  ask a second victim;
* ``race``: the critical job arrives and the leader is killed at once, mid-decision or just after it (a leader killed
  between the request and the flag is caught up by the next one: tests/integration/test_drill_failover.py).

Each round waits until every GPU runs a low job that has never been preempted and has time left, so that a critical
job can start only by a preemption. Checked from the registry: every critical job has exactly one preempt request
made for it (none missed, none doubled), no job was asked twice for one need, the number of preemptions equals the
number of critical jobs, and each critical job starts within the bound after the kill; every job ends ``succeeded``
exactly once. Measured: takeover (kill → a standby holds the lease) and kill → critical job running.

Baseline: plain Celery has no supervisor and no preemption, so nothing fails over and nothing is preempted either: a
critical task waits until a worker frees. The figure given for it is, per round, the remaining seconds of the
soonest-ending low job when the critical job arrived: what it would have waited with strict tier order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from bench.drills import crash_kit as kit
from bench.drills.low_load import LowProbes
from bench.drills.outcome import Outcome, spread
from infra.leader import LeaderLease
from infra.processes import ManagedProcess
from tasks.errors import YoloqError
from tasks.records import JobRecord, parse_iso
from tasks.specs import ProbeSpec
from tasks.states import TERMINAL, JobState

MODES = ("before", "asked", "race")  # the quick size (2 kills) checks a missed and a doubled request


@dataclass(frozen=True)
class Size:
    """GPUs, supervisors, kills, the leader lease TTL, each low probe's seconds and the low backlog kept queued."""

    gpus: int
    supervisors: int
    kills: int
    leader_ttl_s: float
    low_s: int
    backlog: int

    @property
    def bound_s(self) -> float:
        """A critical job runs within this after the kill: a takeover (TTL) + a tick + one probe step + margin."""
        return self.leader_ttl_s + 7.0


QUICK = Size(gpus=2, supervisors=2, kills=2, leader_ttl_s=3.0, low_s=16, backlog=0)
FULL = Size(gpus=3, supervisors=3, kills=10, leader_ttl_s=5.0, low_s=30, backlog=1)


@dataclass
class Kill:
    """One fault: which mode, when the leader died, who took over when, and the critical job of the round."""

    n: int
    mode: str
    at: float
    critical: str
    plain_wait_s: float  # the soonest-ending low job's remaining seconds when the critical job arrived
    takeover_s: float | None = None
    started_s: float | None = None  # kill -> the critical job running


def _leader(stack: kit.Stack, lease: LeaderLease) -> ManagedProcess:
    """The supervisor process that holds the lease now (waits for one)."""
    live = {p.pid: p for p in stack.services.supervisors if p.alive()}
    holder = kit.poll(lambda: (h := lease.holder()) and int(h.rsplit(":", 1)[1]) in live and h, 60, "a leader")
    return live[int(str(holder).rsplit(":", 1)[1])]


def _ready(stack: kit.Stack, size: Size) -> float | None:
    """When every GPU runs a never-preempted low job with time left (and no critical job is unfinished): the
    soonest-ending one's remaining seconds; None while not so."""
    records = stack.client.jobs(limit=1_000_000)
    if any(r.tier.value == "critical" and r.state not in TERMINAL for r in records):
        return None
    running = [r for r in records if r.state is JobState.RUNNING and r.attempts[-1].started_at]
    left = [int(r.progress.get("steps", 0)) - int(r.progress.get("step", 0)) for r in running]
    fresh = all(r.tier.value == "low" and not r.preemptions for r in running)
    return float(min(left)) if len(running) >= size.gpus and fresh and min(left) >= size.bound_s else None


def one_kill(stack: kit.Stack, lease: LeaderLease, size: Size, n: int) -> Kill:
    """Wait for a full fleet of fresh low jobs, then kill the leader around a critical job's arrival (``MODES``)."""
    mode = MODES[n % len(MODES)]
    plain_wait = kit.poll(lambda: _ready(stack, size), 180, f"round {n}: every GPU busy with a fresh low job")
    leader = _leader(stack, lease)
    spec = ProbeSpec(seconds=1, tier="critical", team="drill", memory_gb=8, name=f"failover-critical-{n}")
    if mode == "before":
        at = kit.kill9(leader)
        urgent = stack.client.submit(spec)
    else:
        urgent = stack.client.submit(spec)
        if mode == "asked":
            kit.poll(lambda: _asked_for(stack, urgent.job_id), size.bound_s, f"round {n}: the leader's request",
                     interval_s=0.01)  # fmt: skip
        at = kit.kill9(leader)
    stack.services.start_supervisor("--interval", "0.5", "--leader-ttl", str(size.leader_ttl_s))
    kill = Kill(n, mode, at, urgent.job_id, plain_wait)
    old = f":{leader.pid}"
    try:
        kit.poll(lambda: (h := lease.holder()) is not None and not h.endswith(old), 60, "a new leader", 0.02)
        kill.takeover_s = round(time.time() - at, 2)
        record = urgent.wait({JobState.RUNNING, *TERMINAL}, timeout_s=size.bound_s * 3)
        if record.started_at:
            kill.started_s = round(parse_iso(record.started_at).timestamp() - at, 2)
    except (TimeoutError, YoloqError):
        pass
    return kill


def _asked_for(stack: kit.Stack, job_id: str) -> bool:
    """Whether a preempt request for ``job_id`` is recorded in a running (or yielding) job's history."""
    reg = stack.client.registry
    ids = reg.ids(JobState.RUNNING, limit=1000) + reg.ids(JobState.PREEMPTING, limit=1000)
    return any(_requests_for(r, job_id) for r in reg.many(ids))


def _requests_for(record: JobRecord, job_id: str) -> int:
    """How many preempt requests ``record`` got for ``job_id``."""
    return sum(1 for e in record.events if e.type == "preempt-requested" and getattr(e, "for_job", None) == job_id)


def _score(outcome: Outcome, kills: list[Kill], records: list[JobRecord], size: Size) -> None:
    """Fill the outcome: one request per critical job and none twice, each started in the bound, the figures."""
    lost, duplicated, problems = kit.judge(records)
    outcome.jobs, outcome.lost, outcome.duplicated = len(records), lost, duplicated
    outcome.problems += problems
    for k in kills:
        asked = [(r.job_id, _requests_for(r, k.critical)) for r in records if _requests_for(r, k.critical)]
        total = sum(n for _, n in asked)
        outcome.check(total == 1, f"kill {k.n} ({k.mode}): {total} preempt requests for critical job {k.critical} "
                                  f"({'missed' if not total else 'doubled'}: {asked})")  # fmt: skip
        outcome.check(k.takeover_s is not None, f"kill {k.n} ({k.mode}): no standby took the lease")
        outcome.check(k.started_s is not None and k.started_s <= size.bound_s,
                      f"kill {k.n} ({k.mode}): critical job running {k.started_s} s after the kill "
                      f"(bound {size.bound_s:.0f} s)")  # fmt: skip
    requests = sum(1 for r in records for e in r.events if e.type == "preempt-requested")
    outcome.check(requests == len(kills), f"{requests} preempt requests in all for {len(kills)} critical jobs")
    outcome.recovered = sum(1 for k in kills if k.started_s is not None)
    outcome.recover_s = spread([k.started_s for k in kills if k.started_s is not None])
    takeovers = [k.takeover_s for k in kills if k.takeover_s is not None]
    outcome.figures |= {
        "kills": len(kills), "supervisors": size.supervisors, "leader_ttl_s": size.leader_ttl_s,
        "bound_s": size.bound_s, "modes": [k.mode for k in kills], "takeover_s": spread(takeovers),
        "takeover_s_each": takeovers, "critical_running_s_each": [k.started_s for k in kills],
        "preempt_requests": requests, "attempts": sum(len(r.attempts) for r in records),
    }  # fmt: skip
    waits = [k.plain_wait_s for k in kills]
    outcome.baseline = {"note": "plain Celery has no supervisor: nothing to fail over and nothing preempts; a "
                        "critical task waits for a worker to free (strict tier order at best)",
                        "critical task would wait (s)": spread(waits)}  # fmt: skip


def run(quick: bool) -> Outcome:
    """The drill at its quick or full size."""
    size = QUICK if quick else FULL
    outcome = Outcome(name="failover", jobs=0, recovery="leader kill -9 → the critical job running",
                      faults=f"{size.kills} × kill -9 of the leading supervisor ({size.supervisors} replicas, leader "
                             f"TTL {size.leader_ttl_s:.0f} s), {size.gpus} GPUs full of low jobs")  # fmt: skip
    with kit.drill_stack("yoloq-drill-failover-", lease_ttl_s=5.0, worker_ttl_s=5.0) as stack:
        stack.client.preapprove("drill")  # its critical jobs run without an operator's approval
        host = stack.host(",".join(f"{i}:A100:40" for i in range(size.gpus)))
        host.start_all()
        for _ in range(size.supervisors):
            stack.services.start_supervisor("--interval", "0.5", "--leader-ttl", str(size.leader_ttl_s))
        lease = LeaderLease(stack.redis, "supervisor", "drill-observer", size.leader_ttl_s)
        lows = LowProbes(stack.client, size.gpus + size.backlog, size.low_s, "failover")
        lows.start()
        kills = [one_kill(stack, lease, size, n) for n in range(size.kills)]
        lows.stop.set()
        lows.join(30)
        kit.poll(lambda: all(r.state in TERMINAL for r in stack.client.jobs(limit=1_000_000)), 120 + 3 * size.low_s,
                 "every job finished")  # fmt: skip
        records = stack.client.jobs(limit=1_000_000)
    _score(outcome, kills, records, size)
    outcome.check(not stack.leaked, f"processes outlived the drill: {stack.leaked}")
    outcome.command = ".venv/bin/python -m bench.drills failover" + (" --quick" if quick else "")
    return outcome
