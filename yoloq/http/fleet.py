"""Read-only fleet views: queues (KEDA reads ``tiers.<tier>.depth``), status, SLA, the audit log, quotas,
deployments."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from yoloq.http.openapi import errors
from yoloq.http.state import client_of

router = APIRouter(prefix="/api/v1", tags=["fleet"], responses=errors())


@router.get("/queues")
def queues(request: Request) -> dict[str, Any]:
    """Per tier: waiting, unacked (held by workers), depth (both) and the oldest wait."""
    return client_of(request).queues()


@router.get("/status")
def status(request: Request) -> dict[str, Any]:
    """What ``yoloq status --json`` prints: queues, workers, GPUs, running jobs, SLA."""
    return client_of(request).status()


@router.get("/sla")
def sla(request: Request) -> dict[str, Any]:
    """Time-to-start percentiles per tier now, and the hourly compliance history of the last 24 h."""
    client = client_of(request)
    return {"now": client.sla(), "history": client.sla_history()}


@router.get("/audit")
def audit(
    request: Request, job: str | None = None, limit: Annotated[int, Query(ge=1, le=10_000)] = 50
) -> list[dict[str, Any]]:
    """Who decided what, newest first (optionally about one job)."""
    return client_of(request).audit(limit=limit, job_id=job)


@router.get("/quotas")
def quotas(request: Request) -> dict[str, Any]:
    """What ``yoloq quota show --json`` prints: quotas with what each team uses, borrows and lends, default tiers,
    credit scores, demoted and pre-approved teams."""
    return client_of(request).admission_rules()


@router.get("/deployments")
def deployments(request: Request) -> dict[str, Any]:
    """Every served alias: desired and ready replicas, queued requests, canary split, per-version latency and
    errors, batch sizes, cold start (KEDA's metrics-api trigger reads ``deployments.<alias>.queued``)."""
    from yoloq.serving_view import deployments as view

    registry = client_of(request).registry
    return view(registry.client, registry.url)


@router.get("/deployments/{alias}", responses=errors(404, why={404: "the alias is not deployed"}))
def deployment(request: Request, alias: str) -> dict[str, Any]:
    """One served alias (a bare name is ``name@prod``): its row of ``/deployments`` plus ``scale``, numbers only,
    which KEDA's metrics-api triggers read (``valueLocation: scale.queued``, no ``@`` to escape); 404 if not served."""
    from tasks.errors import ModelNotFound
    from tasks.model_records import alias_ref
    from yoloq.serving_view import deployment as view

    ref = alias_ref(alias)  # InvalidName: 400
    registry = client_of(request).registry
    row = view(registry.client, registry.url, ref)
    if row is None:
        raise ModelNotFound(f"{ref} is not deployed (yoloq serve {ref})")
    return row
