"""The HTTP API (tornado, already in the stack through Flower): submit and operate jobs, fleet views for KEDA and
dashboards, Prometheus metrics, and the status page.

Every route but ``/healthz`` needs the token: ``Authorization: Bearer <YOLOQ_API_TOKEN>`` for programs, or HTTP
basic auth with the token as the password for a browser on the status page. Errors are JSON
``{"error": "..."}`` with 400 (bad input), 401, 404, 409 (state conflict), 413 (body too big) or 503 (broker down);
a rejected request changes nothing.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import time
from pathlib import Path
from typing import Any

import tornado.web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from infra.metrics import YoloqCollector
from routing.tiers import parse_tier
from tasks.errors import BrokerUnavailable, InvalidTransition, JobNotFound, SpecRejected, YoloqError
from tasks.states import JobState
from yoloq.client import Client

MAX_BODY_BYTES = 1 << 20  # a job spec is a few hundred bytes; anything near this is a mistake or an attack
PAGE = Path(__file__).with_name("status_page.html")
_STATUS = {SpecRejected: 400, JobNotFound: 404, InvalidTransition: 409, BrokerUnavailable: 503}


def _tier(text: str) -> Any:
    """A tier from user text, or a 400 naming the valid ones."""
    try:
        return parse_tier(text)
    except ValueError as err:
        raise SpecRejected(str(err)) from None


def _authorized(header: str, token: str) -> bool:
    """Bearer token, or basic auth whose password is the token (constant-time comparison)."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return hmac.compare_digest(value.strip().encode(), token.encode())
    if scheme.lower() == "basic":
        try:
            _, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return hmac.compare_digest(password.encode(), token.encode())
    return False


@tornado.web.stream_request_body
class Base(tornado.web.RequestHandler):
    """Auth on every request, JSON in and out, typed errors mapped to status codes."""

    open_route = False

    def initialize(self, client: Client, token: str) -> None:
        """Shared per-application state: one Client (its Redis pool, cached admission rules)."""
        self.client, self.token, self._body = client, token, bytearray()

    def prepare(self) -> None:
        """Refuse unauthenticated calls and oversized bodies from their headers, before reading any body."""
        if not (self.open_route or _authorized(self.request.headers.get("Authorization", ""), self.token)):
            self.send_error(401, reason="authentication required: bearer token (or basic auth, token as password)")
            return
        if int(self.request.headers.get("Content-Length", "0") or 0) > MAX_BODY_BYTES:
            self.send_error(413, reason=f"request body over {MAX_BODY_BYTES} bytes")

    def data_received(self, chunk: bytes) -> None:
        """Collect the body (streamed so that the size check above runs first); a chunked upload is capped too."""
        self._body += chunk
        if len(self._body) > MAX_BODY_BYTES:
            raise tornado.web.HTTPError(413, reason=f"request body over {MAX_BODY_BYTES} bytes")

    def write_json(self, document: Any, status: int = 200) -> None:
        """One JSON document as the response."""
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(document, default=str))

    def body_json(self) -> dict[str, Any]:
        """The request body as a JSON object, or a 400."""
        try:
            doc = json.loads(bytes(self._body) or b"{}")
        except ValueError as err:
            raise SpecRejected(f"request body is not JSON: {err}") from None
        if not isinstance(doc, dict):
            raise SpecRejected("request body must be a JSON object")
        return doc

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Errors as JSON with a one-line reason."""
        error = kwargs.get("exc_info", (None, None))[1]
        reason = str(error) if isinstance(error, YoloqError) else self._reason
        if status_code == 401:  # send_error cleared the headers: the challenge lets a browser ask for credentials
            self.set_header("WWW-Authenticate", 'Basic realm="yoloq"')
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": reason}))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        """Expected errors are not stack traces in the log."""
        if not isinstance(value, YoloqError):
            super().log_exception(typ, value, tb)

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, YoloqError):
            self.send_error(next((s for t, s in _STATUS.items() if isinstance(e, t)), 500), exc_info=(type(e), e, None))
            return
        super()._handle_request_exception(e)


class Health(Base):
    """Liveness for orchestrators: no auth, no Redis."""

    open_route = True

    def get(self) -> None:
        """Always ok while the process serves."""
        self.write_json({"ok": True})


class Jobs(Base):
    """List and submit jobs."""

    def get(self) -> None:
        """Jobs newest first, filtered like ``yoloq jobs``."""
        state = self.get_query_argument("state", None)
        tier = self.get_query_argument("tier", None)
        try:
            limit = min(int(self.get_query_argument("limit", "100")), 1000)
            chosen = JobState(state) if state else None
        except ValueError as err:
            raise SpecRejected(f"bad query: {err}") from None
        records = self.client.jobs(chosen, _tier(tier) if tier else None, limit)
        self.write_json([r.model_dump(mode="json") for r in records])

    def post(self) -> None:
        """Submit one job spec (the same JSON as the Python API); 201 with its id, state and queue."""
        handle = self.client.submit(self.body_json())
        self.write_json(handle.as_dict(), status=201)


class Job(Base):
    """One job's record."""

    def get(self, job_id: str) -> None:
        """What ``yoloq job ID --json`` prints."""
        self.write_json(self.client.job(job_id).model_dump(mode="json"))


class JobAction(Base):
    """Operator actions on a job, signed ``api`` in its history and the audit log."""

    def post(self, job_id: str, action: str) -> None:
        """cancel, preempt, approve, freeze, unfreeze, or promote (body ``{"tier": ...}``)."""
        body, by = self.body_json(), "api"
        result: Any = None
        if action == "cancel":
            result = self.client.cancel(job_id, by=by).value
        elif action == "preempt":
            self.client.preempt(job_id, reason=str(body.get("reason", "operator request")), by=by)
        elif action == "approve":
            self.client.approve(job_id, by=by)
        elif action in {"freeze", "unfreeze"}:
            self.client.freeze(job_id, action == "freeze", by=by)
        else:  # promote (the route admits no other action)
            result = self.client.promote(job_id, _tier(str(body.get("tier", ""))), by=by)
        self.write_json({"job_id": job_id, "action": action, "result": result})


class View(Base):
    """Read-only fleet views: queues (KEDA reads ``tiers.<tier>.depth``), status, SLA, audit."""

    def get(self, name: str) -> None:
        """One view as JSON."""
        if name == "queues":
            self.write_json(self.client.queues())
        elif name == "status":
            self.write_json(self.client.status())
        elif name == "sla":
            self.write_json({"now": self.client.sla(), "history": self.client.sla_history()})
        else:  # audit
            job = self.get_query_argument("job", None)
            self.write_json(self.client.audit(limit=int(self.get_query_argument("limit", "50")), job_id=job))


class Metrics(Base):
    """Prometheus exposition, behind the same auth as everything else."""

    def initialize(self, client: Client, token: str) -> None:
        """One collector registry per application, reading Redis at each scrape."""
        super().initialize(client, token)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(YoloqCollector(client.rt.registry.client, lambda: _views(client)))

    def get(self) -> None:
        """The text format."""
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(generate_latest(self.registry))


class StatusPage(Base):
    """The operators' page: static HTML whose script reads the JSON views with the browser's credentials."""

    def get(self) -> None:
        """Serve the page."""
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(PAGE.read_bytes())


def _views(client: Client) -> dict[str, Any]:
    now = time.time()
    return {"queues": client.queues(now), "status": client.status(now)}


def make_app(client: Client, token: str) -> tornado.web.Application:
    """The routes; ``token`` must be non-empty (the command refuses to start otherwise)."""
    shared = {"client": client, "token": token}
    return tornado.web.Application(
        [
            (r"/healthz", Health, shared),
            (r"/api/v1/jobs", Jobs, shared),
            (r"/api/v1/jobs/([A-Za-z0-9_-]+)", Job, shared),
            (r"/api/v1/jobs/([A-Za-z0-9_-]+)/(cancel|preempt|approve|freeze|unfreeze|promote)", JobAction, shared),
            (r"/api/v1/(queues|status|sla|audit)", View, shared),
            (r"/metrics", Metrics, shared),
            (r"/(?:status)?", StatusPage, shared),
        ],
    )
