"""The HTTP API's application: routers per resource behind one gate (:mod:`yoloq.http.gate`), typed errors as JSON.

Every route but ``/healthz`` needs an API key (or the admin token), checked with its scope before any body is read.
Errors are JSON ``{"error": "..."}`` with 400 (bad input), 401, 403 (the key's scope or team, four-eyes), 404, 409
(state conflict), 413 (body too big) or 503 (broker down); the detect route adds 415 and 422 (its upload checks), 429
(with ``Retry-After``) and 503 (no replica answered). A rejected request changes nothing. Handlers are plain
functions: FastAPI runs them on its thread pool, so one slow Redis call never holds the event loop (or ``/healthz``)
hostage; the detect route awaits its replica's reply on the loop instead (:mod:`yoloq.http.detect`), so requests
waiting for a replica hold no thread. The OpenAPI document is generated from the same pydantic specs the Python API
uses and served at ``/openapi.json`` (behind a key; no Swagger UI: it would load assets from a CDN).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from infra.api_keys import ApiKeys
from tasks.errors import (
    BrokerUnavailable,
    InvalidTransition,
    JobNotFound,
    KeyExists,
    KeyNotFound,
    KeyRejected,
    ModelNotFound,
    NotAllowed,
    RateLimited,
    ServingUnavailable,
    SpecRejected,
    UploadRejected,
    WebhookNotFound,
    YoloqError,
    clipped,
)
from yoloq.client import Client
from yoloq.http import detect, fleet, jobs, metrics, models, page, webhooks
from yoloq.http import keys as key_routes
from yoloq.http.auth import BASIC, BEARER, KeyLookup
from yoloq.http.gate import Gate
from yoloq.http.openapi import finish

STATUS_OF = {KeyExists: 409, KeyNotFound: 404, KeyRejected: 400,  # the subclasses first: the first match wins
             SpecRejected: 400, NotAllowed: 403, JobNotFound: 404, ModelNotFound: 404, InvalidTransition: 409,
             BrokerUnavailable: 503, ServingUnavailable: 503, WebhookNotFound: 404}  # fmt: skip


def make_app(client: Client, token: str, keys: KeyLookup | None = None) -> FastAPI:
    """The whole API over one Client; ``token`` (the admin key) must be non-empty (``yoloq api`` refuses to start
    otherwise); ``keys`` looks up ``yq_`` keys (default: the key store in the Client's Redis)."""
    if not token:
        raise ValueError("the HTTP API needs a non-empty token")
    if keys is None:
        keys = ApiKeys(client.registry.client, client.registry.url).lookup
    app = FastAPI(title="yoloq", version="0.1.0", docs_url=None, redoc_url=None, openapi_url=None,
                  redirect_slashes=False, lifespan=detect.lifespan)  # fmt: skip
    app.state.client = client.prepare()
    app.state.metrics = metrics.collector_registry(client)
    documented = [Security(BEARER), Security(BASIC)]  # the gate enforces; these put the schemes in the OpenAPI
    upload_bytes = detect.install(app, getattr(client, "settings", None), client.registry.client)
    for router in (jobs.router, fleet.router, metrics.router, page.router, models.router, detect.router,
                   webhooks.router, key_routes.router):  # fmt: skip
        app.include_router(router, dependencies=documented)
    app.add_api_route("/healthz", healthz, methods=["GET"], tags=["health"])
    app.openapi = _documented(app.openapi)  # type: ignore[method-assign]  # FastAPI's documented override
    app.add_api_route("/openapi.json", app.openapi, methods=["GET"], include_in_schema=False)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(YoloqError, _yoloq_error)
    app.add_exception_handler(Exception, _unexpected)
    app.add_middleware(Gate, token=token, keys=keys, upload_bytes=upload_bytes)
    return app


def _documented(generate: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    """FastAPI's document as this API behaves (:func:`yoloq.http.openapi.finish`): no 422s, tags required."""

    def document() -> dict[str, Any]:
        return finish(generate())

    return document


async def healthz() -> dict[str, bool]:
    """Liveness for orchestrators: no auth, no Redis, answered on the event loop itself."""
    return {"ok": True}


def _error(status: int, reason: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status, headers=headers)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return _error(exc.status_code, str(exc.detail), exc.headers)


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    """A body or query that does not fit its model: 400 with every problem on one line, as the CLI says it."""
    assert isinstance(exc, RequestValidationError)
    errors: list[dict[str, Any]] = list(exc.errors())
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return _error(400, f"request body is not JSON: {first.get('ctx', {}).get('error', 'malformed')}")
    subject = "invalid job spec" if (request.method, request.url.path) == ("POST", jobs.router.prefix) else "invalid"
    if tuple(first.get("loc", ())) == ("body",):
        return _error(400, _whole_body(subject, first))
    parts = [
        f"{clipped('.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'request', 80)}: "
        f"{clipped(str(e.get('msg', 'invalid')).removeprefix('Value error, '))}"
        for e in errors
    ]
    return _error(400, f"{subject}: {'; '.join(parts)}")


def _whole_body(subject: str, error: dict[str, Any]) -> str:
    """Why the body as a whole was refused: not an object, or an object whose tag (a job spec's kind) is wrong."""
    context = error.get("ctx") or {}
    tag = str(context.get("discriminator", "")).strip("'")
    if error.get("type") == "union_tag_not_found":
        return f"{subject}: {tag}: Field required"
    if error.get("type") == "union_tag_invalid":
        return f"{subject}: {tag}: {clipped(repr(context.get('tag')), 80)} is not one of {context.get('expected_tags')}"
    return "request body must be a JSON object"


async def _yoloq_error(_: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, UploadRejected):
        return _error(exc.status, str(exc))
    if isinstance(exc, RateLimited):
        return _error(429, str(exc), {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))})
    status = next((code for kind, code in STATUS_OF.items() if isinstance(exc, kind)), 500)
    return _error(status, str(exc))


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    """A bug: the server's log gets the traceback (uvicorn writes it once), the caller one line."""
    return _error(500, "internal error (logged by the API)")
