"""Where a job stands: its expected runtime and, while it waits, its queue position and start ETA (docs/eta.md).

``yoloq job ID --json`` and ``GET /api/v1/jobs/{id}`` add these fields to the record:
``expected_runtime_s`` (None for a serving replica) and ``expected_runtime_source`` (which step of the fallback chain
in routing/runtime_estimate.py gave it); for a queued job ``queue_position`` (1 = next to start among the jobs that
will start on GPUs it can use) and ``eta_start`` (ISO-8601 UTC), else None, with ``queue_note`` when no live GPU
will take it; for a running job ``remaining_s``. The ETA replays the written order (routing/eta.py) over a
snapshot: the live, ready, uncordoned GPUs, each free when its running job's remaining time ends, and the broker's
own lists (a preempted job waits at its queue's tail).
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from infra.cordon import CordonStore, taking_work
from infra.gang_holds import GangHolds
from infra.presence import GpuClaims
from infra.queue_order import waiting
from infra.runtime_history import RuntimeHistory
from routing.eta import Device, Queued, Standing, standings
from routing.runtime_estimate import Sample, error_summary
from routing.tiers import all_queues
from tasks.errors import YoloqError
from tasks.expected_runtime import estimate, remaining_s, samples
from tasks.records import JobRecord, iso, parse_iso
from tasks.specs import gpus_of
from tasks.states import JobState

if TYPE_CHECKING:
    from yoloq.client import Client

ACTIVE = (JobState.RUNNING, JobState.PREEMPTING)


def job_document(client: Client, record: JobRecord, now: float | None = None) -> dict[str, Any]:
    """The job's record as JSON plus where it stands."""
    return {**record.model_dump(mode="json"), **standing(client, record, time.time() if now is None else now)}


def standing(client: Client, record: JobRecord, now: float) -> dict[str, Any]:
    """Expected runtime, queue position and ETA (None where they do not apply) of one job."""
    history = samples(RuntimeHistory(client.registry.client, client.settings.redis_url).samples())
    guess = estimate(record, history)
    out: dict[str, Any] = {"expected_runtime_s": _round(guess.seconds), "expected_runtime_source": guess.source,
                           "queue_position": None, "eta_start": None}  # fmt: skip
    if record.state is JobState.QUEUED and gpus_of(record.spec) > 1:
        out.update(_gang_standing(client, record))
    elif record.state is JobState.QUEUED:
        placed = queue_standings(client, history, now).get(record.job_id)
        if placed is not None:
            out["queue_position"] = placed.queue_position
            out["eta_start"] = _at(now, placed.eta_start_s)
            if placed.reason:
                out["queue_note"] = placed.reason
    elif record.state in ACTIVE:
        out["remaining_s"] = _round(0.0 if record.state is JobState.PREEMPTING else remaining_s(record, history, now))
    return out


def queue_standings(client: Client, history: list[Sample], now: float) -> dict[str, Standing]:
    """Every queued job's position and ETA from one snapshot of the registry, the live GPUs and the broker's lists."""
    reg = client.registry
    records = reg.in_states((JobState.QUEUED, JobState.RUNNING, JobState.PREEMPTING))  # each job once
    queued = [r for r in records if r.state is JobState.QUEUED]
    active = [r for r in records if r.state is not JobState.QUEUED]
    return standings(_devices(client, active, history, now), _queues(client, queued, history))


def _devices(client: Client, active: list[JobRecord], history: list[Sample], now: float) -> list[Device]:
    """Live, ready, uncordoned GPUs, each free when its job's remaining time ends (at once when it is yielding); a GPU
    held for a gang or a defragmentation is free only once the holder has run on it."""
    url = client.settings.redis_url
    cordons = CordonStore(client.registry.client, url).all()
    on = {r.worker: r for r in active if r.state in ACTIVE}
    holds = {(str(h["host"]), int(g)): h for h in GangHolds(client.registry.client, url).all() for g in h["gpus"]}
    out = []
    for w in taking_work(GpuClaims(client.registry.client, url).live(), cordons):
        gpu = w.get("gpu") or {}
        job = on.get(str(w.get("node")))
        left = 0.0 if job is None or job.state is JobState.PREEMPTING else remaining_s(job, history, now)
        hold = holds.get((str(w.get("host")), int(gpu.get("index", -1))))
        if hold is not None:
            left = _held_left(client, hold, active, left, history=history, now=now)
        out.append(Device(str(w.get("node")), int(gpu.get("memory_mib", 0)), left))
    return out


def _held_left(
    client: Client, hold: dict[str, Any], active: list[JobRecord], left: float, *, history: list[Sample], now: float
) -> float:
    """Seconds until a held GPU takes queued work: the holder's remaining time once it runs; before, the wait for its
    reservation (or for the job on the GPU, a loan) plus its expected runtime."""
    holder = next((r for r in active if r.job_id == hold["job_id"]), None)
    if holder is not None:
        return 0.0 if holder.state is JobState.PREEMPTING else remaining_s(holder, history, now)
    try:
        runtime = estimate(client.registry.get(str(hold["job_id"])), history).seconds
    except YoloqError:
        return left  # the holder is gone: the supervisor releases the hold on its next tick
    return max(left, float(hold.get("start_at") or now) - now) + (math.inf if runtime is None else runtime)


def _queues(client: Client, queued: list[JobRecord], history: list[Sample]) -> dict[str, list[Queued]]:
    """The broker's lists front first, as queued jobs; a queued job whose message no list holds (a worker is taking
    it, or the resender will publish it again) joins its queue's end in submit order."""
    by_task = {r.attempts[-1].task_id: r for r in queued if r.attempts}
    out: dict[str, list[Queued]] = {}
    seen: set[str] = set()
    for queue, messages in waiting(client.registry.client, all_queues(), client.settings.redis_url).items():
        for task_id, _ in messages:
            record = by_task.get(task_id)
            if record is not None and record.job_id not in seen:
                seen.add(record.job_id)
                out.setdefault(queue, []).append(_queued(record, queue, history))
    for record in sorted(queued, key=lambda r: (r.submitted_at, r.job_id)):
        if record.job_id not in seen and gpus_of(record.spec) == 1:  # gangs: placed by the supervisor, not a queue
            out.setdefault(record.queue, []).append(_queued(record, record.queue, history))
    return out


def _gang_standing(client: Client, record: JobRecord) -> dict[str, Any]:
    """A waiting gang has no place in a tier queue: it says whether GPUs are held for it and when they are expected
    free together (workers/gangs.py)."""
    k = gpus_of(record.spec)
    hold = GangHolds(client.registry.client, client.settings.redis_url).get(record.job_id)
    if hold is None:
        most = _most_fitting_on_one_host(client, record.memory_mib)
        if most < k:
            return {"queue_note": f"a gang of {k} GPUs of {record.memory_mib} MiB: no live host has that many "
                                  f"(at most {most}); it waits for such a host"}  # fmt: skip
        return {"queue_note": f"a gang of {k} GPUs: the supervisor holds {k} GPUs of one host for it when it is first "
                              "in line among gangs and they can be free together"}  # fmt: skip
    gpus = ",".join(str(g) for g in hold.get("gpus", []))
    at = float(hold.get("start_at") or 0.0)
    return {"queue_note": f"GPUs {gpus} of {hold.get('host')} held for it: {hold.get('reason', '')}",
            "eta_start": iso(datetime.fromtimestamp(at, UTC)) if at else None}  # fmt: skip


def _most_fitting_on_one_host(client: Client, need_mib: int) -> int:
    """How many GPUs that take work and fit ``need_mib`` the best-stocked host has."""
    reg, url = client.registry.client, client.settings.redis_url
    hosts: dict[str, int] = {}
    for w in taking_work(GpuClaims(reg, url).live(), CordonStore(reg, url).all()):
        if int(w["gpu"]["memory_mib"]) >= need_mib:
            hosts[str(w["host"])] = hosts.get(str(w["host"]), 0) + 1
    return max(hosts.values(), default=0)


def _queued(record: JobRecord, queue: str, history: list[Sample]) -> Queued:
    return Queued(record.job_id, queue, parse_iso(record.submitted_at).timestamp(), estimate(record, history).seconds)


def _at(now: float, offset_s: float | None) -> str | None:
    return None if offset_s is None else iso(datetime.fromtimestamp(now + offset_s, UTC))


def _round(seconds: float | None) -> float | None:
    return None if seconds is None or math.isinf(seconds) else round(seconds, 1)


def prediction_report(client: Client) -> dict[str, Any]:
    """How far the runtime predictions of the newest finished jobs were off (``yoloq sla --json``'s
    ``runtime_prediction``; the same ratios feed ``yoloq_runtime_prediction_error_ratio`` on /metrics)."""
    rows = RuntimeHistory(client.registry.client, client.settings.redis_url).errors()
    pairs = [(str(r.get("source", "?")), float(r["error_ratio"])) for r in rows if "error_ratio" in r]
    return error_summary(pairs)
