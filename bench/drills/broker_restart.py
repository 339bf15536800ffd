"""Drill 3, broker restart: Redis (append-only file, ``appendfsync everysec``) stopped and started again on the same
port and data folder under load, alternately with SIGTERM and ``kill -9``.

The stack's own embedded Redis (infra.local_redis) already runs with ``--appendonly yes --appendfsync everysec``.
everysec, not always: a Redis *process* that dies loses nothing it acknowledged (each write reaches the kernel with
``write(2)`` before the reply is sent); only a crash of the whole machine can lose the last second, which ``always``
closes at the price of an fsync per write.

Load: a low probe on every GPU (topped up), a supervisor, and ``yoloq beat`` submitting a batch probe every few
seconds (a backlog at each stop). While Redis is down the drill submits once (the caller must be told at once).
Once Redis answers: every worker's first start, the first finish, beat's first submission; then, with only jobs the
restart cut off running, a critical probe that can only start by the supervisor preempting one of them. Nothing is
restarted by hand: the processes of the start must carry on. From the registry: every job ``succeeded`` exactly once,
no overlapping attempts, no job id lost. Baseline (bench.drills.broker_plain): plain Celery on database 1.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.drills import crash_kit as kit
from bench.drills.broker_plain import Plain
from bench.drills.low_load import LowProbes
from bench.drills.outcome import Outcome, spread
from infra.local_redis import RedisService
from infra.processes import ManagedProcess
from infra.redis_client import ping
from tasks.budget import INTERRUPTED_BY
from tasks.errors import YoloqError
from tasks.records import JobRecord, parse_iso
from tasks.specs import ProbeSpec
from tasks.states import TERMINAL, JobState

BOUND_S = 30.0  # every worker, the supervisor (a critical start) and beat are back within this after Redis is


@dataclass(frozen=True)
class Size:
    """GPUs, restarts, how long Redis stays down, each low probe's seconds, beat's period and the plain baseline's
    backlog."""

    gpus: int
    restarts: int
    down_s: float
    probe_s: int
    beat_every_s: int
    plain_tasks: int


QUICK = Size(gpus=2, restarts=2, down_s=3.0, probe_s=15, beat_every_s=3, plain_tasks=20)
FULL = Size(gpus=3, restarts=6, down_s=8.0, probe_s=60, beat_every_s=5, plain_tasks=60)


@dataclass
class Restart:
    """One fault: how Redis was stopped, when it went down and answered again, and what came back when."""

    n: int
    hard: bool
    stopped_at: float
    back_at: float
    queued: int = 0  # jobs queued in the broker at the stop
    missing: list[str] = field(default_factory=list)  # job ids known before the stop, absent after
    refused: str = ""  # what a submission during the outage was told
    victim_cut_off: bool = False  # the critical job's victim was a job this restart had cut off
    back: dict[str, float | None] = field(default_factory=dict)  # what -> seconds after back_at


def restart_redis(
    redis: RedisService, hard: bool, down_s: float, meanwhile: Callable[[], str]
) -> tuple[float, float, str]:
    """Stop the embedded Redis (SIGTERM, or ``kill -9`` when ``hard``), keep it down ``down_s`` (calling
    ``meanwhile``), start the same command again (same port, password and data folder); returns (stopped at,
    answering again at, what ``meanwhile`` said)."""
    proc = redis.process
    assert proc is not None, "the drill needs the stack's own Redis"
    argv, log = [str(a) for a in proc.proc.args], proc.log_path  # type: ignore[union-attr]
    stopped_at = time.time()
    if hard:
        kit.kill9(proc)
    else:
        proc.stop(30)
    said = meanwhile()
    time.sleep(max(0.0, stopped_at + down_s - time.time()))  # the outage itself
    redis.process = ManagedProcess("redis", argv, Path(log))
    kit.poll(lambda: ping(redis.url, 0.2), 60, "Redis answering again", interval_s=0.02)
    return stopped_at, time.time(), said


def _submit_while_down(stack: kit.Stack) -> str:
    """A submission while Redis is down: the caller must be told at once (seconds and the error's first words)."""
    started = time.monotonic()
    try:
        stack.client.submit(ProbeSpec(seconds=0, tier="low", team="drill", name="broker-while-down"))
    except YoloqError as err:
        return f"{type(err).__name__} after {time.monotonic() - started:.2f} s: {str(err)[:60]}"
    return "accepted while Redis was down"


def _known(stack: kit.Stack) -> set[str]:
    """Every job id in the registry."""
    return {r.job_id for r in stack.client.jobs(limit=1_000_000)}


def _first_after(records: list[JobRecord], at: float) -> dict[str, float | None]:
    """Seconds after ``at`` to the first attempt started, the first finished, and each worker's first start."""
    starts, ends, per_node = [], [], dict[str, float]()
    for record in records:
        for attempt in record.attempts:
            if attempt.started_at and (t := parse_iso(attempt.started_at).timestamp()) > at:
                starts.append(t)
                node = str(attempt.worker)
                per_node[node] = min(per_node.get(node, t), t)
            if attempt.ended_at and attempt.outcome == "succeeded" and parse_iso(attempt.ended_at).timestamp() > at:
                ends.append(parse_iso(attempt.ended_at).timestamp())
    out: dict[str, float | None] = {"first_start": min(starts) - at if starts else None,
                                    "first_finish": min(ends) - at if ends else None}  # fmt: skip
    out |= {f"worker {node}": t - at for node, t in sorted(per_node.items())}
    return out


def _beat_after(records: list[JobRecord], at: float) -> float | None:
    """Seconds after ``at`` to the first job beat submitted."""
    times = [parse_iso(r.submitted_at).timestamp() for r in records if any(e.type == "scheduled" for e in r.events)]
    after = [t - at for t in times if t > at]
    return min(after) if after else None


def one_restart(stack: kit.Stack, host: kit.Host, n: int, size: Size, pids: dict[str, int]) -> Restart:
    """Wait for a full fleet, restart Redis, then measure what comes back and when."""
    kit.poll(lambda: len(stack.client.status()["running"]) >= size.gpus, 120, "every GPU busy")
    before = _known(stack)
    queued = len(stack.client.registry.ids(JobState.QUEUED, limit=100_000))
    stopped_at, back_at, said = restart_redis(stack.services.redis, n % 2 == 1, size.down_s,
                                              lambda: _submit_while_down(stack))  # fmt: skip
    fault = Restart(n, n % 2 == 1, stopped_at, back_at, queued, sorted(before - _known(stack)), said)
    nodes = {f"gpu{i}@{host.name}" for i in host.indexes}

    def workers_back() -> bool:
        records = stack.client.jobs(limit=1_000_000)
        fault.back = _first_after(records, back_at) | {"beat": _beat_after(records, back_at)}
        wanted = [fault.back.get(f"worker {node}") for node in nodes] + [fault.back["beat"]]
        return None not in wanted

    with contextlib.suppress(TimeoutError):
        kit.poll(workers_back, BOUND_S * 2, f"restart {n}: workers and beat back", interval_s=0.25)
    fault.back["critical_start"], fault.victim_cut_off = _critical(stack, n, stopped_at)
    fault.back["processes_replaced"] = float(sum(p.pid != pids.get(name) or not p.alive()
                                                 for name, p in _processes(stack).items()))  # fmt: skip
    return fault


def _cut_off(record: JobRecord, since: float) -> bool:
    """Whether a failure requeued the job since ``since``: its worker (Redis unreachable), or recovery (its lease
    expired while Redis was down: a restart longer than the lease TTL)."""
    return any(e.type == "preempted" and e.by in INTERRUPTED_BY and parse_iso(e.at).timestamp() >= since
               for e in record.events)  # fmt: skip


def _critical(stack: kit.Stack, n: int, stopped_at: float) -> tuple[float | None, bool]:
    """Once every GPU runs a job the restart cut off, with 3 s or more to go, submit a critical probe; returns the
    seconds from its submission to its start when the supervisor asked a job to yield for it (None: it did not, or
    it did not start in the bound), and whether that victim was one of the jobs cut off. A cut-off is a failure,
    not a preemption: it must leave the job an eligible victim."""

    def only_cut_off_jobs_run() -> bool:  # no GPU frees by itself soon: the job can only start by a preemption
        running = [r for r in stack.client.jobs(JobState.RUNNING, limit=1000) if r.attempts[-1].started_at]
        left = [int(r.progress.get("steps", 0)) - int(r.progress.get("step", 0)) for r in running]
        return bool(running) and min(left) >= 3 and all(_cut_off(r, stopped_at) for r in running)

    with contextlib.suppress(TimeoutError):
        kit.poll(only_cut_off_jobs_run, BOUND_S, "every GPU busy with a job cut off by the restart")
    urgent = stack.client.submit(ProbeSpec(seconds=1, tier="critical", team="drill", memory_gb=8,
                                           name=f"broker-critical-{n}"))  # fmt: skip
    try:
        record = urgent.wait({JobState.RUNNING, *TERMINAL}, timeout_s=BOUND_S)
    except TimeoutError:
        return None, False
    victims = [r for r in stack.client.jobs(limit=1_000_000) for e in r.events
               if e.type == "preempt-requested" and getattr(e, "for_job", None) == urgent.job_id]  # fmt: skip
    if not victims or not record.started_at:
        return None, False
    took = parse_iso(record.started_at).timestamp() - parse_iso(record.submitted_at).timestamp()
    return took, _cut_off(victims[0], stopped_at)


def _processes(stack: kit.Stack) -> dict[str, ManagedProcess]:
    """The yoloq processes that must ride out every restart by themselves."""
    found = {f"worker{i}": p for host in stack.hosts for i, p in host.services.workers.items()}
    found |= {f"supervisor{i}": p for i, p in enumerate(stack.services.supervisors)}
    return found | {name: p for name, (p, _) in stack.services.surfaces.items()}


def _schedule(home: Path, every_s: int) -> Path:
    """A schedule file: one batch probe every ``every_s`` seconds, the built-in schedules off."""
    quiet = {name: {"enabled": False} for name in ("checkpoint_gc", "sla_report", "gpu_health")}
    job = {"kind": "probe", "seconds": 0, "tier": "batch", "team": "drill", "memory_gb": 8}
    doc = {"schedules": {"drill-beat": {"every": every_s, "job": job}}, "builtin": quiet}
    path = home / "schedule.yaml"
    import yaml

    path.write_text(yaml.safe_dump(doc))
    return path


def _score(outcome: Outcome, faults: list[Restart], records: list[JobRecord], unacked: int,
           plain: dict[str, Any]) -> None:  # fmt: skip
    """Fill the outcome: every job once, nothing forgotten by Redis, everything back within the bound, baseline."""
    lost, duplicated, problems = kit.judge(records)
    outcome.jobs, outcome.lost, outcome.duplicated = len(records), lost, duplicated
    outcome.problems += problems
    for f in faults:
        f.back["first_finish"] = _first_after(records, f.back_at)["first_finish"]
        outcome.check(not f.missing, f"restart {f.n}: jobs gone from the registry after it: {f.missing}")
        outcome.check(" after " in f.refused, f"restart {f.n}: a submission while Redis was down: {f.refused}")
        bounded = {k: v for k, v in f.back.items() if k not in ("processes_replaced", "first_finish")}  # a finish
        late = {k: v for k, v in bounded.items() if v is None or v > BOUND_S}  # waits for a job's own length
        outcome.check(not late, f"restart {f.n}: not back within {BOUND_S:.0f} s: {late}")
        outcome.check(not f.back.get("processes_replaced"), f"restart {f.n}: a yoloq process exited")
    outcome.recovered = sum(1 for r in records if r.state is JobState.SUCCEEDED and len(r.attempts) > 1)
    workers = [max(v for k, v in f.back.items() if k.startswith("worker ") and v is not None) for f in faults
               if any(k.startswith("worker ") and v is not None for k, v in f.back.items())]  # fmt: skip
    outcome.recover_s = spread(workers)

    def each(key: str) -> list[float | None]:
        return [None if f.back.get(key) is None else round(float(f.back[key] or 0), 2) for f in faults]

    outcome.figures |= {
        "restarts": len(faults), "kill9": sum(f.hard for f in faults), "appendfsync": "everysec",
        "down_s": [round(f.back_at - f.stopped_at, 2) for f in faults],
        "first_start_s": each("first_start"), "first_finish_s": each("first_finish"),
        "every_worker_s": [round(w, 2) for w in workers], "critical_start_s": each("critical_start"),
        "beat_submit_s": each("beat"), "queued_at_stop": [f.queued for f in faults],
        "critical_victim_was_cut_off": [f.victim_cut_off for f in faults],
        "submit_while_down": sorted({f.refused.split(" after ")[0] for f in faults}),
        "submit_while_down_told_after_s": [float(f.refused.split(" after ")[1].split()[0]) for f in faults
                                           if " after " in f.refused],
        "resent_by_supervisor": [[f"{e.at} {e.type} {e.by}: {e.reason[:80]}" for e in r.events] for r in records
                                 if any(e.type == "resent" for e in r.events)],
        "left_in_unacked": unacked,
        "cut_off_attempts": sum(1 for r in records for a in r.attempts if a.outcome == "preempted"),
    }  # fmt: skip
    outcome.baseline = plain


def _settle(stack: kit.Stack, outcome: Outcome, timeout_s: float) -> None:
    """Wait for every job; then stop beat (no new jobs while the records are read) and wait for its last ones."""
    for wait_s in (timeout_s, 60.0):
        try:
            kit.poll(lambda: all(r.state in TERMINAL for r in stack.client.jobs(limit=1_000_000)), wait_s,
                     "every job finished", interval_s=0.5)  # fmt: skip
        except TimeoutError as err:
            outcome.problems.append(str(err))
        if "beat" in stack.services.surfaces:
            stack.services.surfaces.pop("beat")[0].stop(15)


def run(quick: bool) -> Outcome:
    """The drill at its quick or full size."""
    size = QUICK if quick else FULL
    outcome = Outcome(name="broker", jobs=0, recovery="Redis answering → every worker started a job again",
                      faults=f"{size.restarts} × Redis restart (AOF everysec; SIGTERM and kill -9 alternating, "
                             f"{size.down_s:.0f} s down), {size.gpus} GPUs, supervisor, beat")  # fmt: skip
    settings = {"lease_ttl_s": 5.0, "worker_ttl_s": 5.0}
    with kit.drill_stack("yoloq-drill-broker-", **settings) as stack:
        home = stack.services.settings.home
        stack.services.settings = stack.services.settings.model_copy(
            update={"schedule_file": str(_schedule(home, size.beat_every_s))}
        )
        host = stack.host(",".join(f"{i}:A100:40" for i in range(size.gpus)))
        stack.client.preapprove("drill")  # its critical jobs run without an operator's approval
        host.start_all()
        stack.services.start_supervisor("--interval", "0.5", "--leader-ttl", "5")
        stack.services.start_beat()
        plain = Plain(stack, size.plain_tasks)
        pids = {name: p.pid for name, p in _processes(stack).items()}
        submitter = LowProbes(stack.client, size.gpus, size.probe_s, "broker")
        submitter.start()
        faults = []
        for n in range(size.restarts):
            if n == 0:
                plain.backlog()
            faults.append(one_restart(stack, host, n, size, pids))
            if n == 0:
                plain.after(faults[0].back_at)
        submitter.stop.set()
        submitter.join(30)
        _settle(stack, outcome, 300 if quick else 600)
        records = stack.client.jobs(limit=1_000_000)
        unacked = int(stack.redis.hlen("unacked"))  # type: ignore[arg-type]
        baseline = plain.verdict(60)
    _score(outcome, faults, records, unacked, baseline)
    handles = {h.job_id for h in submitter.handles}
    outcome.check(handles <= {r.job_id for r in records}, "a job the submitter was given is not in the registry")
    outcome.check(not stack.leaked, f"processes outlived the drill: {stack.leaked}")
    outcome.command = ".venv/bin/python -m bench.drills broker" + (" --quick" if quick else "")
    return outcome
