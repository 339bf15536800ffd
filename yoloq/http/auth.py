"""One credential for every route but ``/healthz``: ``Authorization: Bearer <token>`` for programs, or HTTP basic
auth with the token as the password so that a browser can open the status page (reads only). The gate
(:mod:`yoloq.http.gate`) enforces it; the security schemes here only describe it in the OpenAPI document."""

from __future__ import annotations

import base64
import binascii
import hmac

from fastapi.security import HTTPBasic, HTTPBearer

CHALLENGE = {"WWW-Authenticate": 'Basic realm="yoloq"'}
REFUSAL = "authentication required: bearer token (or basic auth, token as password, for reads)"
# Documentation only (auto_error=False: they never refuse anything themselves).
BEARER = HTTPBearer(auto_error=False, description="YOLOQ_API_TOKEN")
BASIC = HTTPBasic(auto_error=False, description="any user, YOLOQ_API_TOKEN as the password; GET only")


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
