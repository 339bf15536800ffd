"""What the routers share through the application and the gate: the one Client (built and prepared by ``make_app``)
and the caller's key (authenticated by the gate before the route runs)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Request

from routing.access import Principal
from yoloq.http.gate import PRINCIPAL

if TYPE_CHECKING:
    from yoloq.client import Client


def client_of(request: Request) -> Client:
    """The application's Client, typed (``app.state`` is untyped)."""
    client: Client = request.app.state.client
    return client


def principal_of(request: Request) -> Principal:
    """The key the gate authenticated for this request (every route but /healthz has one)."""
    who = request.scope[PRINCIPAL]
    assert isinstance(who, Principal)
    return who


def serving_owner(request: Request, alias: str) -> str | None:
    """The team whose deployment serves ``alias`` (None when it is not deployed): a key may change, serve or call an
    alias only for that team (``routing.access.refusal``); an undeployed alias has no owner yet."""
    from infra.deployments import Deployments

    registry = client_of(request).registry
    deployment = Deployments(registry.client, registry.url).get(alias)
    return deployment.team if deployment is not None else None
