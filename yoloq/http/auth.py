"""One credential for every route but ``/healthz``: ``Authorization: Bearer <token>`` for programs, or HTTP basic
auth with the token as the password so that a browser can open the status page."""

from __future__ import annotations

import base64
import binascii
import hmac

from fastapi import HTTPException, Request

CHALLENGE = {"WWW-Authenticate": 'Basic realm="yoloq"'}
REFUSAL = "authentication required: bearer token (or basic auth, token as password)"


def authorized(header: str, token: str) -> bool:
    """Bearer token, or basic auth whose password is the token, compared in constant time."""
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


def require_token(request: Request) -> None:
    """Router dependency: a 401 with a basic-auth challenge (a browser then asks for credentials) unless authorized."""
    token: str = request.app.state.token
    if not authorized(request.headers.get("Authorization", ""), token):
        raise HTTPException(401, REFUSAL, headers=CHALLENGE)
