"""The serving view: every deployment with its live replicas, queue, canary split and per-version figures — one
read shared by ``GET /api/v1/deployments`` (KEDA's metrics-api trigger reads it), ``/metrics`` and the CLI."""

from __future__ import annotations

import time
from typing import Any

import redis

from infra.deployments import Deployments
from infra.model_registry import ModelRegistry
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


def _one(client: redis.Redis, url: str, deployment: Deployment) -> dict[str, Any]:
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
        "p99_ms": stats.alias_load(alias)["p99_ms"],  # its own requests', not its versions' over every alias
        "batch_sizes": {str(k): v for k, v in stats.batch_sizes(alias).items()},
        "cold_start_s": colds[0] if colds else None,
    }


RECENT_S = 60.0  # an alias's p99 counts for scaling while it answered a request this recently


def _scale(client: redis.Redis, url: str, alias: str, row: dict[str, Any], now: float) -> dict[str, float]:
    """What KEDA's metrics-api triggers read (infra/k8s/serving.yaml), numbers only (KEDA refuses a null): requests
    queued, and the p99 of the alias's newest requests when it answered one in the last :data:`RECENT_S` (0 when it
    did not: a p99 of traffic long gone must neither keep the deployment awake nor scale it out)."""
    load = ServeStats(client, url).alias_load(alias)
    recent = load["p99_ms"] is not None and now - (load["answered_at"] or 0.0) <= RECENT_S
    return {"queued": row["queued"], "p99_ms": float(load["p99_ms"]) if recent else 0.0, "ready": row["ready"]}


def deployment(client: redis.Redis, url: str, alias: str, now: float | None = None) -> dict[str, Any] | None:
    """One deployment's view plus ``scale`` (what KEDA reads: see :func:`_scale`), or None when it is not served;
    the route that serves it spares KEDA's GJSON paths the ``@`` and ``.`` of an alias."""
    found = Deployments(client, url).get(alias)
    if found is None:
        return None
    row = _one(client, url, found)
    return {**row, "scale": _scale(client, url, found.alias, row, time.time() if now is None else now)}


def deployments(client: redis.Redis, url: str = "") -> dict[str, Any]:
    """``{"deployments": {alias: view}}`` for every deployment (Redis errors: BrokerUnavailable)."""
    return {"deployments": {d.alias: _one(client, url, d) for d in Deployments(client, url).all()}}
