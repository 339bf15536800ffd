"""Request bodies, before any route sees them.

- Capped before anything reads them: a job spec is a few hundred bytes, so a body near the cap is a mistake or an
  attack. Pure ASGI, so the refusal comes from the headers alone (413, connection closed).
- JSON whatever the default type says: ``curl -d`` and ``urllib`` label a body ``x-www-form-urlencoded`` (or
  ``text/plain``) unless told otherwise; the API has always read such bodies as JSON, so those two labels are
  read as JSON (other types, e.g. multipart, are left alone and fail validation with a 400).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 1 << 20
READ_AS_JSON = (b"application/x-www-form-urlencoded", b"text/plain")


class BodyGuard:
    """Refuse a declared Content-Length over the cap at once, cut a chunked body off when it crosses it, and label
    default-typed bodies as the JSON they are."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.max_bytes:
            await _refuse(send, 413 if declared.isdigit() else 400)
            return
        if headers.get(b"content-type", b"").split(b";")[0].strip().lower() in READ_AS_JSON:
            kept = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope = {**scope, "headers": [*kept, (b"content-type", b"application/json")]}
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:  # FastAPI passes an HTTPException from the body read through to its handler
                raise HTTPException(413, f"request body over {self.max_bytes} bytes")
            return message

        await self.app(scope, counted, send)


async def _refuse(send: Send, status: int) -> None:
    reason = f"request body over {MAX_BODY_BYTES} bytes" if status == 413 else "malformed Content-Length"
    body = json.dumps({"error": reason}).encode()
    headers: list[Any] = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                          (b"connection", b"close")]  # fmt: skip
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
