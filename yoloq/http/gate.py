"""The gate every request passes before any route sees it (pure ASGI: nothing has read the body yet).

1. **Auth** (:mod:`yoloq.http.auth`): every request but ``GET /healthz`` carries an API key (or the admin token), or
   gets 401 with a basic-auth challenge, before a byte of its body is read or parsed. A ``yq_`` key costs one Redis
   ``HGET`` (on the thread pool: the event loop never waits on Redis; Redis down is a 503), with no cache, so a
   revoked key is refused from the next request on. Basic auth (what a browser on the status page sends) is accepted
   for reads only: a browser attaches it to cross-site form posts too, so a write needs a bearer key, which no
   hostile page can make a browser send; and a write whose ``Origin`` names another site than the one it was sent to
   is refused (403) whatever it carries.
2. **Scope**: a request needs a key whose scopes allow its action (``routing.access``: a read needs any scope but
   ``detect``, the detect route needs ``detect``), or it is refused (403) before its body is read; the routes check
   the key's team against the job's. The key rides in the scope as :data:`PRINCIPAL` for the routes, which record
   what they do as ``key:<name>``.
3. **Size**: a declared Content-Length over the cap is refused at once (413, connection closed); a chunked body is cut
   off when it crosses the cap. A job spec is a few hundred bytes: a body near the cap is a mistake or an attack. The
   detect route takes images and has its own cap (``YOLOQ_DETECT_MAX_MIB``), enforced the same two ways.
4. **JSON by default**: ``curl -d`` and ``urllib`` label a body ``x-www-form-urlencoded`` (or ``text/plain``), and
   ``requests.post(data=...)`` or ``http.client`` send none; the API has always read such bodies as JSON, so those are
   labelled JSON (other types, e.g. multipart, are left alone and fail validation with a 400). Not on the detect
   route: its body is an image, whatever a program labels it.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from routing.access import Principal, refusal
from tasks.errors import BrokerUnavailable
from yoloq.http.auth import CHALLENGE, READS, REFUSAL, KeyLookup, action_of, is_detect, presented, root_key

MAX_BODY_BYTES = 1 << 20
READ_AS_JSON = (b"", b"application/x-www-form-urlencoded", b"text/plain")
OPEN = {("GET", "/healthz")}
PRINCIPAL = "yoloq.principal"


class Gate:
    """Auth and scope, then the size cap, then the JSON label, in that order (see the module docstring)."""

    def __init__(
        self, app: ASGIApp, token: str, keys: KeyLookup, max_bytes: int = MAX_BODY_BYTES, upload_bytes: int = 0
    ) -> None:
        self.app, self.token, self.keys, self.max_bytes = app, token, keys, max_bytes
        self.upload_bytes = upload_bytes or max_bytes  # the detect route's cap (images, not job specs)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if (scope["method"], scope["path"]) not in OPEN:
            verdict = await self._authorize(scope["method"], scope["path"], headers)
            if not isinstance(verdict, Principal):
                await _refuse(send, *verdict)
                return
            scope = {**scope, PRINCIPAL: verdict}
        if scope["method"] not in READS and _cross_site(headers):
            await _refuse(send, 403, "cross-origin writes are refused (the Origin is not this API's own)")
            return
        declared = headers.get(b"content-length", b"0")
        if not declared.isdigit():
            await _refuse(send, 400, "malformed Content-Length")
            return
        upload = is_detect(scope["path"])
        cap = self.upload_bytes if upload else self.max_bytes
        if int(declared) > cap:
            await _refuse(send, 413, f"request body over {cap} bytes")
            return
        has_body = int(declared) > 0 or b"transfer-encoding" in headers
        if has_body and not upload and headers.get(b"content-type", b"").split(b";")[0].strip().lower() in READ_AS_JSON:
            kept = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope = {**scope, "headers": [*kept, (b"content-type", b"application/json")]}
        await self.app(scope, self._capped(receive, cap), send)

    async def _authorize(
        self, method: str, path: str, headers: dict[bytes, bytes]
    ) -> Principal | tuple[int, str, dict[str, str]]:
        """The request's key holder when it may go on, else the refusal (status, reason, headers)."""
        try:
            who = await self._principal(method, headers)
        except BrokerUnavailable as err:
            return 503, f"cannot check the API key: {err}", {}
        if who is None:
            return 401, REFUSAL, CHALLENGE
        if problem := refusal(who, action_of(method, path)):
            return 403, problem, {}
        return who

    async def _principal(self, method: str, headers: dict[bytes, bytes]) -> Principal | None:
        """Who the request's key belongs to; None for no key, a wrong one, or basic auth on a write."""
        credential = headers.get(b"authorization", b"").decode("latin-1")
        if method not in READS and not credential.lower().startswith("bearer "):
            return None
        secret = presented(credential)
        if not secret:
            return None
        if root := root_key(secret, self.token):
            return root
        return await run_in_threadpool(self.keys, secret)

    def _capped(self, receive: Receive, cap: int) -> Receive:
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > cap:  # FastAPI passes an HTTPException from the body read through to its handler
                raise HTTPException(413, f"request body over {cap} bytes")
            return message

        return counted


def _cross_site(headers: dict[bytes, bytes]) -> bool:
    """A browser names the page's site in ``Origin``; programs (curl, the Python client) send none."""
    origin = headers.get(b"origin")
    if origin is None:
        return False
    _, _, where = origin.decode("latin-1").partition("://")
    return where.lower() != headers.get(b"host", b"").decode("latin-1").lower()


async def _refuse(send: Send, status: int, reason: str, extra: dict[str, str] | None = None) -> None:
    body = json.dumps({"error": reason}).encode()
    headers: list[Any] = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                          (b"connection", b"close")]  # fmt: skip
    headers += [(k.lower().encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
