"""The HTTP API's keys in Redis, stored hashed: create (the secret is shown once), list, revoke, look up.

A key reads ``yq_<id>_<secret>``: ``id`` (12 hex digits) finds its entry with one ``HGET`` per request, ``secret``
(256 random bits) is kept only as its sha256 and compared in constant time. The secret has full entropy, so a plain
hash is enough (a slow KDF protects guessable passwords, not random keys). No cache: a revoked key is refused from
the next request on. Keys: ``yoloq:api-keys`` (id → JSON entry), ``yoloq:api-key-names`` (name → id). Creating and
revoking are one Lua step each, together with their audit entry. What a key may do is ``routing.access``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from typing import Any, cast

import redis

from infra.audit import AUDIT_KEY, lua_xadd
from infra.redis_client import redis_errors
from routing.access import SCOPES, Principal, key_problem
from tasks.errors import KeyRejected
from tasks.records import Event, iso, utc_now

KEYS = "yoloq:api-keys"
NAMES = "yoloq:api-key-names"
PREFIX = "yq_"
_PRESENTED = re.compile(r"^yq_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_NO_MATCH = hashlib.sha256(b"").hexdigest()

_CREATE = """
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
XADD
return 1
""".replace("XADD", lua_xadd("KEYS[3]", "''", "ARGV[4]"))

_REVOKE = """
local id = redis.call('HGET', KEYS[2], ARGV[1])
if not id then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], id)
XADD
return 1
""".replace("XADD", lua_xadd("KEYS[3]", "''", "ARGV[2]"))


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiKeys:
    """Create, list, revoke and authenticate API keys (see the module docstring)."""

    def __init__(self, client: redis.Redis, url: str = "") -> None:
        self._r, self._url = client, url
        self._create = client.register_script(_CREATE)
        self._revoke = client.register_script(_REVOKE)

    def create(self, name: str, team: str, scopes: list[str], by: str) -> str:
        """Store a new key and return it whole: the only time its secret exists outside the caller's hands."""
        if problem := key_problem(name, team, scopes):
            raise KeyRejected(f"invalid API key: {problem}")
        key_id, secret, now = secrets.token_hex(6), secrets.token_urlsafe(32), iso(utc_now())
        ordered = [s for s in SCOPES if s in scopes]
        entry = {"name": name, "team": team, "scopes": ordered, "sha256": _digest(secret), "created_at": now,
                 "created_by": by}  # fmt: skip
        event = Event(at=now, type="key-created", reason=f"key {name}: team {team}, scopes {','.join(ordered)}", by=by)
        args = [name, key_id, json.dumps(entry), event.model_dump_json(exclude_none=True)]
        with redis_errors(self._url):
            made = self._create(keys=[KEYS, NAMES, AUDIT_KEY], args=args)
        if not made:
            raise KeyRejected(f"an API key named {name!r} exists; revoke it first or pick another name")
        return f"{PREFIX}{key_id}_{secret}"

    def revoke(self, name: str, by: str) -> None:
        """Delete a key: the next request that carries it is refused (401)."""
        event = Event(at=iso(utc_now()), type="key-revoked", reason=f"key {name}", by=by)
        with redis_errors(self._url):
            gone = self._revoke(keys=[KEYS, NAMES, AUDIT_KEY], args=[name, event.model_dump_json(exclude_none=True)])
        if not gone:
            raise KeyRejected(f"no API key named {name[:80]!r} (yoloq key list shows them)")

    def entries(self) -> list[dict[str, Any]]:
        """Every key's name, id, team, scopes and creation, by name; never a secret or its hash."""
        with redis_errors(self._url):
            raw = cast("dict[str, str]", self._r.hgetall(KEYS))
        shown = [{"id": key_id, **{k: v for k, v in json.loads(text).items() if k != "sha256"}}
                 for key_id, text in raw.items()]  # fmt: skip
        return sorted(shown, key=lambda e: str(e["name"]))

    def lookup(self, presented: str) -> Principal | None:
        """The key's holder, or None for a malformed, unknown, revoked or wrong key: one HGET, constant-time compare."""
        match = _PRESENTED.fullmatch(presented)
        if match is None:
            return None
        with redis_errors(self._url):
            text = cast("str | None", self._r.hget(KEYS, match.group(1)))
        entry = json.loads(text) if text else {}
        if not hmac.compare_digest(_digest(match.group(2)), entry.get("sha256", _NO_MATCH)) or not entry:
            return None
        return Principal(entry["name"], entry["team"], frozenset(entry["scopes"]))
