"""``/api/v1/jobs``: submit, list and read jobs, and the actions on one, each signed ``key:<name>`` in its history.

The gate has checked the key's scope for the action; here its team is checked against the job's (a key for team A
neither submits for nor touches team B's jobs: 403, nothing changes)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from routing.access import refusal
from tasks.errors import NotAllowed
from tasks.specs import JobSpec, ServeSpec, TierName
from tasks.states import JobState
from yoloq.client import Client
from yoloq.http.openapi import errors
from yoloq.http.state import client_of, principal_of, serving_owner
from yoloq.standing import job_document

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"], responses=errors())
ACTION = errors(404, 409)  # no such job; its state does not allow the action
JobId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,128}$")]


class Submitted(BaseModel):
    """What ``yoloq submit --json`` prints."""

    job_id: str
    state: str
    tier: str
    queue: str


class Promotion(BaseModel):
    """The tier to move a job to."""

    model_config = ConfigDict(extra="forbid")
    tier: TierName


class PreemptRequest(BaseModel):
    """Why the operator asks the job to yield (kept in its history)."""

    model_config = ConfigDict(extra="forbid")
    reason: Annotated[str, Field(max_length=256)] = "operator request"


class ActionResult(BaseModel):
    """The outcome of an operator action: the job's new state or queue where the action has one."""

    job_id: str
    action: str
    result: Any = None


@router.get("")
def list_jobs(
    request: Request,
    state: JobState | None = None,
    tier: TierName | None = None,
    limit: Annotated[int, Query(ge=1)] = 100,
) -> list[dict[str, Any]]:
    """Jobs newest first, filtered like ``yoloq jobs`` (at most 1000)."""
    records = client_of(request).jobs(state, tier, min(limit, 1000))
    return [r.model_dump(mode="json") for r in records]


@router.post("", status_code=201)
def submit(request: Request, spec: Annotated[JobSpec, Body()]) -> Submitted:
    """Submit one job spec (the same JSON as the Python API) for the key's team; 201 with its id, state and queue."""
    who = principal_of(request)
    if problem := refusal(who, "submit", spec.team) or _serving_refusal(request, spec):
        raise NotAllowed(problem)
    return Submitted(**client_of(request).submit(spec, remote=True, by=who.identity).as_dict())


def _serving_refusal(request: Request, spec: JobSpec) -> str:
    """A pipeline moves an alias and a replica serves one: both need what moving it by hand needs (the ``model``
    action) for the team that serves it, or for the job's own team while nobody does; "" when allowed."""
    alias = spec.alias if isinstance(spec, ServeSpec) else getattr(spec, "deploy", None)
    if alias is None:
        return ""
    owner = serving_owner(request, alias)
    return refusal(principal_of(request), "model", owner if owner is not None else spec.team)


@router.get("/{job_id}", responses=errors(404))
def job(request: Request, job_id: JobId) -> dict[str, Any]:
    """One job's record and where it stands (expected runtime, queue position, ETA): what ``yoloq job ID --json``
    prints."""
    client = client_of(request)
    return job_document(client, client.job(job_id))


@router.post("/{job_id}/cancel", responses=ACTION)
def cancel(request: Request, job_id: JobId) -> ActionResult:
    """Cancel a job; a running one stops at its next step (result: the state now)."""
    client, by = _acting(request, job_id, "cancel")
    state = client.cancel(job_id, by=by)
    return ActionResult(job_id=job_id, action="cancel", result=state.value)


@router.post("/{job_id}/preempt", responses=ACTION)
def preempt(request: Request, job_id: JobId, body: Annotated[PreemptRequest | None, Body()] = None) -> ActionResult:
    """Ask a running job to checkpoint, yield its GPU and requeue."""
    client, by = _acting(request, job_id, "preempt")
    client.preempt(job_id, reason=(body or PreemptRequest()).reason, by=by)
    return ActionResult(job_id=job_id, action="preempt")


@router.post("/{job_id}/approve", responses=ACTION)
def approve(request: Request, job_id: JobId) -> ActionResult:
    """Approve a held critical job for critical (or a promotion to critical) that another key submitted or promoted;
    409 when nothing awaits approval (an approval is for a tier, never recorded where none was needed)."""
    client, by = _acting(request, job_id, "approve")
    client.approve(job_id, by=by)
    return ActionResult(job_id=job_id, action="approve")


@router.post("/{job_id}/freeze", responses=ACTION)
def freeze(request: Request, job_id: JobId) -> ActionResult:
    """Never choose this job as a preemption victim."""
    client, by = _acting(request, job_id, "freeze")
    client.freeze(job_id, True, by=by)
    return ActionResult(job_id=job_id, action="freeze")


@router.post("/{job_id}/unfreeze", responses=ACTION)
def unfreeze(request: Request, job_id: JobId) -> ActionResult:
    """Make this job a possible preemption victim again."""
    client, by = _acting(request, job_id, "unfreeze")
    client.freeze(job_id, False, by=by)
    return ActionResult(job_id=job_id, action="unfreeze")


@router.post("/{job_id}/promote", responses=ACTION)
def promote(request: Request, job_id: JobId, body: Annotated[Promotion, Body()]) -> ActionResult:
    """Move a job to another tier, under the admission rules (result: its tier and queue now, and any tier that
    awaits approval)."""
    client, by = _acting(request, job_id, "promote")
    return ActionResult(job_id=job_id, action="promote", result=client.promote(job_id, body.tier, by=by).as_dict())


def _acting(request: Request, job_id: str, action: str) -> tuple[Client, str]:
    """The Client and the caller's identity once its key may take ``action`` on this job's team (else 403)."""
    client, who = client_of(request), principal_of(request)
    if problem := refusal(who, action, client.job(job_id).team):
        raise NotAllowed(problem)
    return client, who.identity
