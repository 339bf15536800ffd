"""Drill 6, host loss: two worker hosts on one Redis and one S3; one vanishes (every process of it killed at once).

Each host has its own ``YOLOQ_HOME`` and ``YOLOQ_HOSTNAME`` (``drill-host-a``, ``drill-host-b``), its GPU workers and a
supervisor; host A's supervisor is the leader. A starts training jobs on all its GPUs; then B starts, one training of
its own on one GPU and the rest idle. Once every job of A has published a checkpoint, each process group of A (its
workers with their pool children, job and standby processes, its supervisor, and a plain Celery worker running a long
task) gets SIGKILL in one loop. Then: A's jobs run again on B, each from the checkpoint that was the newest in S3 at the
loss (its ``resume`` event), B's job is untouched; A's GPU claims expire and ``status`` lists neither A's GPUs nor a
job running there; B's supervisor takes the lead; every job ends ``succeeded`` exactly once. Baseline, same run: the
plain task of A's plain worker, with a plain worker idle on B and yoloq's visibility timeout.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from bench.drills import crash_kit as kit
from bench.drills.outcome import Outcome, spread
from bench.drills.plain_sleep import QUEUE, TASK, create_app, runs
from infra.processes import ManagedProcess
from tasks.records import JobRecord
from tasks.states import TERMINAL, JobState

A, B = "drill-host-a", "drill-host-b"
TARGET_S = 120.0


@dataclass(frozen=True)
class Size:
    """A's and B's GPUs, each training's epochs, the lease, claim and leader TTLs."""

    a_gpus: int
    b_gpus: int
    epochs: int
    lease_ttl_s: float
    worker_ttl_s: float
    leader_ttl_s: float


QUICK = Size(a_gpus=1, b_gpus=2, epochs=3, lease_ttl_s=3.0, worker_ttl_s=3.0, leader_ttl_s=3.0)
FULL = Size(a_gpus=2, b_gpus=3, epochs=5, lease_ttl_s=15.0, worker_ttl_s=15.0, leader_ttl_s=10.0)


def vanish(groups: list[ManagedProcess]) -> float:
    """SIGKILL every process group in one loop (nothing gets to react to the others dying); returns when."""
    at = time.time()
    for proc in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    for proc in groups:
        proc.proc.wait(10)
        proc.stop()
    return at


def gpus(n: int) -> str:
    """A simulated inventory of ``n`` A100s."""
    return ",".join(f"{i}:A100:40" for i in range(n))


def on(record: JobRecord, host: str) -> bool:
    """Whether the job's current attempt runs on ``host``."""
    return record.state is JobState.RUNNING and str(record.worker).endswith(f"@{host}")


def _start_host(stack: kit.Stack, name: str, count: int, size: Size) -> kit.Host:
    host = stack.host(gpus(count), name)
    host.start_all()
    host.services.start_supervisor("--leader-ttl", str(size.leader_ttl_s))
    return host


def _clean(stack: kit.Stack) -> bool:
    """``status`` lists no GPU of A and no job running there."""
    status = stack.client.status()
    gone = not any(g.get("host") == A for g in status["gpus"])
    return gone and not any(str(r["worker"]).endswith(f"@{A}") for r in status["running"])


@dataclass
class Scene:
    """What runs when A vanishes: A's process groups, A's jobs, B's job, and the plain task's token."""

    groups_a: list[ManagedProcess]
    jobs_a: list[str]
    job_b: str
    token: str


def _setup(stack: kit.Stack, size: Size) -> Scene:
    """A with its trainings and its plain worker's task running, then B with one training of its own."""
    data = kit.dataset(stack.services.settings.home / "data", seed=6)
    host_a = _start_host(stack, A, size.a_gpus, size)
    plain_a, token = stack.plain_worker("plain-a"), uuid.uuid4().hex
    create_app(stack.services.settings).send_task(TASK, args=[token, 3600], queue=QUEUE)
    kit.poll(lambda: runs(stack.redis, token), 60, "the plain task running on A")
    leader = f"{A}:{host_a.services.supervisors[0].pid}"
    kit.poll(lambda: stack.redis.get("yoloq:leader:supervisor") == leader, 60, "A's supervisor leading")
    jobs_a = [
        stack.client.submit(kit.train_spec(data, size.epochs, f"hostloss-a{n}")).job_id for n in range(size.a_gpus)
    ]
    kit.poll(lambda: all(on(r, A) for r in stack.client.registry.many(jobs_a)), 120, "A's jobs running on A")
    _start_host(stack, B, size.b_gpus, size)
    stack.plain_worker("plain-b")
    job_b = stack.client.submit(kit.train_spec(data, size.epochs, "hostloss-b")).job_id
    kit.poll(lambda: on(stack.client.job(job_b), B), 120, "B's job running on B")
    kit.poll(lambda: all(r.checkpoint for r in stack.client.registry.many(jobs_a)), 180, "a checkpoint of each A job")
    groups = [*host_a.services.workers.values(), *host_a.services.supervisors, plain_a]
    host_a.services.workers.clear()  # they are gone after the loss: nothing to stop at the end
    host_a.services.supervisors.clear()
    return Scene(groups, jobs_a, job_b, token)


def _after(stack: kit.Stack, at: float, size: Size) -> dict[str, float]:
    """Seconds from the loss until A's claims were gone, ``status`` was clean of A, and B's supervisor led: each
    condition polled in one loop, so each time is its own."""
    checks: dict[str, Callable[[], bool]] = {
        "claims_expired_s": lambda: not any(c.get("host") == A for c in stack.client.status()["gpus"]),
        "status_clean_s": lambda: _clean(stack),
        "leader_moved_s": lambda: str(stack.redis.get("yoloq:leader:supervisor") or "").startswith(f"{B}:"),
    }
    seen: dict[str, float] = {}
    deadline = time.monotonic() + max(size.worker_ttl_s, size.lease_ttl_s, size.leader_ttl_s) * 4 + 60
    while len(seen) < len(checks):
        for name, check in checks.items():
            if name not in seen and check():
                seen[name] = round(time.time() - at, 1)
        if time.monotonic() > deadline:
            raise TimeoutError(f"after the loss, still not: {sorted(set(checks) - set(seen))}")
        time.sleep(0.1)
    return seen


def _check_jobs(
    outcome: Outcome, records: dict[str, JobRecord], newest: dict[str, str | None], at: float
) -> list[float]:
    """A's jobs ran again on B from their newest checkpoints; returns the seconds from the loss to each one's run."""
    times = []
    for job_id, key in newest.items():
        record = records[job_id]
        runs_now = kit.started(record)
        if not outcome.check(len(runs_now) >= 2, f"{job_id} never ran again after A vanished"):
            continue
        times.append(runs_now[1][0] - at)
        worker = str(record.attempts[1].worker)
        outcome.check(worker.endswith(f"@{B}"), f"{job_id} ran again on {worker}, not on {B}")
        got = kit.resumed_from(record, 1)
        outcome.check(got == key and key is not None, f"{job_id} resumed from {got}; newest at the loss: {key}")
    return times


def run(quick: bool) -> Outcome:
    """The drill at its quick or full size."""
    size = QUICK if quick else FULL
    outcome = Outcome(name="hostloss", jobs=size.a_gpus + 1, recovery="host gone → its jobs running on the other host",
                      faults=f"host A ({size.a_gpus} GPUs, supervisor leader, plain worker) killed at once; host B "
                             f"{size.b_gpus} GPUs, lease {size.lease_ttl_s:.0f} s")  # fmt: skip
    update = {"lease_ttl_s": size.lease_ttl_s, "worker_ttl_s": size.worker_ttl_s}
    with kit.drill_stack("yoloq-drill-hostloss-", **update) as stack:
        scene = _setup(stack, size)
        before = {r.job_id: r for r in stack.client.registry.many(scene.jobs_a)}
        at = vanish(scene.groups_a)
        newest = {job_id: kit.newest_checkpoint(stack.store, r) for job_id, r in before.items()}
        timings = _after(stack, at, size)
        ids = [*scene.jobs_a, scene.job_b]
        kit.poll(lambda: all(r.state in TERMINAL for r in stack.client.registry.many(ids)), 600, "every job finished")
        records = {r.job_id: r for r in stack.client.registry.many(ids)}
        plain = runs(stack.redis, scene.token)
        watched = round(time.time() - at, 1)
        left = kit.leftovers(stack, list(records.values()))
    outcome.check(not left, f"{len(left)} messages of finished jobs still in the broker (in their tier's depth)")
    times = _check_jobs(outcome, records, newest, at)
    lost, duplicated, problems = kit.judge(list(records.values()))
    outcome.lost, outcome.duplicated, outcome.problems = lost, duplicated, outcome.problems + problems
    outcome.check(
        len(records[scene.job_b].attempts) == 1, f"B's own job was disturbed: {records[scene.job_b].attempts}"
    )
    outcome.recovered = sum(1 for j in scene.jobs_a if records[j].state is JobState.SUCCEEDED)
    outcome.recover_s = spread(times)
    outcome.check(bool(times) and max(times) <= TARGET_S, f"time to resume {outcome.recover_s} (target ≤ {TARGET_S} s)")
    again = round(plain[1]["start"] - at, 1) if len(plain) > 1 else None
    outcome.baseline = {
        "plain Celery (A's task, B's worker idle)": f"redelivered after {again} s"
        if again
        else f"not redelivered in {watched} s (due after {stack.services.settings.visibility_timeout_s} s)"
    }
    outcome.figures |= {**timings, "newest_at_loss": newest, "resume_s_each": [round(t, 1) for t in times]}
    outcome.check(not stack.leaked, f"processes outlived the drill: {stack.leaked}")
    outcome.command = ".venv/bin/python -m bench.drills hostloss" + (" --quick" if quick else "")
    return outcome
