"""Drill 1, worker crashes: ``kill -9`` a random busy worker again and again under a mixed load of real YOLO training
and probe jobs, restarting it each time.

A fleet of simulated GPUs runs low-tier yolov8n trainings (imgsz 64, a checkpoint every epoch) and probes, topped up
so that every GPU is busy before each kill. A victim is a running job (one that has published a checkpoint when there
is one); its worker's whole process group (main process, pool child, job and standby processes) gets SIGKILL and a
new worker starts for that GPU. From the registry: every job ends ``succeeded`` exactly once with no two attempts live
at once; each crashed training attempt's successor resumed from the checkpoint that was the newest in S3 at the kill
(its ``resume`` event; none when there was none), and each probe's last attempt from the step it had saved; and the
seconds from the kill to the job's next attempt running. Baseline, same run and Redis: a plain Celery ``acks_late``
task whose worker is killed the same way, with yoloq's visibility timeout (7 days) and with a short one.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from bench.drills import crash_kit as kit
from bench.drills.outcome import Outcome, spread
from bench.drills.plain_sleep import QUEUE, TASK, create_app, runs
from infra.redis_client import connect
from tasks.records import JobRecord
from tasks.specs import ProbeSpec
from tasks.states import TERMINAL, JobState
from yoloq.client import JobHandle

TARGET_S = 120.0  # issue 17: a crashed job runs again within 2 minutes


@dataclass(frozen=True)
class Size:
    """How big one run is: GPUs, kills, each training's epochs and each probe's seconds, the lease and claim TTLs,
    and the short visibility timeout of the second plain baseline."""

    gpus: int
    kills: int
    epochs: int
    probe_s: int
    lease_ttl_s: float
    worker_ttl_s: float
    plain_visibility_s: float


QUICK = Size(gpus=2, kills=3, epochs=3, probe_s=12, lease_ttl_s=3.0, worker_ttl_s=3.0, plain_visibility_s=10.0)
FULL = Size(gpus=3, kills=20, epochs=6, probe_s=40, lease_ttl_s=15.0, worker_ttl_s=15.0, plain_visibility_s=60.0)


@dataclass
class Kill:
    """One fault: the job whose worker was killed, which of its started attempts died, its newest checkpoint at the
    kill, and when the kill and the next attempt's start happened (wall clock)."""

    job_id: str
    kind: str
    attempt: int
    newest: str | None
    at: float
    resumed_at: float | None = None


class Load:
    """Training and probe jobs, alternating, kept at ``inflight`` unfinished."""

    def __init__(self, stack: kit.Stack, data: str, size: Size) -> None:
        self.stack, self.data, self.size = stack, data, size
        self.handles: list[JobHandle] = []

    def records(self) -> list[JobRecord]:
        """Every submitted job's record now."""
        return self.stack.client.registry.many([h.job_id for h in self.handles])

    def top_up(self, inflight: int) -> int:
        """Submit until ``inflight`` jobs are unfinished (train, probe, train, ...); returns how many it submitted."""
        unfinished = sum(1 for r in self.records() if r.state not in TERMINAL)
        for _ in range(inflight - unfinished):
            n = len(self.handles)
            spec = (kit.train_spec(self.data, self.size.epochs, f"crash-train-{n}")
                    if n % 2 == 0 else ProbeSpec(seconds=self.size.probe_s, tier="low", team="drill",
                                                 name=f"crash-probe-{n}"))  # fmt: skip
            self.handles.append(self.stack.client.submit(spec))
        return max(0, inflight - unfinished)


def _victim(load: Load, rng: random.Random, kind: str, patient: bool) -> JobRecord | None:
    """A random running job on a live attempt: one of ``kind`` with a checkpoint while ``patient``, then one with a
    checkpoint, then any (None: nothing runs yet)."""
    running = [r for r in load.records() if r.state is JobState.RUNNING and r.attempts[-1].started_at and r.worker]
    checkpointed = [r for r in running if r.checkpoint]
    pool = [r for r in checkpointed if r.kind == kind] if patient else checkpointed or running
    return rng.choice(pool) if pool else None


def _next_attempt(stack: kit.Stack, job_id: str, started_before: int) -> JobRecord | None:
    """The record once the job's next attempt has started (or it ended without one), else None."""
    record = stack.client.job(job_id)
    return record if len(kit.started(record)) > started_before or record.state in TERMINAL else None


def one_kill(stack: kit.Stack, host: kit.Host, load: Load, rng: random.Random, kind: str) -> Kill:
    """Fill every GPU, kill a random busy worker (running a checkpointed job of ``kind`` if one turns up within a
    minute), restart it; returns the fault once the job runs again."""
    deadline = time.monotonic() + 60
    while load.top_up(load.size.gpus) or (victim := _victim(load, rng, kind, time.monotonic() < deadline)) is None:
        time.sleep(0.2)
    index = int(str(victim.worker).split("@")[0].removeprefix("gpu"))
    attempt = len(kit.started(victim)) - 1
    at = host.kill9(index)
    kill = Kill(victim.job_id, victim.kind, attempt, kit.newest_checkpoint(stack.store, victim), at)
    host.start(index)
    record = kit.poll(lambda: _next_attempt(stack, victim.job_id, attempt + 1), 300, f"{victim.job_id} running again")
    runs_now = kit.started(record)
    if len(runs_now) > attempt + 1:
        kill.resumed_at = runs_now[attempt + 1][0]
    kit.poll(lambda: host.ready(index), 120, f"worker {index} back")
    return kill


def plain_crash(stack: kit.Stack, visibility_s: float | None, db: int, done: threading.Event) -> dict[str, Any]:
    """Plain Celery on Redis database ``db``: start a long acks_late task, kill -9 its worker, restart it; seconds
    until the task runs again (None: not within the rest of the drill)."""
    name = f"plain-db{db}"
    worker = stack.plain_worker(name, visibility_s, db)
    settings = stack.plain_settings(db)
    app, token, client = create_app(settings), uuid.uuid4().hex, connect(settings.redis_url)
    app.send_task(TASK, args=[token, 3600], queue=QUEUE)
    kit.poll(lambda: runs(client, token), 60, f"{name}'s task running")
    at = kit.kill9(worker)
    stack.plain_worker(name, visibility_s, db)
    while len(found := runs(client, token)) < 2 and not done.wait(0.2):
        pass
    if len(found) < 2:
        found = runs(client, token)
    again = round(found[1]["start"] - at, 1) if len(found) >= 2 else None
    setting = visibility_s or stack.services.settings.visibility_timeout_s
    return {"visibility_timeout_s": setting, "redelivered_after_s": again, "watched_s": round(time.time() - at, 1)}


def _in_thread(into: list[dict[str, Any]], slot: int, call: Callable[[], dict[str, Any]]) -> threading.Thread:
    """Run ``call`` in a started thread; its result (or its error) lands in ``into[slot]``."""

    def body() -> None:
        try:
            into[slot] = call()
        except Exception as err:  # a broken baseline is reported in the row, never the end of the drill
            into[slot] = {"error": f"{type(err).__name__}: {err}"}

    thread = threading.Thread(target=body, daemon=True, name=f"plain-baseline-{slot}")
    thread.start()
    return thread


def _check_resumes(outcome: Outcome, kills: list[Kill], records: dict[str, JobRecord]) -> None:
    """Each crashed training attempt's successor resumed from the newest checkpoint at the kill; each probe's last
    attempt from the step saved at its last kill."""
    last_probe_kill: dict[str, Kill] = {}
    killed = {(k.job_id, k.attempt) for k in kills}
    for kill in (k for k in kills if k.resumed_at is not None):  # a kill that found its job just ended hit no attempt
        record = records[kill.job_id]
        if kill.kind == "probe":
            last_probe_kill[kill.job_id] = kill
            continue
        got = kit.resumed_from(record, kill.attempt + 1)
        if got is None and (kill.job_id, kill.attempt + 1) in killed and not kit.chose_start(record, kill.attempt + 1):
            continue  # the successor was killed too before it chose a checkpoint: the next kill's check covers it
        outcome.check(got == kill.newest, f"{kill.job_id}: attempt {kill.attempt + 2} resumed from {got}, "
                                          f"the newest checkpoint at the kill was {kill.newest}")  # fmt: skip
    for job_id, kill in last_probe_kill.items():
        result = records[job_id].result or {}
        saved = int((kill.newest or "step 0").split()[1])
        got = result.get("resumed_from")
        outcome.check(got == saved, f"{job_id}: its last attempt resumed from step {got}, the kill left step {saved}")


def _baseline(plain: list[dict[str, Any]], p50: float) -> dict[str, Any]:
    """The plain Celery rows: when each killed task ran again, and how that compares with yoloq's p50."""
    week, short = plain
    if "error" in week or "error" in short:
        return {"note": f"baseline failed: {week.get('error') or short.get('error')}"}
    at_week = f"not redelivered in {week['watched_s']} s (due after {week['visibility_timeout_s']} s)"
    if week["redelivered_after_s"] is not None:
        at_week = f"redelivered after {week['redelivered_after_s']} s"
    again = short["redelivered_after_s"]
    return {
        f"visibility {week['visibility_timeout_s']} s (yoloq's)": at_week,
        f"visibility {short['visibility_timeout_s']:.0f} s": f"redelivered after {again} s",
        "ratio": f"{week['visibility_timeout_s'] / p50:.0f}x at yoloq's timeout, "
                 f"{(again or float('nan')) / p50:.1f}x at {short['visibility_timeout_s']:.0f} s",
    }  # fmt: skip


def _score(outcome: Outcome, kills: list[Kill], records: dict[str, JobRecord], plain: list[dict[str, Any]]) -> None:
    """Fill the outcome: jobs, lost/duplicated, resumes, recovery times and the baseline with its ratio."""
    lost, duplicated, problems = kit.judge(list(records.values()))
    outcome.jobs, outcome.lost, outcome.duplicated = len(records), lost, duplicated
    outcome.problems += problems
    _check_resumes(outcome, kills, records)
    times = [k.resumed_at - k.at for k in kills if k.resumed_at is not None]
    outcome.recovered = len({k.job_id for k in kills if records[k.job_id].state is JobState.SUCCEEDED})
    outcome.recover_s = spread(times)
    outcome.check(bool(times) and max(times) <= TARGET_S, f"time to resume {outcome.recover_s} (target ≤ {TARGET_S} s)")
    outcome.baseline = _baseline(plain, outcome.recover_s.get("p50") or float("nan"))
    outcome.figures |= {
        "kills": len(kills), "kills_on_training": sum(k.kind == "train" for k in kills),
        "kills_with_checkpoint": sum(k.newest is not None for k in kills),
        "kills_after_the_job_ended": sum(k.resumed_at is None for k in kills),
        "recover_s_each": [round(t, 1) for t in times], "attempts": sum(len(r.attempts) for r in records.values()),
        "plain": plain,
    }  # fmt: skip


def run(quick: bool) -> Outcome:
    """The drill at its quick or full size."""
    size = QUICK if quick else FULL
    outcome = Outcome(name="crash", jobs=0, recovery="kill → the job's next attempt running",
                      faults=f"{size.kills} × kill -9 of a busy worker's process group, {size.gpus} GPUs, "
                             f"trainings + probes, lease {size.lease_ttl_s:.0f} s")  # fmt: skip
    rng = random.Random(17)
    with kit.drill_stack("yoloq-drill-crash-", lease_ttl_s=size.lease_ttl_s, worker_ttl_s=size.worker_ttl_s) as stack:
        data = kit.dataset(stack.services.settings.home / "data", seed=17)
        host = stack.host(",".join(f"{i}:A100:40" for i in range(size.gpus)))
        host.start_all()
        done, plain = threading.Event(), [{"error": "not run"}, {"error": "not run"}]
        visibility: tuple[float | None, ...] = (None, size.plain_visibility_s)
        baselines = [_in_thread(plain, i, partial(plain_crash, stack, v, i, done))
                     for i, v in enumerate(visibility)]  # fmt: skip
        load = Load(stack, data, size)
        kills = [one_kill(stack, host, load, rng, ("train", "probe")[n % 2]) for n in range(size.kills)]
        budget = 240 if quick else 900
        kit.poll(lambda: all(r.state in TERMINAL for r in load.records()), budget, "every job finished")
        done.set()
        for thread in baselines:
            thread.join(60)
        records = {r.job_id: r for r in load.records()}
        left = kit.leftovers(stack, list(records.values()))
    outcome.check(not left, f"{len(left)} messages of finished jobs still in the broker (in their tier's depth)")
    _score(outcome, kills, records, plain)
    outcome.check(not stack.leaked, f"processes outlived the drill: {stack.leaked}")
    outcome.command = ".venv/bin/python -m bench.drills crash" + (" --quick" if quick else "")
    return outcome
