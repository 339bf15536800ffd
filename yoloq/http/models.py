"""``/api/v1/models``: the model registry over HTTP, as ``yoloq model`` shows and changes it.

Reads (the list, one model with its versions, aliases and serving figures) need any valid key; moving an alias
(set, canary, promote, rollback) needs a key with the ``operate`` or ``admin`` scope (the gate checks it before the
body is read: action ``model`` in ``routing.access``), and each change is audited as ``key:<name>``. Registering a
version is not offered here: it uploads files, which the CLI and the training pipeline do.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from infra.model_registry import ModelRegistry
from infra.serve_stats import ServeStats
from routing.access import refusal
from tasks.errors import NotAllowed
from tasks.model_records import AliasState
from yoloq.http.openapi import errors
from yoloq.http.state import client_of, principal_of, serving_owner

router = APIRouter(prefix="/api/v1/models", tags=["models"], responses=errors())
FOUND = errors(404, why={404: "no such model, version or alias"})
Slug = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]


class AliasTarget(BaseModel):
    """The version an alias should serve."""

    model_config = ConfigDict(extra="forbid")
    version: Annotated[int, Field(ge=1)]


class CanaryTarget(BaseModel):
    """The version that gets ``share`` percent of an alias's requests (0 removes the canary)."""

    model_config = ConfigDict(extra="forbid")
    version: Annotated[int, Field(ge=1)]
    share: Annotated[float, Field(ge=0, le=100)]


def _models(request: Request) -> ModelRegistry:
    client = client_of(request)
    return ModelRegistry(client.registry.client, client.registry.url)


@router.get("")
def list_models(request: Request) -> list[dict[str, Any]]:
    """Every model: its newest version, how many it has, and its aliases."""
    return _models(request).catalog()


@router.get("/{name}", responses=FOUND)
def model(request: Request, name: Slug) -> dict[str, Any]:
    """One model's versions (metrics, artefacts, serving figures) and its aliases."""
    client = client_of(request)
    return ServeStats(client.registry.client, client.registry.url).describe(_models(request), name)


def _mover(request: Request, alias: str) -> str:
    """Who moves the alias, once their key may act for the team that serves it (any team's when none does yet)."""
    who = principal_of(request)
    if problem := refusal(who, "model", serving_owner(request, alias)):
        raise NotAllowed(problem)
    return who.identity


@router.put("/{name}/aliases/{label}", responses=FOUND)
def set_alias(request: Request, name: Slug, label: Slug, body: Annotated[AliasTarget, Body()]) -> AliasState:
    """Point ``name@label`` at a version (the one before is kept for rollback)."""
    alias = f"{name}@{label}"
    return _models(request).set_alias(alias, body.version, by=_mover(request, alias))


@router.put("/{name}/aliases/{label}/canary", responses=FOUND)
def set_canary(request: Request, name: Slug, label: Slug, body: Annotated[CanaryTarget, Body()]) -> AliasState:
    """Send ``share`` % of ``name@label``'s requests to a version (0 removes the canary)."""
    alias = f"{name}@{label}"
    return _models(request).set_canary(alias, body.version, body.share, by=_mover(request, alias))


@router.post("/{name}/aliases/{label}/promote", responses=FOUND)
def promote(request: Request, name: Slug, label: Slug) -> AliasState:
    """Make the alias's canary its stable version."""
    alias = f"{name}@{label}"
    return _models(request).promote(alias, by=_mover(request, alias))


@router.post("/{name}/aliases/{label}/rollback", responses=FOUND)
def rollback(request: Request, name: Slug, label: Slug) -> AliasState:
    """Point the alias back at its previous stable version, dropping any canary."""
    alias = f"{name}@{label}"
    return _models(request).rollback(alias, by=_mover(request, alias))
