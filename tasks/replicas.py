"""A deployment's replicas are jobs of ``kind: serve`` (docs/serving.md): found in the job registry, added through the
one submit path every job takes (admission, quotas, placement), and removed by cancelling them (they drain).

Used by ``yoloq serve`` (:func:`deploy`, :func:`undeploy`, :func:`overview`), the Python client and the serving
autoscaler (:func:`scale_to`, called by ``workers.serving``).
"""

from __future__ import annotations

import contextlib
from typing import Any

from pydantic import ValidationError

from infra.deployments import Deployments
from infra.model_registry import ModelRegistry
from infra.registry import RedisRegistry
from infra.serve_replicas import ServeReplicas
from tasks import lifecycle
from tasks.errors import InvalidTransition, ModelNotFound, SpecRejected
from tasks.model_records import Deployment, alias_ref
from tasks.records import JobRecord, iso, utc_now
from tasks.runtime import Runtime
from tasks.specs import ServeSpec
from tasks.states import JobState
from tasks.submit import submit

# States of a replica that exists or is on its way (held for approval, queued for a GPU, serving, yielding one).
LIVE_STATES = (JobState.HELD, JobState.QUEUED, JobState.RUNNING, JobState.PREEMPTING)


def replica_jobs(registry: RedisRegistry, alias: str) -> list[JobRecord]:
    """The serve jobs of ``alias`` that are live or on their way, oldest first; a running one whose cancel was asked
    (draining) no longer counts."""
    alias = alias_ref(alias)
    records = [r for r in registry.in_states(LIVE_STATES) if r.kind == "serve" and r.spec.get("alias") == alias]
    flags = _cancel_requested(registry, [r.job_id for r in records if r.state in (JobState.RUNNING,
                                                                                  JobState.PREEMPTING)])  # fmt: skip
    return sorted((r for r in records if r.job_id not in flags), key=lambda r: (r.submitted_at, r.job_id))


def _cancel_requested(registry: RedisRegistry, job_ids: list[str]) -> set[str]:
    from infra.leases import Flag, Leases

    flags = Leases(registry.client, registry.url).flags(job_ids) if job_ids else {}
    return {job_id for job_id, flag in flags.items() if flag is Flag.CANCEL}


def replica_spec(deployment: Deployment) -> ServeSpec:
    """The spec of one replica of ``deployment``."""
    return ServeSpec(alias=deployment.alias, team=deployment.team, tier=deployment.tier,
                     name=f"serve {deployment.alias}", memory_gb=deployment.memory_gb, max_batch=deployment.max_batch,
                     max_wait_ms=deployment.max_wait_ms, backend=deployment.backend)  # fmt: skip


def _cancel(rt: Runtime, records: list[JobRecord], by: str) -> list[str]:
    """Cancel these replicas (running ones drain); those that ended meanwhile are left out of the answer."""
    cancelled = []
    for record in records:
        with contextlib.suppress(InvalidTransition):
            lifecycle.cancel(rt.registry, rt.leases, rt.dispatch, record.job_id, by)
            cancelled.append(record.job_id)
    return cancelled


def scale_to(rt: Runtime, deployment: Deployment, n: int, by: str) -> dict[str, Any]:
    """Make ``deployment`` have ``n`` replica jobs: submit the missing ones, cancel the extra ones (those not serving
    yet first, then the newest running ones, which drain). Returns the job ids kept, submitted and cancelled."""
    have = replica_jobs(rt.registry, deployment.alias)
    submitted = [submit(replica_spec(deployment), rt.registry, rt.dispatch, by=by).job_id
                 for _ in range(max(n - len(have), 0))]  # fmt: skip
    extra = sorted(have, key=lambda r: (r.state is not JobState.RUNNING, r.submitted_at, r.job_id), reverse=True)
    cancelled = _cancel(rt, extra[: max(len(have) - n, 0)], by)
    kept = [r.job_id for r in have if r.job_id not in cancelled]
    return {"alias": deployment.alias, "replicas": kept + submitted, "submitted": submitted, "cancelled": cancelled}


def _bounds(deployment: Deployment, replicas: int | None, fields: dict[str, Any]) -> dict[str, Any]:
    """``replicas`` with ``min_replicas`` and ``max_replicas`` widened to hold it where the caller left them out;
    SpecRejected for bounds that contradict each other."""
    n = deployment.replicas if replicas is None else replicas
    low = fields.get("min_replicas", min(deployment.min_replicas, n))
    high = fields.get("max_replicas", max(deployment.max_replicas, n, low, 1))
    if not low <= n <= high:
        raise SpecRejected(f"replicas must lie within --min {low} and --max {high}; got {n}")
    return {"replicas": n, "min_replicas": low, "max_replicas": high}


def deploy(rt: Runtime, ref: str, replicas: int | None, fields: dict[str, Any], by: str) -> dict[str, Any]:
    """Create or change the deployment of an alias (``fields``: Deployment fields; a new one needs ``team``) and
    scale its replica jobs to its count (none for ``scaler: external``). The alias must exist; bad input changes
    nothing."""
    alias = alias_ref(ref)
    client, url = rt.registry.client, rt.settings.redis_url
    ModelRegistry(client, url).alias(alias)  # ModelNotFound: nothing to serve
    store = Deployments(client, url)
    current = store.get(alias)
    given = {k: v for k, v in fields.items() if v is not None}
    if current is None and "team" not in given:
        raise SpecRejected(f"{alias} is not deployed yet: say which team it serves (--team)")
    try:
        if current is None:
            current = Deployment.model_validate(
                {"alias": alias, "created_at": iso(utc_now()), "created_by": by, **given}
            )
        deployment = Deployment.model_validate({**current.model_dump(), **given, **_bounds(current, replicas, given)})
        replica_spec(deployment)  # the replicas' spec must be valid too (tier, team, memory)
    except ValidationError as err:
        where = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'deployment'}: {e['msg']}" for e in err.errors())
        raise SpecRejected(f"invalid deployment: {where}") from None
    external = deployment.scaler == "external"  # its replicas are pods KEDA scales: no job (any left are cancelled)
    store.put(deployment, by, f"yoloq serve {alias}: " + ("scaled externally" if external else
                                                          f"{deployment.replicas} replicas"))  # fmt: skip
    wanted = 0 if external else deployment.replicas
    return {"deployment": deployment.model_dump(mode="json"), **scale_to(rt, deployment, wanted, by)}


def undeploy(rt: Runtime, ref: str, by: str) -> dict[str, Any]:
    """Stop serving an alias: cancel its replicas (they drain) and drop its deployment."""
    alias = alias_ref(ref)
    deployments = Deployments(rt.registry.client, rt.settings.redis_url)
    deployment = deployments.get(alias)
    if deployment is None and not replica_jobs(rt.registry, alias):
        raise ModelNotFound(f"{alias} is not deployed (yoloq serve --list shows what is)")
    dropped = deployments.drop(alias, by)  # first: the autoscaler must not start new replicas meanwhile
    cancelled = _cancel(rt, replica_jobs(rt.registry, alias), by)
    return {"alias": alias, "deployment_dropped": dropped, "cancelled": cancelled}


def overview(rt: Runtime) -> list[dict[str, Any]]:
    """Every deployment with its replica jobs (id, state) and live replicas (presence: state, versions, cold
    start): what ``yoloq serve --list`` shows."""
    client, url = rt.registry.client, rt.settings.redis_url
    presence = ServeReplicas(client, url)
    rows = []
    for deployment in Deployments(client, url).all():
        jobs = [{"job_id": r.job_id, "state": r.state.value, "worker": r.worker} for r in
                replica_jobs(rt.registry, deployment.alias)]  # fmt: skip
        rows.append({"deployment": deployment.model_dump(mode="json"), "jobs": jobs,
                     "live": presence.live(deployment.alias)})  # fmt: skip
    return rows
