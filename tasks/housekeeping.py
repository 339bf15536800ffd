"""Bodies of beat's tasks, written against adapters: submit a scheduled job, collect garbage in S3, report the SLA,
check GPU health. Each reads what it needs, lets a pure function in ``routing/`` decide, applies the decision, and
returns a JSON summary (also logged).

Checkpoint GC also keeps the trust ledger (``yoloq:trusted-files``) in step with the bucket: the record of every
object it deletes goes first, and a record yoloq wrote for a ``jobs/`` object that has been gone for over
:data:`ORPHAN_GRACE` (a crash between a delete and its forget, or records older than this rule) goes with it.
Operator imports are never touched by GC: ``yoloq weights revoke`` drops those."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from infra.beat_state import BeatState
from infra.cordon import CordonStore
from infra.gpu_control import FleetControl
from infra.ports import ObjectStore
from infra.presence import GpuClaims
from infra.registry import RedisRegistry
from infra.trusted_files import TrustedFiles
from routing import retention
from routing.health import GpuReading, HealthLimits, verdict
from routing.sla import DEFAULT_TARGETS, summarize
from routing.tiers import TIERS
from tasks.checkpoints import CheckpointStore
from tasks.errors import CheckpointError, YoloqError
from tasks.records import Event, iso, parse_iso
from tasks.runtime import Runtime
from tasks.states import TERMINAL
from tasks.submit import submit
from tasks.trust import TrustedFile

log = logging.getLogger("yoloq.beat")
SLA_PREFIX = "reports/sla/"
# A record newer than this may name an object uploaded after GC listed the bucket (clocks of hosts differ too).
ORPHAN_GRACE = timedelta(hours=1)
YOLOQ_SOURCES = frozenset({"checkpoint", "trained"})  # records yoloq wrote itself (TrustedFile.source)
FORGET_BATCH = 1000  # locations per HDEL


def submit_scheduled(rt: Runtime, entry: str, spec: dict[str, Any], slot: str, now: datetime) -> dict[str, Any]:
    """Submit one slot's job the normal way, its history naming schedule and slot; a refusal is one logged line."""
    try:
        done = submit(spec, rt.registry, rt.dispatch)
    except YoloqError as err:
        log.error("schedule %s slot %s: not submitted: %s", entry, slot, err)
        return {"entry": entry, "slot": slot, "error": str(err)}
    reason = f"schedule {entry!r}, slot {slot}"
    rt.registry.append_event(done.job_id, Event(at=iso(now), type="scheduled", reason=reason, by="beat"))
    log.info("schedule %s slot %s: submitted %s (%s, %s)", entry, slot, done.job_id, done.tier, done.state.value)
    return {"entry": entry, "slot": slot, "job_id": done.job_id, "state": done.state.value}


def _facts(registry: RedisRegistry, job_ids: list[str]) -> dict[str, retention.JobFacts]:
    facts = {}
    for record in registry.many(job_ids):
        finished = record.state in TERMINAL
        at = parse_iso(record.finished_at) if record.finished_at else None
        facts[record.job_id] = retention.JobFacts(finished=finished, finished_at=at)
    return facts


def _manifest(store: ObjectStore, job_id: str) -> retention.Manifest | None:
    """The keys a job's checkpoint manifest references (None when it is malformed: then nothing is trimmed)."""
    try:
        data = CheckpointStore(store, job_id).manifest()
    except CheckpointError as err:
        log.warning("checkpoint GC: skipping %s: %s", job_id, err)
        return None
    named = {ref["key"] for ref in (data.get("newest"), data.get("previous")) if isinstance(ref, dict) and "key" in ref}
    named |= {k for k in data.get("kept", []) if isinstance(k, str)}
    entries = data.get("entries")
    named |= set(entries) if isinstance(entries, dict) else set()
    return retention.Manifest(seq=int(data.get("seq", 0) or 0), referenced=frozenset(named))


def collect_garbage(
    registry: RedisRegistry, store: ObjectStore, policy: retention.Retention, now: datetime
) -> dict[str, Any]:
    """Delete what ``routing.retention.plan`` selects from ``jobs/`` in S3; returns counts and bytes freed."""
    listing = {key: size for key, size, _ in store.list_objects(retention.JOBS_PREFIX)}
    by_job = retention.group_by_job(listing)
    facts = _facts(registry, sorted(by_job))
    manifests = {}
    for job_id, keys in by_job.items():
        many = sum(1 for k in keys if retention.checkpoint_seq(k) is not None) > policy.keep_last
        if many and job_id in facts and (found := _manifest(store, job_id)) is not None:
            manifests[job_id] = found
    deletions = retention.plan(listing, facts, manifests, now, policy)
    ledger = TrustedFiles(registry.client, registry.url)
    # Records first: a delete that fails leaves an unrecorded object (never loaded; the next run deletes it),
    # whereas a forget that failed after the delete would leave a record of nothing.
    _forget(ledger, [store.uri(d.key) for d in deletions])
    for deletion in deletions:
        store.delete(deletion.key)
    orphans = orphaned_records(ledger.entries(), store.uri(retention.JOBS_PREFIX), set(listing), now - ORPHAN_GRACE)
    _forget(ledger, orphans)
    freed = sum(listing[d.key] for d in deletions)
    jobs = sorted({retention.job_of(d.key) or "" for d in deletions})
    log.info("checkpoint GC: deleted %d objects (%d bytes) of %d jobs; forgot %d orphaned trust records",
             len(deletions), freed, len(jobs), len(orphans))  # fmt: skip
    return {"deleted": len(deletions), "bytes": freed, "jobs": jobs, "scanned": len(listing),
            "orphaned_records": len(orphans)}  # fmt: skip


def _forget(ledger: TrustedFiles, locations: list[str]) -> None:
    for start in range(0, len(locations), FORGET_BATCH):
        ledger.forget(locations[start : start + FORGET_BATCH])


def orphaned_records(entries: list[TrustedFile], jobs_uri: str, present: set[str], before: datetime) -> list[str]:
    """Locations of records yoloq wrote for ``jobs/`` objects no longer in the bucket, recorded before ``before``:
    each would only ever refuse a file, so they are dropped rather than left to grow the ledger forever."""
    bucket_root = jobs_uri.removesuffix(retention.JOBS_PREFIX)
    out = []
    for entry in entries:
        if entry.source not in YOLOQ_SOURCES or not entry.location.startswith(jobs_uri):
            continue
        recorded = _aware(entry.at)
        if recorded is not None and recorded < before and entry.location.removeprefix(bucket_root) not in present:
            out.append(entry.location)
    return out


def _aware(at: object) -> datetime | None:
    """A record's time, or None when it is unreadable or has no zone (such a record is left alone, not guessed)."""
    try:
        parsed = parse_iso(str(at))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def sla_report(
    registry: RedisRegistry, store: ObjectStore, state: BeatState, window_s: float, now: datetime
) -> dict[str, Any]:
    """Per-tier time-to-start compliance (the ``yoloq sla`` computation), stored in Redis and S3 and logged."""
    since = now.timestamp() - window_s
    tiers = {t.value: summarize(registry.times_to_start(t.value, since), DEFAULT_TARGETS[t]) for t in TIERS}
    doc = {
        "at": iso(now),
        "window_s": window_s,
        "tiers": tiers,
        "compliant": all(s["compliant"] for s in tiers.values()),
    }
    state.save_sla_report(doc)
    store.put_json(f"{SLA_PREFIX}{now:%Y/%m/%d/%H%M%S}.json", doc)
    for tier, s in tiers.items():
        level = logging.INFO if s["compliant"] else logging.WARNING
        log.log(level, "SLA %s: n=%s p95_s=%s within_target=%s compliant=%s", tier, s["count"], s["p95_s"],
                s["within_target"], s["compliant"])  # fmt: skip
    return doc


def gpu_health(
    rt: Runtime, control: FleetControl, cordons: CordonStore, limits: HealthLimits, now: datetime
) -> dict[str, Any]:
    """Ask every live GPU worker for a reading; cordon each unhealthy device and make its worker stop consuming."""
    claims = {c["node"]: c for c in GpuClaims(rt.registry.client, rt.settings.redis_url).live() if c.get("node")}
    replies = control.probe_health(sorted(claims))
    doc: dict[str, Any] = {"at": iso(now), "devices": [], "silent": sorted(set(claims) - set(replies))}
    for node, reading in sorted(replies.items()):
        claim = claims[node]
        host, index = str(claim.get("host", "")), int(claim.get("gpu", {}).get("index", -1))
        reasons = verdict(GpuReading.model_validate(reading), limits)
        doc["devices"].append({"node": node, "host": host, "index": index, "reading": reading, "unhealthy": reasons})
        if reasons and cordons.cordon(host, index, "; ".join(reasons), by="gpu-health", at=iso(now)):
            log.warning("GPU health: cordoned GPU %s on %s (%s): %s", index, host, node, "; ".join(reasons))
            control.stop_consuming(node, list(claim.get("queues", [])))  # now; the flag keeps it so
    for node in doc["silent"]:
        log.warning("GPU health: %s did not answer (busy event loop or gone; its claim expires if gone)", node)
    BeatState(rt.registry.client, rt.settings.redis_url).save_health(doc)
    return doc
