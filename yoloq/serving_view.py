"""The serving view: every deployment with its live replicas, queue, canary split and per-version figures — one
read shared by ``GET /api/v1/deployments`` (KEDA's metrics-api trigger reads it), ``/metrics`` and the CLI."""

from __future__ import annotations

from typing import Any

import redis

from infra.deployments import Deployments
from infra.model_registry import ModelRegistry
from infra.redis_clock import RedisClock
from infra.serve_queue import ServeQueue
from infra.serve_replicas import ServeReplicas
from infra.serve_stats import ServeStats
from tasks.errors import ModelNotFound
from tasks.model_records import AliasState, Deployment, split_alias


def _split(state: AliasState | None) -> dict[str, float]:
    """Version → share of requests (percent) as the alias routes them now."""
    if state is None:
        return {}
    if state.canary is None or state.canary.version == state.version:
        return {str(state.version): 100.0}
    return {str(state.version): 100.0 - state.canary.share, str(state.canary.version): state.canary.share}


def _one(client: redis.Redis, url: str, deployment: Deployment, now: float) -> dict[str, Any]:
    alias = deployment.alias
    name, _ = split_alias(alias)
    try:
        state: AliasState | None = ModelRegistry(client, url).alias(alias)
    except ModelNotFound:
        state = None
    stats = ServeStats(client, url)
    live = ServeReplicas(client, url).live(alias)
    split = _split(state)
    versions = {v: {"share": share, **stats.version(name, int(v))} for v, share in split.items()}
    colds = stats.cold_starts(alias)
    fields = ("job_id", "worker", "gpu", "backend", "state", "versions", "cold_start_s")
    return {
        **deployment.model_dump(mode="json", exclude={"created_at", "created_by"}),
        "queued": ServeQueue(client, url).depth(alias),
        "ready": sum(1 for r in live if r.get("state") == "ready"),
        "live": [{k: r.get(k) for k in fields} for r in live],
        "versions": versions,
        "p99_ms": recent_p99(stats, alias, now),  # its own requests', not its versions' over every alias
        "batch_sizes": {str(k): v for k, v in stats.batch_sizes(alias).items()},
        "cold_start_s": colds[0] if colds else None,
    }


RECENT_S = 60.0  # an alias's p99 is that of the requests it answered this recently


def recent_p99(stats: ServeStats, alias: str, now: float) -> float | None:
    """The p99 of the requests ``alias`` answered in the :data:`RECENT_S` before ``now`` (Redis's clock), None
    without any: a stateless reader's window, so a slow burst counts for a minute, not until 2,048 newer requests
    push it out, and a p99 of traffic long gone neither keeps the deployment awake nor scales it out."""
    p99: float | None = stats.alias_load(alias, since_at=now - RECENT_S)["p99_ms"]
    return p99


def _scale(row: dict[str, Any]) -> dict[str, float]:
    """What KEDA's metrics-api triggers read (infra/k8s/serving.yaml), numbers only (KEDA refuses a null): requests
    queued, the recent p99 (0 without recent requests) and the ready replicas."""
    return {"queued": row["queued"], "p99_ms": float(row["p99_ms"] or 0.0), "ready": row["ready"]}


def deployment(client: redis.Redis, url: str, alias: str, now: float | None = None) -> dict[str, Any] | None:
    """One deployment's view plus ``scale`` (what KEDA reads: see :func:`_scale`), or None when it is not served;
    the route that serves it spares KEDA's GJSON paths the ``@`` and ``.`` of an alias. ``now``: Redis's clock by
    default."""
    found = Deployments(client, url).get(alias)
    if found is None:
        return None
    row = _one(client, url, found, RedisClock(client).now() if now is None else now)
    return {**row, "scale": _scale(row)}


def deployments(client: redis.Redis, url: str = "") -> dict[str, Any]:
    """``{"deployments": {alias: view}}`` for every deployment (Redis errors: BrokerUnavailable)."""
    now = RedisClock(client).now()  # the clock the replicas stamp their answers on
    return {"deployments": {d.alias: _one(client, url, d, now) for d in Deployments(client, url).all()}}
