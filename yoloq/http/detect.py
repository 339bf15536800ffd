"""``POST /v1/models/{alias}/detect``: a tenant's image in, the deployed model's detections out (docs/serving.md).

The gate has authenticated the key and checked its ``detect`` scope, and capped the body at ``YOLOQ_DETECT_MAX_MIB``
while it streamed. Then, in this order, so that a refused request costs the least and queues nothing:

1. **rate**: the tenant's token bucket (:mod:`infra.rate_limit`), before the body is read: 429 with ``Retry-After``;
2. **the body**: multipart field ``image``, a raw body (``image/*``, ``application/octet-stream``, or any other label a
   program sends: the type comes from the bytes) or JSON ``{"uri": "s3://bucket/key"}``, read from the API's object
   store under the location rules (:mod:`tasks.locations`) and never more than the byte cap plus one;
3. **upload checks** (:func:`tasks.uploads.check_upload`): size, type by magic bytes, declared pixels, truncation,
   polyglots; nothing is decoded here;
4. **the version** (:meth:`infra.model_registry.ModelRegistry.resolve`; ``X-Request-Key`` keeps a caller on one side of
   a canary) and **the deployment** (404 when the alias is not served);
5. **the replicas**: the request goes onto the deployment's list (:class:`infra.serve_queue.ServeQueue`), with a
   publish on the supervisor's wake channel when the deployment is scaled to zero (its scaler starts a replica on
   the next tick, which sees the request waiting), and the handler awaits the reply up to ``YOLOQ_DETECT_TIMEOUT_S``
   (503 when none comes; the replica drops it unread after its deadline).

Steps 1-5's short Redis and S3 calls are synchronous, each bounded by its client's timeout, and run on FastAPI's
thread pool (the rate-limit dependency, then one ``run_in_threadpool`` for steps 2b-5). The wait for the replica is
not: it is a BLPOP on a ``redis.asyncio`` client (:class:`infra.serve_queue.AsyncServeQueue`), awaited on the event
loop, so a request waiting for a cold or busy deployment holds a Redis connection but no thread, and a hundred of them
leave the job routes, the status page and the gate's key lookups their threads. Neither kind of call ever blocks the
event loop itself, so a frozen Redis never holds ``/healthz``. The body is read on the loop too, in an ``async``
dependency, after the rate-limit dependency has let it in.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from infra.deployments import Deployments
from infra.model_registry import ModelRegistry
from infra.rate_limit import RateLimiter
from infra.redis_client import connect, connect_async
from infra.redis_clock import RedisClock
from infra.s3 import S3Store
from infra.serve_queue import AsyncServeQueue, ServeQueue
from infra.serve_queue import Request as Queued
from infra.settings import Settings
from routing.access import refusal
from tasks.errors import (
    ModelNotFound,
    NotAllowed,
    ServingUnavailable,
    SpecRejected,
    StorageError,
    UploadRejected,
)
from tasks.locations import Locations
from tasks.model_records import alias_ref, split_alias
from tasks.uploads import check_upload
from yoloq.http.openapi import errors
from yoloq.http.state import principal_of

router = APIRouter(tags=["serving"])
log = logging.getLogger("yoloq.detect")
DEFAULT_CONF = 0.25  # Ultralytics' own default
REDIS_GRACE_S = 5.0  # the async client's socket waits this much longer than the longest BLPOP
_BINARY = {"type": "string", "format": "binary"}
_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "required": ["image"], "properties": {"image": _BINARY}},
            },
            "image/*": {"schema": _BINARY},
            "application/octet-stream": {"schema": _BINARY},
            "application/json": {
                "schema": {"type": "object", "required": ["uri"], "additionalProperties": False,
                           "properties": {"uri": {"type": "string", "example": "s3://bucket/frames/0001.jpg"}}},
            },
        },
    },
}  # fmt: skip
_RETRY = {"Retry-After": {"description": "whole seconds to the next token", "schema": {"type": "integer"}}}
_ERRORS = errors(404, 415, 422, 429, 502, why={
    400: "bad input: empty upload, no image field, bad alias, bad JSON or uri", 401: "no or unknown API key",
    403: "the key lacks the detect scope, or acts for another team than the deployment's",
    404: "no such alias, or it is not deployed", 502: "the replica failed on this request (details in the API log)",
    413: "body over YOLOQ_DETECT_MAX_MIB, or pixels over YOLOQ_DETECT_MAX_MPX",
    415: "not JPEG, PNG, WebP or BMP", 422: "truncated, polyglot or undecodable image",
    429: "the tenant is over its rate (Retry-After)", 503: "no replica answered in time, or Redis is down",
}, headers={429: _RETRY})  # fmt: skip


class Detection(BaseModel):
    """One object found, in the original image's displayed pixels."""

    box: Annotated[list[float], Field(min_length=4, max_length=4)]  # x1, y1, x2, y2
    class_id: int
    class_name: str
    confidence: float


class Detections(BaseModel):
    """The answer: which version served the request, what it found and where the time went (ms)."""

    model: str
    version: int
    detections: list[Detection]
    timings_ms: dict[str, float]


class UriBody(BaseModel):
    """The JSON form: an object in the API's object store."""

    model_config = ConfigDict(extra="forbid")
    uri: Annotated[str, Field(max_length=1024)]


class Serving:
    """What the detect route uses, built once per app: one binary Redis client (queue and buckets), the registry
    readers, the object store and the limits from settings; and, built on first use inside the event loop, the
    async client that waits for replies (closed by :func:`lifespan`)."""

    def __init__(self, settings: Settings, text_client: Any) -> None:
        url = settings.redis_url
        self.url, self.redis_timeout_s = url, settings.broker_timeout_s
        self.redis = connect(url, settings.broker_timeout_s, binary=True)
        self.queue = ServeQueue(self.redis, url)
        self.clock = RedisClock(self.redis)  # deadlines on the clock the replicas read too
        self._replies: tuple[asyncio.AbstractEventLoop, AsyncServeQueue] | None = None
        self.limiter = RateLimiter(self.redis, settings.detect_rate, settings.detect_burst, url)
        self.models = ModelRegistry(text_client, url)
        self.deployments = Deployments(text_client, url)
        self.store = S3Store(settings)
        self.locations = Locations(remote=True)
        self.timeout_s = settings.detect_timeout_s
        self.max_waiting, self.waiting = settings.detect_max_waiting, 0  # requests of this process waiting now
        self.max_bytes = settings.detect_max_mib << 20
        self.max_pixels = int(settings.detect_max_mpx * 1_000_000)

    def replies(self) -> AsyncServeQueue:
        """The reply waiter of the running loop (built on the loop's first request: its connections belong to it)."""
        loop = asyncio.get_running_loop()
        if self._replies is None or self._replies[0] is not loop:
            read_timeout_s = self.timeout_s + REDIS_GRACE_S
            client = connect_async(self.url, self.redis_timeout_s, binary=True, read_timeout_s=read_timeout_s)
            self._replies = (loop, AsyncServeQueue(client, self.url))
        return self._replies[1]

    async def aclose(self) -> None:
        """Close the reply waiter's connections (the app's shutdown, on its loop)."""
        if self._replies is not None:
            _, replies = self._replies
            self._replies = None
            await replies.aclose()


def install(app: FastAPI, settings: Settings | None, text_client: Any) -> int:
    """Mount the route over ``app.state.serving`` and return the detect body cap for the gate; without settings (a
    test's stand-in Client) the route answers 503."""
    app.state.serving = Serving(settings, text_client) if settings is not None else None
    return settings.detect_max_mib << 20 if settings is not None else 0


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The app's lifespan: on shutdown, close the async Redis client the reply waits used (no leaked sockets)."""
    yield
    serving = getattr(app.state, "serving", None)
    if isinstance(serving, Serving):
        await serving.aclose()


@dataclass(frozen=True)
class Admitted:
    """A request the rate limit let in: its canonical alias, and when it arrived (for ``timings_ms.total``)."""

    alias: str
    started: float


@dataclass(frozen=True)
class Upload:
    """The body as sent: image bytes, or the uri of an object to read them from."""

    data: bytes = b""
    uri: str | None = None


def _serving(request: Request) -> Serving:
    serving = request.app.state.serving
    if not isinstance(serving, Serving):
        raise ServingUnavailable("the detect API is not configured on this server")
    return serving


def admit(request: Request, alias: str) -> Admitted:
    """Spend one of the tenant's tokens (429 when none is left) before any byte of the body is read; a key may call
    only deployments of its own team (403)."""
    started = time.monotonic()
    serving = _serving(request)
    who = principal_of(request)
    serving.limiter.take(who.name)
    ref = alias_ref(alias)
    deployment = serving.deployments.get(ref)
    if deployment is not None and (problem := refusal(who, "detect", deployment.team)):
        raise NotAllowed(problem)
    return Admitted(ref, started)


async def read_upload(request: Request, admitted: Annotated[Admitted, Depends(admit)]) -> Upload:
    """The body in one of its three forms (on the event loop: reading is all it does)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        async with request.form(max_files=1, max_fields=4) as form:
            image = form.get("image")
            if not isinstance(image, UploadFile):
                raise UploadRejected("a multipart upload needs its image in a file field named 'image'", 400)
            return Upload(await image.read())
    body = await request.body()
    if kind != "application/json":
        return Upload(body)
    try:
        return Upload(uri=UriBody.model_validate_json(body).uri)
    except ValidationError:
        raise UploadRejected('a JSON body must be {"uri": "s3://bucket/key"}', 400) from None


def _fetch(serving: Serving, uri: str) -> bytes:
    """The object's bytes (at most the cap plus one: enough to refuse it as too large)."""
    if not uri.startswith("s3://"):
        raise UploadRejected(f"uri {uri[:80]!r} must be s3://bucket/key (the API's object store)", 400)
    try:
        serving.locations.check("uri", uri)
    except SpecRejected as err:
        raise UploadRejected(str(err).removeprefix("invalid job spec: "), 400) from None
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not key or key.endswith("/") or not key.isprintable():  # S3 refuses these itself: a 503 that was the caller's
        raise UploadRejected(f"uri {uri[:80]!r} must name one object (s3://bucket/key, printable)", 400)
    try:
        data = serving.store.get_prefix(bucket, key, serving.max_bytes)
    except StorageError:
        raise ServingUnavailable(f"cannot read {uri} from the object store now") from None
    if data is None:
        raise UploadRejected(f"no object at {uri}", 400)
    return data


@router.post("/v1/models/{alias}/detect", response_model=Detections, responses=_ERRORS, openapi_extra=_BODY)
async def detect(
    request: Request,
    admitted: Annotated[Admitted, Depends(admit)],
    upload: Annotated[Upload, Depends(read_upload)],
    conf: Annotated[float, Query(ge=0, le=1, description="minimum confidence of a detection")] = DEFAULT_CONF,
    x_request_key: Annotated[str | None, Header(max_length=256, description="same key, same version")] = None,
) -> dict[str, Any]:
    """Detect objects in one image with the version of ``alias`` (``name@label``; a bare name is ``name@prod``)
    that serves this request."""
    serving = _serving(request)
    alias = admitted.alias
    if serving.waiting >= serving.max_waiting:  # each waiter holds a Redis connection: the pool stays bounded
        raise ServingUnavailable(f"{serving.waiting} detect requests are waiting on this API process; retry later")
    serving.waiting += 1  # on the event loop's thread only: no lock needed
    try:
        version, request_id = await run_in_threadpool(_enqueue, serving, alias, upload, conf, x_request_key)
        reply = await serving.replies().wait_reply(request_id, serving.timeout_s)
    finally:
        serving.waiting -= 1
    if reply is None:
        raise ServingUnavailable(f"no replica of {alias} answered within {serving.timeout_s:g} s; retry later")
    return _answer(alias, version, reply, admitted.started)


def _enqueue(serving: Serving, alias: str, upload: Upload, conf: float, request_key: str | None) -> tuple[int, str]:
    """Check the image, pick the version and queue the request (on a pool thread: short, bounded Redis and S3 calls);
    wake the supervisor when the deployment is scaled to zero. Returns the version and the request id."""
    data = upload.data if upload.uri is None else _fetch(serving, upload.uri)
    check_upload(data, serving.max_bytes, serving.max_pixels)
    _, version = serving.models.resolve(alias, request_key)
    deployment = serving.deployments.get(alias)
    if deployment is None:
        raise ModelNotFound(f"alias {alias} is not deployed (yoloq serve {alias})")
    request_id, now = uuid.uuid4().hex, serving.clock.now()
    meta = {"id": request_id, "name": split_alias(alias)[0], "version": version, "conf": conf,
            "deadline": now + serving.timeout_s, "enq": now}  # fmt: skip
    serving.queue.push(alias, Queued(meta, data), wake=deployment.replicas == 0)
    return version, request_id


def _answer(alias: str, version: int, reply: dict[str, Any], started: float) -> dict[str, Any]:
    """The replica's reply as the API's answer, or its error with its status (422: the image did not decode)."""
    if "error" in reply:
        status = reply.get("status")
        if isinstance(status, int) and 400 <= status < 500:
            raise HTTPException(status, str(reply["error"]))
        # A replica's own failure: its reason (paths, URIs) goes to the log and the caller gets a 502 without it.
        log.warning("replica of %s failed on a request: %s", alias, str(reply["error"])[:500])
        raise HTTPException(502, f"the replica of {alias} failed on this request; retry, or ask an operator")
    timings = {str(k): float(v) for k, v in dict(reply.get("timings_ms") or {}).items()}
    timings["total"] = round((time.monotonic() - started) * 1000, 3)
    return {"model": alias, "version": int(reply.get("version", version)), "detections": reply.get("detections", []),
            "timings_ms": timings}  # fmt: skip
