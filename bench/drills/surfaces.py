"""The HTTP surfaces a drill talks to (the API with its status page and /metrics, Flower), started on a stack with
generated credentials, and a timed HTTP call that never goes through a proxy. Used by the load, hostile-input and
security drills."""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from bench.harness.stack import poll
from infra.processes import free_port
from workers.stack import Services, with_credentials

BODY_CAP = 1 << 20  # the API's (yoloq/http/gate.py)
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only: never a proxy


@dataclass(frozen=True)
class Answer:
    """One HTTP answer: status, body (JSON when it parses, text otherwise) and seconds it took."""

    status: int
    body: Any
    seconds: float
    text: str


def call(url: str, method: str = "GET", auth: str | None = None, data: bytes | None = None,
         timeout_s: float = 30.0, content_type: str = "application/json") -> Answer:  # fmt: skip
    """One request; an HTTP error status is an answer like any other (a refused connection raises OSError). A body
    over the API's cap goes through :func:`_announced`: the server answers from the headers and may close first."""
    if data is not None and len(data) > BODY_CAP:
        return _announced(url, method, auth, data, timeout_s, content_type)
    request = urllib.request.Request(url, data=data, method=method)
    if auth:
        request.add_header("Authorization", auth)
    if data is not None:
        request.add_header("Content-Type", content_type)
    started = time.perf_counter()
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    seconds = time.perf_counter() - started
    text = raw.decode(errors="replace")
    try:
        body: Any = json.loads(text)
    except ValueError:
        body = text
    return Answer(status, body, seconds, text)


def _announced(url: str, method: str, auth: str | None, data: bytes, timeout_s: float, content_type: str) -> Answer:
    """Send the headers, then as much of the body as the server takes (it may refuse on Content-Length and close),
    then read its answer."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout_s)
    started = time.perf_counter()
    try:
        conn.putrequest(method, parts.path + (f"?{parts.query}" if parts.query else ""))
        for name, value in (("Content-Type", content_type), ("Content-Length", str(len(data))),
                            *((("Authorization", auth),) if auth else ())):  # fmt: skip
            conn.putheader(name, value)
        conn.endheaders()
        with contextlib.suppress(OSError):  # the server answered from the headers and closed
            conn.send(data)
        response = conn.getresponse()
        status, raw = response.status, response.read()
    finally:
        conn.close()
    text = raw.decode(errors="replace")
    try:
        body: Any = json.loads(text)
    except ValueError:
        body = text
    return Answer(status, body, time.perf_counter() - started, text)


def basic(pair: str) -> str:
    """An ``Authorization`` value for basic auth with ``user:password``."""
    return "Basic " + base64.b64encode(pair.encode()).decode()


@dataclass(frozen=True)
class Surfaces:
    """URLs and credentials of the API and (when started) Flower."""

    api: str
    token: str
    flower: str = ""
    flower_pair: str = ""

    @property
    def bearer(self) -> str:
        """The admin key as a bearer header value."""
        return f"Bearer {self.token}"

    def get(self, path: str, timeout_s: float = 30.0) -> Answer:
        """GET on the API with the admin key."""
        return call(self.api + path, auth=self.bearer, timeout_s=timeout_s)

    def flower_get(self, path: str, timeout_s: float = 30.0) -> Answer:
        """GET on Flower with its basic-auth pair."""
        return call(self.flower + path, auth=basic(self.flower_pair), timeout_s=timeout_s)


def _answers(url: str) -> bool:
    try:
        return call(url, timeout_s=2).status in (200, 401)
    except OSError:
        return False


def start(services: Services, flower: bool = True, timeout_s: float = 60.0) -> Surfaces:
    """Generate an API token and a Flower password into the stack's settings, start ``yoloq api`` (and ``yoloq
    flower``) on free ports, and return once each answers."""
    services.settings = with_credentials(services.settings)
    token = services.settings.api_token.get_secret_value()
    api = services.start_surface("api", free_port())
    flower_url = services.start_surface("flower", free_port()) if flower else ""
    poll(lambda: _answers(api + "/healthz"), 0.1, timeout_s)
    if flower_url:
        poll(lambda: _answers(flower_url + "/healthcheck"), 0.1, timeout_s)
    return Surfaces(api, token, flower_url, services.settings.flower_basic_auth.get_secret_value())


def percentiles(seconds: list[float]) -> dict[str, float]:
    """p50, p99 and max in milliseconds (nearest rank), with the sample count."""
    if not seconds:
        return {}
    ordered = sorted(seconds)

    def rank(q: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {"p50_ms": rank(0.5), "p99_ms": rank(0.99), "max_ms": round(1000 * ordered[-1], 2), "n": len(ordered)}
