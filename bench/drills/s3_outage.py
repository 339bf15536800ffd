"""Drill 4, S3 outage during checkpoint uploads: SeaweedFS stopped for tens of seconds while real YOLO trainings
(yolov8n.yaml, imgsz 64, a checkpoint every epoch) publish their checkpoints, then started again on the same ports
and data folder.

Checked, from the registry and the bucket: no job fails or stops during the outage and every job keeps training (its
epoch advances while S3 is down); the uploads refused meanwhile are retried with backoff and land once S3 answers
(the job's ``checkpoint`` events say after how many failed tries); every object any manifest names (newest,
previous, kept) exists after each outage and at the end; every job ends ``succeeded`` exactly once. Then one job is
preempted and must resume from the checkpoint that was the newest in S3 when it yielded: the checkpoints written
around the outage are usable. The full size has two outages, the second by ``kill -9``.

Baseline: what a plain Celery task that uploads its checkpoint with boto3 meets, measured here under the same outage
with the same S3 adapter and client settings (its three botocore tries): the upload raises, so the task fails, and
an ``acks_late`` task that raised is acknowledged, not retried, unless its author adds ``autoretry_for`` and backoff.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.drills import crash_kit as kit
from bench.drills.outcome import Outcome, spread
from infra.local_s3 import S3Service
from infra.processes import ManagedProcess
from infra.s3 import S3Store
from tasks.checkpoints import CheckpointStore
from tasks.errors import StorageError
from tasks.records import Event, JobRecord, parse_iso
from tasks.states import TERMINAL, JobState
from yoloq.client import JobHandle

PUBLISHED = re.compile(r": (jobs/\S+\.pt) \(")  # the key in a ``checkpoint`` event's reason
MIN_DOWN_S = 4.0
LAND_BOUND_S = 60.0  # once S3 answers, every running job's newest checkpoint is in it within this


@dataclass(frozen=True)
class Size:
    """Trainings (one per GPU), their epochs, and each outage: seconds down and whether by ``kill -9``."""

    gpus: int
    epochs: int
    outages: tuple[tuple[float, bool], ...]
    enough_epochs: int = 0  # >0: an outage ends early (after MIN_DOWN_S) once every job finished this many during it


QUICK = Size(gpus=1, epochs=20, outages=((30.0, False),), enough_epochs=2)  # CPU epochs take 1-10 s here
FULL = Size(gpus=2, epochs=40, outages=((40.0, False), (30.0, True)))


@dataclass
class Outage:
    """One fault and what the jobs did through it."""

    n: int
    hard: bool
    stopped_at: float = 0.0
    back_at: float = 0.0
    before: dict[str, tuple[int, int]] = field(default_factory=dict)  # (epochs done, batches) at the stop
    after: dict[str, tuple[int, int]] = field(default_factory=dict)  # the same at the end of the outage
    failed_during: list[str] = field(default_factory=list)
    landed_s: dict[str, float | None] = field(default_factory=dict)  # S3 back -> the job's newest epoch in S3
    gaps: list[str] = field(default_factory=list)  # manifest entries whose object is missing
    plain: str = ""  # what a plain upload met during the outage


def restart_s3(s3: S3Service, store: S3Store, down_s: float, hard: bool, meanwhile: Callable[[], None]) -> float:
    """Stop SeaweedFS (SIGTERM, or ``kill -9`` when ``hard``), call ``meanwhile`` (it returns when the outage should
    end), start the same command again (same ports, keys and data folder); returns when S3 answered again."""
    proc = s3.process
    argv, log = [str(a) for a in proc.proc.args], proc.log_path  # type: ignore[union-attr]
    if hard:
        kit.kill9(proc)
    else:
        proc.stop(15)
    meanwhile()
    s3.process = ManagedProcess("s3", argv, log)

    def answers() -> bool:
        with contextlib.suppress(StorageError):
            store.list_objects("jobs/")
            return True
        return False

    kit.poll(answers, 60, "S3 answering again", interval_s=0.1)
    return time.time()


def manifest_gaps(store: S3Store, job_id: str) -> list[str]:
    """Every key the job's manifest names (newest, previous, kept, entries) that is not an object in the bucket."""
    manifest = CheckpointStore(store, job_id).manifest()
    named = {e["key"] for e in (manifest.get("newest"), manifest.get("previous")) if isinstance(e, dict)}
    named |= {k for k in manifest.get("kept", []) if isinstance(k, str)}
    named |= {str(e.get("key")) for e in (manifest.get("entries") or {}).values() if isinstance(e, dict)}
    present = {key for key, *_ in store.list_objects(f"jobs/{job_id}/checkpoints/")}
    return sorted(f"{job_id}: {key}" for key in named - present)


def _progress(records: list[JobRecord]) -> dict[str, tuple[int, int]]:
    """(epochs done, batches trained) of each running job, by its progress."""
    out = {}
    for r in records:
        p = {k: int(v) for k, v in r.progress.items() if k in ("epoch", "batch", "batches")}
        if r.state is JobState.RUNNING:
            out[r.job_id] = (p.get("epoch", 0), p.get("epoch", 0) * p.get("batches", 0) + p.get("batch", 0))
    return out


def _newest_epoch(store: S3Store, job_id: str) -> int:
    newest = CheckpointStore(store, job_id).manifest().get("newest")
    return int(newest["epoch"]) if isinstance(newest, dict) else -1


def _trained(stack: kit.Stack, outage: Outage, ids: list[str], enough: int) -> bool:
    """With ``enough``: whether MIN_DOWN_S has passed and every job finished ``enough`` epochs since the stop."""
    if not enough or time.time() - outage.stopped_at < MIN_DOWN_S:
        return False
    now = _progress(stack.client.registry.many(ids))
    return bool(now) and all(e - outage.before.get(j, (e, 0))[0] >= enough for j, (e, _) in now.items())


def _plain_upload(stack: kit.Stack) -> str:
    """A plain upload with the S3 adapter as it is (botocore's own three tries): how it ends, and after how long."""
    started = time.monotonic()
    try:
        S3Store(stack.services.settings).put_bytes("drill/plain-task-checkpoint.pt", b"plain")
    except StorageError as err:
        return f"StorageError after {time.monotonic() - started:.1f} s: {str(err)[:90]}"
    return f"succeeded after {time.monotonic() - started:.1f} s"


def one_outage(stack: kit.Stack, handles: list[JobHandle], n: int, down: tuple[float, bool, int],
               at_back: Callable[[], None] = lambda: None) -> Outage:  # fmt: skip
    """Stop S3 (``down``: at most seconds, by kill -9, enough epochs) while the jobs train; measure what went on
    meanwhile, call ``at_back`` as soon as S3 answers, then measure what landed."""
    down_s, hard, enough = down
    ids = [h.job_id for h in handles]
    outage = Outage(n, hard, before=_progress(stack.client.registry.many(ids)))

    def meanwhile() -> None:
        outage.plain = _plain_upload(stack)

        while time.time() < outage.stopped_at + down_s and not _trained(stack, outage, ids, enough):
            time.sleep(0.2)  # the outage itself: it lasts down_s, or until every job trained enough epochs
        records = stack.client.registry.many(ids)
        outage.after = _progress(records)
        outage.failed_during = [f"{r.job_id}: {r.error}" for r in records if r.state is JobState.FAILED]

    outage.stopped_at = time.time()
    outage.back_at = restart_s3(stack.services.s3, stack.store, down_s, hard, meanwhile)
    at_back()
    for job_id, (epoch, _) in outage.after.items():  # each job's checkpoint of its newest epoch must land

        def landed(job: str = job_id, wanted: int = epoch) -> bool:
            record = stack.client.job(job)
            return record.state in TERMINAL or _newest_epoch(stack.store, job) >= wanted

        try:
            kit.poll(landed, LAND_BOUND_S, f"{job_id}'s epoch {epoch} checkpoint in S3", interval_s=0.2)
            outage.landed_s[job_id] = round(time.time() - outage.back_at, 1)
        except TimeoutError:
            outage.landed_s[job_id] = None
    outage.gaps = [gap for job_id in ids for gap in manifest_gaps(stack.store, job_id)]
    return outage


def preempt(stack: kit.Stack, handles: list[JobHandle]) -> dict[str, Any]:
    """Preempt the running job with most epochs left once S3 is back, and note the newest checkpoint in S3 when it
    yielded: it must resume from exactly that one (checked by :func:`resumed_right` at the end)."""
    running = [r for r in stack.client.registry.many([h.job_id for h in handles]) if r.state is JobState.RUNNING
               and int(r.progress.get("epoch", 0)) < int(r.progress.get("epochs", 0)) - 1]  # fmt: skip
    if not running:
        return {"problem": "no job still training to preempt once S3 was back (more epochs needed)"}
    victim = min(running, key=lambda r: int(r.progress.get("epoch", 0)))
    asked, task_id = time.time(), victim.attempts[-1].task_id
    stack.client.preempt(victim.job_id, reason="drill: the checkpoints written around the outage must resume")

    def yielded() -> JobRecord | None:
        record = stack.client.job(victim.job_id)
        return record if any(a.task_id == task_id and a.ended_at for a in record.attempts) else None

    record = kit.poll(yielded, 120, f"{victim.job_id} to yield")
    ended = next(a.ended_at for a in record.attempts if a.task_id == task_id)
    newest = _published_before_yield(record, asked)
    return {"job": victim.job_id, "newest_when_it_yielded": newest, "next_attempt": len(kit.started(victim)),
            "in_store": bool(newest) and kit.in_store(stack.store, str(newest)), "asked_at": asked,
            "yield_s": round(parse_iso(str(ended)).timestamp() - asked, 1)}  # fmt: skip


def _published_before_yield(record: JobRecord, asked: float) -> str | None:
    """The key of the last checkpoint the job recorded as published before the preemption asked at ``asked``
    requeued it (its attempt waits for the upload before it yields, so this was the newest in S3 then)."""
    newest = None
    for event in record.events:
        if event.type == "preempted" and parse_iso(event.at).timestamp() >= asked:
            return newest
        if event.type == "checkpoint" and (found := PUBLISHED.search(event.reason or "")):
            newest = found.group(1)
    return None


def resumed_right(preempted: dict[str, Any], records: dict[str, JobRecord]) -> str:
    """'' when the preempted job's next attempt resumed from the newest checkpoint at its yield, else why not."""
    if "job" not in preempted:
        return str(preempted.get("problem"))
    record = records[preempted["job"]]
    runs, nxt = kit.started(record), preempted["next_attempt"]
    preempted["running_again_s"] = round(runs[nxt][0] - preempted["asked_at"], 1) if len(runs) > nxt else None
    got, newest = kit.resumed_from(record, nxt), preempted["newest_when_it_yielded"]
    preempted["resumed_from"] = got
    if not preempted["in_store"]:
        return f"{record.job_id}: its newest checkpoint at the yield, {newest}, is not in the store"
    return "" if newest and got == newest else f"{record.job_id} resumed from {got}, the newest was {newest}"


def _tries(event: Event) -> int:
    """The failed tries a ``checkpoint`` event says its upload took (0: none)."""
    return int(getattr(event, "failed_tries", None) or 0)


def _score(outcome: Outcome, outages: list[Outage], records: dict[str, JobRecord], preempted: dict[str, Any]) -> None:
    """Fill the outcome: training went on, uploads retried and landed, no dangling manifest entry, the resume."""
    lost, duplicated, problems = kit.judge(list(records.values()))
    outcome.jobs, outcome.lost, outcome.duplicated = len(records), lost, duplicated
    outcome.problems += problems
    for o in outages:
        outcome.check(not o.failed_during, f"outage {o.n}: jobs failed while S3 was down: {o.failed_during}")
        stalled = [j for j, (_, b) in o.after.items() if b <= o.before.get(j, (0, b))[1]]
        outcome.check(not stalled and bool(o.after), f"outage {o.n}: no batch trained while S3 was down by "
                                                            f"{stalled or 'any job'}")  # fmt: skip
        late = [j for j, t in o.landed_s.items() if t is None]
        outcome.check(not late, f"outage {o.n}: newest checkpoint not in S3 {LAND_BOUND_S:.0f} s after: {late}")
        outcome.check(not o.gaps, f"outage {o.n}: manifests name missing objects: {o.gaps}")
    retried = [e for r in records.values() for e in r.events if e.type == "checkpoint" and _tries(e) > 0]
    outcome.check(bool(retried), "no checkpoint upload was retried (the outage missed every upload?)")
    outcome.check(not (why := resumed_right(preempted, records)), f"preempt after the outage: {why}")
    landed = [t for o in outages for t in o.landed_s.values() if t is not None]
    outcome.recover_s = spread(landed)
    outcome.recovered = len({j for o in outages for j in o.after if records[j].state is JobState.SUCCEEDED})
    outcome.figures |= {
        "outages_s": [round(o.back_at - o.stopped_at, 1) for o in outages], "kill9": sum(o.hard for o in outages),
        "batches_trained_while_down": [{j[-6:]: a[1] - o.before.get(j, (0, 0))[1] for j, a in o.after.items()}
                                       for o in outages],
        "epochs_done_while_down": [{j[-6:]: a[0] - o.before.get(j, (0, 0))[0] for j, a in o.after.items()}
                                   for o in outages],
        "uploads_retried": len(retried), "failed_tries_max": max((_tries(e) for e in retried),
                                                                 default=0),
        "landed_after_s_each": landed, "preempt": {k: v for k, v in preempted.items() if k != "asked_at"},
        "attempts": sum(len(r.attempts) for r in records.values()),
    }  # fmt: skip
    outcome.baseline = {"plain upload during the outage": sorted({o.plain for o in outages}),
                        "plain Celery task": "the upload raises, the task fails; acks_late acks a failed task, so "
                        "nothing retries it unless autoretry_for/retry_backoff are added, and the training in that "
                        "task is lost from its last upload"}  # fmt: skip


def run(quick: bool) -> Outcome:
    """The drill at its quick or full size."""
    size = QUICK if quick else FULL
    kinds = ", ".join(f"{s:.0f} s{' (kill -9)' if hard else ''}" for s, hard in size.outages)
    outcome = Outcome(name="s3", jobs=0, recovery="S3 back → each job's newest checkpoint in S3",
                      faults=f"SeaweedFS stopped {kinds} during {size.gpus} trainings (checkpoint each epoch), then "
                             "one job preempted")  # fmt: skip
    with kit.drill_stack("yoloq-drill-s3-") as stack:
        data = kit.dataset(stack.services.settings.home / "data", seed=4)
        host = stack.host(",".join(f"{i}:A100:40" for i in range(size.gpus)))
        host.start_all()
        handles = [stack.client.submit(kit.train_spec(data, size.epochs, f"s3-train-{i}")) for i in range(size.gpus)]
        ids = [h.job_id for h in handles]
        kit.poll(
            lambda: (
                len(_progress(stack.client.registry.many(ids))) == len(ids)
                and all(b > 0 for _, b in _progress(stack.client.registry.many(ids)).values())
            ),
            240,
            "every job training",
        )
        preempted: dict[str, Any] = {}
        last = len(size.outages) - 1  # as soon as S3 is back from the last outage, one job is preempted
        outages = []
        for n, (down_s, hard) in enumerate(size.outages):
            at_back = (lambda: preempted.update(preempt(stack, handles))) if n == last else (lambda: None)
            outages.append(one_outage(stack, handles, n, (down_s, hard, size.enough_epochs), at_back))
        kit.poll(lambda: all(r.state in TERMINAL for r in stack.client.registry.many(ids)), 600, "every job finished")
        gaps = [gap for job_id in ids for gap in manifest_gaps(stack.store, job_id)]
        records = {r.job_id: r for r in stack.client.registry.many(ids)}
    _score(outcome, outages, records, preempted)
    outcome.check(not gaps, f"at the end, manifests name missing objects: {gaps}")
    outcome.check(not stack.leaked, f"processes outlived the drill: {stack.leaked}")
    outcome.command = ".venv/bin/python -m bench.drills s3" + (" --quick" if quick else "")
    return outcome
