"""``/api/v1/keys``: what ``yoloq key create|list|revoke|limit`` does, for an admin key only.

Every route here, reads included, takes the ``admin`` action (``yoloq.http.auth.action_of``): a key list names every
tenant and its scopes, which is a map for an attacker, and a key that may create keys may grant itself anything. The
new key's secret is in the answer to ``POST`` only (Redis keeps its sha256). Each change is audited as
``key:<name>`` (the admin token is ``key:admin``); a revoke refuses the key from the next request on.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from infra.api_keys import ApiKeys
from infra.rate_limit import MAX_BURST, MAX_RATE, RateLimiter
from routing.access import KEY_NAME_PATTERN, SCOPES
from yoloq.http.openapi import errors
from yoloq.http.state import client_of, principal_of
from yoloq.key_view import listed, set_limit

router = APIRouter(prefix="/api/v1/keys", tags=["keys"], responses=errors())
KeyName = Annotated[str, Path(pattern=KEY_NAME_PATTERN)]
FOUND = errors(404, why={404: "no key of that name"})


class NewKey(BaseModel):
    """A key for a team (``*``: every team) with the scopes it may use."""

    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(pattern=KEY_NAME_PATTERN)]
    team: Annotated[str, Field(max_length=63)]
    scopes: Annotated[list[Annotated[str, Field(max_length=16)]], Field(min_length=1, max_length=len(SCOPES))]


class CreatedKey(BaseModel):
    """The new key, whole: shown in this answer only."""

    name: str
    team: str
    scopes: list[str]
    key: str


class DetectLimit(BaseModel):
    """A tenant's own detect rate limit."""

    model_config = ConfigDict(extra="forbid")
    rate: Annotated[float, Field(gt=0, le=MAX_RATE, description="requests per second")]
    burst: Annotated[int, Field(ge=1, le=MAX_BURST, description="requests at once after a quiet spell")]


class AppliedLimit(BaseModel):
    """The detect limit a key is held to from its next request on; ``own``: false means the defaults."""

    name: str
    rate: float
    burst: int
    own: bool


def _keys(request: Request) -> ApiKeys:
    registry = client_of(request).registry
    return ApiKeys(registry.client, registry.url)


def _limiter(request: Request) -> RateLimiter:
    client = client_of(request)
    settings = client.settings
    return RateLimiter(client.registry.client, settings.detect_rate, settings.detect_burst, settings.redis_url)


@router.get("")
def list_keys(request: Request) -> list[dict[str, Any]]:
    """Every key's name, id, team, scopes, creation and detect limit; never a secret or its hash."""
    return listed(_keys(request), _limiter(request))


@router.post("", status_code=201, responses=errors(409, why={409: "a key of that name exists (revoke it first)"}))
def create_key(request: Request, spec: Annotated[NewKey, Body()]) -> CreatedKey:
    """Create a key; 201 with the key itself, which is never shown again."""
    secret = _keys(request).create(spec.name, spec.team, spec.scopes, by=principal_of(request).identity)
    ordered = [s for s in SCOPES if s in spec.scopes]
    return CreatedKey(name=spec.name, team=spec.team, scopes=ordered, key=secret)


@router.delete("/{name}", responses=FOUND)
def revoke_key(request: Request, name: KeyName) -> dict[str, Any]:
    """Revoke a key (and its own detect limit): refused from the next request on, by every API process."""
    _keys(request).revoke(name, by=principal_of(request).identity)
    return {"name": name, "revoked": True}


@router.put("/{name}/limit", responses=FOUND)
def limit_key(request: Request, name: KeyName, body: Annotated[DetectLimit, Body()]) -> AppliedLimit:
    """Give a key (or ``admin``, the admin token) its own detect limit, applied from its next request on."""
    applied = set_limit(
        _keys(request), _limiter(request), name, body.rate, body.burst, by=principal_of(request).identity
    )
    return AppliedLimit(**applied)


@router.delete("/{name}/limit", responses=FOUND)
def default_limit(request: Request, name: KeyName) -> AppliedLimit:
    """Put a key back on the default detect limit (``YOLOQ_DETECT_RATE`` / ``YOLOQ_DETECT_BURST``)."""
    applied = set_limit(_keys(request), _limiter(request), name, None, None, by=principal_of(request).identity)
    return AppliedLimit(**applied)
