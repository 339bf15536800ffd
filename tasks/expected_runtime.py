"""A job's expected runtime from its spec and the runtime history, and what a finished job teaches that history.

The policy (the fallback chain) is :mod:`routing.runtime_estimate`; this module reads specs and records into its
shapes, and, when a job succeeds, measures it: its wall time over all attempts (start-up, validation, checkpoints and
the work redone after a preemption included, which is what a waiting job waits for) and, for training, the seconds
per batch over every batch it trained; then it records that sample and how far the prediction was off
(:class:`infra.runtime_history.RuntimeHistory`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

from infra.presence import GpuClaims
from infra.runtime_history import RuntimeHistory
from routing import memory
from routing.runtime_estimate import Estimate, Sample, Shape, expected, remaining
from tasks.errors import YoloqError
from tasks.records import JobRecord, parse_iso
from tasks.runtime import Runtime

log = logging.getLogger("yoloq.expected_runtime")


def shape_of(spec: dict[str, Any], gpu: str | None = None) -> Shape:
    """The runtime-relevant part of a stored spec (``gpu``: the GPU model it runs on, when known)."""
    variant = memory.parse_variant(str(spec.get("model", "")))
    minutes = spec.get("expected_minutes")
    return Shape(
        kind=str(spec.get("kind", "")), model="".join(variant) if variant else "", data=str(spec.get("data", "")),
        imgsz=int(spec.get("imgsz", 640)), batch=int(spec.get("batch", 16)), epochs=int(spec.get("epochs", 1)),
        gpu=gpu, declared_s=float(minutes) * 60 if minutes is not None else None,
        fixed_s=float(spec["seconds"]) if spec.get("kind") == "probe" else None,
    )  # fmt: skip


def samples(rows: Iterable[dict[str, Any]]) -> list[Sample]:
    """History rows as samples; a malformed row is skipped (the history is advice, never a reason to fail)."""
    out = []
    for row in rows:
        try:
            sample = Sample(str(row["model"]), str(row["data"]), int(row["imgsz"]), int(row["batch"]), str(row["gpu"]),
                            int(row["batches_per_epoch"]), float(row["s_per_batch"]))  # fmt: skip
        except (KeyError, TypeError, ValueError):
            continue
        if sample.batch > 0 and sample.s_per_batch > 0:
            out.append(sample)
    return out


def estimate(record: JobRecord, history: list[Sample], gpu: str | None = None) -> Estimate:
    """The job's expected runtime now (``gpu`` None: as it was shown while it waited)."""
    return expected(shape_of(record.spec, gpu), history)


def done_fraction(progress: dict[str, Any]) -> float:
    """Share of the job's work done, from its progress (epochs and batches for training, steps for probes)."""
    p = progress
    if "steps" in p:
        return float(p.get("step", 0)) / max(float(p.get("steps", 1)), 1.0)
    epochs = max(float(p.get("epochs", 1)), 1.0)
    return (float(p.get("epoch", 0)) + float(p.get("batch", 0)) / max(float(p.get("batches", 1)), 1.0)) / epochs


def remaining_s(record: JobRecord, history: list[Sample], now: float, gpu: str | None = None) -> float:
    """Seconds a running job has left: its expected runtime blended with its own pace (routing.runtime_estimate);
    a serving replica never ends (inf)."""
    if record.kind == "serve":
        return math.inf
    started = record.attempts[-1].started_at if record.attempts else None
    elapsed = max(now - parse_iso(started).timestamp(), 0.0) if started else 0.0
    return remaining(estimate(record, history, gpu).seconds, done_fraction(record.progress), elapsed)


def run_seconds(record: JobRecord) -> float:
    """Wall time of every attempt that started and ended, summed."""
    return sum(
        (parse_iso(a.ended_at) - parse_iso(a.started_at)).total_seconds()
        for a in record.attempts
        if a.started_at and a.ended_at
    )


def measurement(record: JobRecord, gpu: str) -> dict[str, Any] | None:
    """The history row of a finished training job (seconds per batch over all its batches); None otherwise."""
    p, spec, actual = record.progress, record.spec, run_seconds(record)
    shape = shape_of(spec, gpu)
    per_epoch = int(p.get("batches", 0) or 0)
    if shape.kind != "train" or per_epoch <= 0 or actual <= 0 or not shape.model:
        return None
    return {"model": shape.model, "data": shape.data, "imgsz": shape.imgsz, "batch": shape.batch, "gpu": gpu,
            "batches_per_epoch": per_epoch, "s_per_batch": actual / (shape.epochs * per_epoch),
            "job_id": record.job_id}  # fmt: skip


def learn(rt: Runtime, job_id: str) -> None:
    """Record a succeeded job's measurement and its prediction error; a failure here is logged, never the job's."""
    try:
        record = rt.registry.get(job_id)
        actual = run_seconds(record)
        if actual <= 0 or record.kind == "serve":
            return
        store = RuntimeHistory(rt.registry.client, rt.settings.redis_url)
        predicted = estimate(record, samples(store.samples()))  # from the history before this job's own sample
        nodes = {str(w.get("node")): w for w in GpuClaims(rt.registry.client, rt.settings.redis_url).live()}
        gpu = str(nodes.get(str(record.worker), {}).get("gpu", {}).get("name") or "unknown")
        error = {"job_id": job_id, "kind": record.kind, "tier": record.tier.value, "predicted_s": predicted.seconds,
                 "actual_s": round(actual, 3), "source": predicted.source.split(":", 1)[0], "gpu": gpu}  # fmt: skip
        store.record(measurement(record, gpu), error)
    except YoloqError as err:
        log.warning("runtime history of %s not recorded: %s", job_id, err)
