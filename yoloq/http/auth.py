"""Credentials for every route but ``/healthz``: an API key (``yq_…``, ``yoloq key create``) or ``YOLOQ_API_TOKEN``
(the key named ``admin``), as ``Authorization: Bearer <key>`` for programs, or HTTP basic auth with the key as the
password so that a browser can open the status page (reads only). The gate (:mod:`yoloq.http.gate`) enforces it,
and which scope each route needs (:func:`action_of`; the rules are :mod:`routing.access`); the security schemes
here only describe it in the OpenAPI document."""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Callable

from fastapi.security import HTTPBasic, HTTPBearer

from routing.access import ROOT, Principal

CHALLENGE = {"WWW-Authenticate": 'Basic realm="yoloq"'}
REFUSAL = "authentication required: bearer API key (or basic auth, key as password, for reads)"
READS = {"GET", "HEAD"}
# Documentation only (auto_error=False: they never refuse anything themselves).
BEARER = HTTPBearer(auto_error=False, description="an API key (yoloq key create) or YOLOQ_API_TOKEN")
BASIC = HTTPBasic(auto_error=False, description="any user, an API key as the password; GET only")
KeyLookup = Callable[[str], Principal | None]
_JOB_ACTION = re.compile(r"^/api/v1/jobs/[^/]+/(cancel|preempt|approve|freeze|unfreeze|promote)$")
_MODEL_ACTION = re.compile(r"^/api/v1/models/[^/]+/aliases/[^/]+(/canary|/promote|/rollback)?$")
_DETECT = re.compile(r"^/v1/models/[^/]+/detect$")
_WEBHOOK = re.compile(r"^/api/v1/webhooks(/[^/]+(/test)?)?$")
_KEYS = "/api/v1/keys"  # managing keys, reads included, is admin's alone (yoloq.http.keys)
_WRITES = ((_DETECT, "detect"), (_MODEL_ACTION, "model"), (_WEBHOOK, "webhook"))


def presented(header: str) -> str | None:
    """The key a request carries: the bearer value, or the basic-auth password; None when malformed."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            _, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return password
    return None


def root_key(secret: str, token: str) -> Principal | None:
    """``YOLOQ_API_TOKEN`` is the admin key, compared in constant time (no Redis, so it works while Redis is down)."""
    return ROOT if hmac.compare_digest(secret.encode(), token.encode()) else None


def is_detect(path: str) -> bool:
    """Whether ``path`` is the detect route: it takes image bodies (its own cap) and the ``detect`` scope."""
    return _DETECT.fullmatch(path) is not None


def action_of(method: str, path: str) -> str:
    """The action a request takes, by ``routing.access`` name (``read``: any key with a scope but ``detect``)."""
    if path == _KEYS or path.startswith(_KEYS + "/"):
        return "admin"
    if method in READS:
        return "read"
    if path == "/api/v1/jobs":
        return "submit"
    if match := _JOB_ACTION.fullmatch(path):
        return match.group(1)
    # a write no rule names: only an admin key gets as far as its 404
    return next((action for pattern, action in _WRITES if pattern.fullmatch(path)), "admin")
