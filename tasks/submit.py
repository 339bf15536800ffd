"""The only way a job enters yoloq: validate → register → route → send (API, CLI and HTTP all call this)."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from infra.admission_rules import AdmissionStore
from infra.celery_control import CeleryDispatch
from infra.fleet_ceiling import FleetCeiling
from infra.registry import Change, RedisRegistry
from infra.trusted_files import TrustedFiles
from routing.fleet_fit import largest_seen, too_big
from routing.tiers import NoSizeClass, route
from tasks import admission, lifecycle, trust
from tasks.errors import BrokerUnavailable, SpecRejected
from tasks.locations import Locations
from tasks.records import Event, iso, new_job_id, utc_now
from tasks.specs import ExportSpec, InferSpec, JobSpec, TrainSpec, parse_spec
from tasks.states import JobState


@dataclass(frozen=True)
class Submitted:
    """What ``submit --json`` prints: the job id, its state, tier and queue."""

    job_id: str
    state: JobState
    tier: str
    queue: str


def _names_a_file(model: str) -> bool:
    """A URI or a path (weights or a model yaml: both go through the door); a bare "yolov8n.pt" or "yolov8n.yaml" is
    a variant name."""
    return "://" in model or "/" in model


def _resolve_paths(spec: JobSpec, doors: Locations) -> JobSpec:
    """Every location checked at the door (tasks/locations.py); local paths travel absolute."""
    updates: dict[str, str] = {}
    if isinstance(spec, TrainSpec):
        updates["data"] = doors.check("data", spec.data)
    if isinstance(spec, InferSpec):
        updates["source"] = doors.check("source", spec.source)
    if isinstance(spec, TrainSpec | InferSpec | ExportSpec) and _names_a_file(spec.model):
        updates["model"] = doors.check("model", spec.model)
    return spec.model_copy(update=updates) if updates else spec


def prepare(spec: object, doors: Locations | None = None) -> JobSpec:
    """Validate a spec (dict, JSON text or model) completely, before anything is written anywhere."""
    if isinstance(spec, BaseModel):
        spec = spec.model_dump()
    if not isinstance(spec, dict | str):
        raise SpecRejected(f"invalid job spec: expected a JSON object (a dict or a spec), got {type(spec).__name__}")
    return _resolve_paths(parse_spec(spec), doors or Locations())


def submit(
    spec: JobSpec | dict[str, Any],
    registry: RedisRegistry,
    dispatch: CeleryDispatch,
    rules: AdmissionStore | None = None,
    doors: Locations | None = None,
    *,
    by: str = "",
) -> Submitted:
    """Admit one job: a rejected spec changes nothing; an accepted one is registered (with who submitted it, ``by``)
    before it is sent."""
    checked, tier_named = prepare(spec, doors), admission.tier_given(spec)
    trust.check_spec(checked, TrustedFiles(registry.client, registry.url))  # weights it would unpickle: recorded?
    try:
        where = route(checked.tier, checked.memory_mib(), getattr(checked, "gpus", 1))
    except NoSizeClass as err:
        raise SpecRejected(f"invalid job spec: {err}") from None
    largest = largest_seen(FleetCeiling(registry.client, registry.url).seen(), time.time())
    if unfit := too_big(checked.memory_mib(), largest, "seen in the fleet in the last 24 h"):
        raise SpecRejected(f"invalid job spec: no GPU can hold it: {unfit} (memory_gb, or a smaller model/batch)")
    store = rules or AdmissionStore(registry.client, registry.url)
    checked, verdict, note = admission.on_submit(registry, store, checked, tier_named=tier_named)
    if note:  # a team's default tier, or a demoted team's critical job: routed at its tier
        where = route(checked.tier, checked.memory_mib(), getattr(checked, "gpus", 1))
    if verdict.borrowed_from:  # admitted on another team's quota: the reason says whose
        note = "; ".join(filter(None, (note, verdict.reason)))
    job_id, task_id = new_job_id(), lifecycle.new_task_id()
    held = verdict.reason if verdict.held else ""
    lifecycle.register(registry, job_id, checked, where, task_id, held=held, note=note, submitted_by=by,
                       borrowed_from=verdict.borrowed_from)  # fmt: skip
    if verdict.held:
        return Submitted(job_id, JobState.HELD, checked.tier.value, where.queue)
    try:
        dispatch.send(checked.kind, job_id, task_id, where.queue, lifecycle.labels(checked))
    except BrokerUnavailable as err:
        _mark_unsent(registry, job_id, str(err))
        raise
    return Submitted(job_id, JobState.QUEUED, checked.tier.value, where.queue)


def _mark_unsent(registry: RedisRegistry, job_id: str, reason: str) -> None:
    """A job registered but never sent is failed with the reason, never left looking queued."""
    now = iso(utc_now())
    event = Event(at=now, type="failed", state=JobState.FAILED, reason=f"dispatch failed: {reason}")
    change = Change(to=JobState.FAILED, fields={"finished_at": now, "error": reason}, event=event)
    # If Redis is gone too the record cannot be updated; the caller still gets the original error.
    with contextlib.suppress(BrokerUnavailable):
        registry.transition(job_id, change)
