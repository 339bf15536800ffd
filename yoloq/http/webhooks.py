"""``/api/v1/webhooks``: what ``yoloq webhook add|list|rm|test`` does, for a key's own team.

Adding, removing and testing take the ``webhook`` action (a ``submit`` or ``operate`` key, ``routing.access``) for the
team that owns the subscription: the team subscribed to, or the job's team. A list shows the key's team's webhooks
(every team's for a ``*`` key), secrets masked; the secret is in the answer to ``POST`` only."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from infra.webhooks import WebhookStore, send_test
from routing.access import ALL_TEAMS, refusal
from routing.notify import EVENTS
from tasks.errors import NotAllowed, WebhookRejected
from yoloq.http.openapi import errors
from yoloq.http.state import client_of, principal_of

router = APIRouter(prefix="/api/v1/webhooks", tags=["webhooks"], responses=errors())
WebhookId = Annotated[str, Path(pattern=r"^wh_[0-9a-f]{12}$")]


class NewWebhook(BaseModel):
    """A subscription: a team's jobs or one job's, the URL, and which events (default: all)."""

    model_config = ConfigDict(extra="forbid")
    url: Annotated[str, Field(max_length=2048)]
    team: Annotated[str | None, Field(max_length=63)] = None
    job_id: Annotated[str | None, Field(max_length=128)] = None
    events: Annotated[list[str], Field(max_length=len(EVENTS))] = list(EVENTS)


class Tested(BaseModel):
    """How the test POST went."""

    id: str
    event_id: str
    ok: bool
    detail: str


def _store(request: Request) -> WebhookStore:
    client = client_of(request)
    return WebhookStore(client.registry.client, client.registry.url, client.settings.webhook_networks())


def _owned(request: Request, webhook_id: str) -> tuple[WebhookStore, dict[str, Any]]:
    """The store and the entry, once the key may act for the team that owns it (else 403, nothing done)."""
    store = _store(request)
    entry = store.get(webhook_id)
    if problem := refusal(principal_of(request), "webhook", str(entry.get("owner") or entry.get("team") or "")):
        raise NotAllowed(problem)
    return store, entry


@router.get("")
def list_webhooks(request: Request) -> list[dict[str, Any]]:
    """The key's team's webhooks with state and health (a dead endpoint with its reason); secrets masked."""
    team = principal_of(request).team
    shown = _store(request).shown()
    return [e for e in shown if team == ALL_TEAMS or e.get("owner", e.get("team")) == team]


@router.post("", status_code=201)
def add_webhook(request: Request, spec: Annotated[NewWebhook, Body()]) -> dict[str, Any]:
    """Subscribe a URL; 201 with the subscription and its signing secret (shown only in this answer)."""
    store, who = _store(request), principal_of(request)
    if (spec.team is None) == (spec.job_id is None):
        raise WebhookRejected("invalid webhook: give a team or a job, not both")
    owner = spec.team if spec.team is not None else store.owner_of_job(spec.job_id or "")
    if not owner:
        raise WebhookRejected(f"invalid webhook: no job {str(spec.job_id)[:80]!r}")
    if problem := refusal(who, "webhook", owner or ""):
        raise NotAllowed(problem)
    return store.add(spec.url, team=spec.team, job_id=spec.job_id, events=spec.events, by=who.identity)


@router.delete("/{webhook_id}", responses=errors(404))
def remove_webhook(request: Request, webhook_id: WebhookId) -> dict[str, Any]:
    """Delete a webhook: nothing more is sent to it."""
    store, _ = _owned(request, webhook_id)
    store.remove(webhook_id)
    return {"id": webhook_id, "removed": True}


@router.post("/{webhook_id}/test", responses=errors(404))
def test_webhook(request: Request, webhook_id: WebhookId) -> Tested:
    """POST a signed ``test`` event now; a dead endpoint that answers 2xx is active again."""
    store, _ = _owned(request, webhook_id)
    event_id, outcome = send_test(store, webhook_id)
    return Tested(id=webhook_id, event_id=event_id, ok=outcome.ok, detail=outcome.detail)
