"""The HTTP API's keys in Redis, stored hashed: create (the secret is shown once), list, revoke, look up.

A key reads ``yq_<id>_<secret>``: ``id`` (12 hex digits) finds its entry with one ``HGET`` per request, ``secret``
(256 random bits) is kept only as its sha256 and compared in constant time. The secret has full entropy, so a plain
hash is enough (a slow KDF protects guessable passwords, not random keys). No cache: a revoked key is refused from
the next request on. Keys: ``yoloq:api-keys`` (id → JSON entry), ``yoloq:api-key-names`` (name → id). Creating and
revoking are one Lua step each, together with their audit entry (revoking also drops the key's own detect limit,
so a later key of that name starts on the defaults). What a key may do is ``routing.access``.

An entry that does not parse (not JSON, not an object, a field missing or of the wrong type: a hand edit, a partial
restore) is no key: requests that present it get a 401, never a 500, and it is logged by id; ``yoloq key list``
shows it with ``corrupt: true`` so it can be revoked by name.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
from typing import Any, cast

import redis

from infra.audit import AUDIT_KEY, lua_xadd
from infra.rate_limit import RULES_KEY
from infra.redis_client import redis_errors
from routing.access import SCOPES, Principal, key_problem
from tasks.errors import KeyExists, KeyNotFound, KeyRejected
from tasks.records import Event, iso, utc_now

KEYS = "yoloq:api-keys"
NAMES = "yoloq:api-key-names"
PREFIX = "yq_"
_PRESENTED = re.compile(r"^yq_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_NO_MATCH = hashlib.sha256(b"").hexdigest()
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
log = logging.getLogger("yoloq.api_keys")

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
redis.call('HDEL', KEYS[4], ARGV[1])
XADD
return 1
""".replace("XADD", lua_xadd("KEYS[3]", "''", "ARGV[2]"))


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _parsed(key_id: str, text: str | None) -> tuple[Principal, str] | None:
    """An entry's holder and stored sha256, or None when it is absent or corrupt (logged: the key stops working)."""
    if not text:
        return None
    try:
        entry = json.loads(text)
        scopes, digest = entry["scopes"], entry["sha256"]
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise TypeError("scopes must be a list of strings")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise TypeError("sha256 must be 64 hex digits")
        return Principal(str(entry["name"]), str(entry["team"]), frozenset(scopes)), digest
    except (ValueError, TypeError, KeyError) as err:  # JSONDecodeError is a ValueError; a non-object: TypeError
        log.error("API key %s: its entry in Redis is corrupt (%s: %s); refusing it", key_id, type(err).__name__, err)
        return None


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
            raise KeyExists(f"an API key named {name!r} exists; revoke it first or pick another name")
        return f"{PREFIX}{key_id}_{secret}"

    def revoke(self, name: str, by: str) -> None:
        """Delete a key and its own detect limit: the next request that carries it is refused (401)."""
        event = Event(at=iso(utc_now()), type="key-revoked", reason=f"key {name}", by=by)
        with redis_errors(self._url):
            keys, args = [KEYS, NAMES, AUDIT_KEY, RULES_KEY], [name, event.model_dump_json(exclude_none=True)]
            gone = self._revoke(keys=keys, args=args)
        if not gone:
            raise KeyNotFound(f"no API key named {name[:80]!r} (yoloq key list shows them)")

    def exists(self, name: str) -> bool:
        """Whether a key of that name exists (a limit is set only for a tenant that can call)."""
        with redis_errors(self._url):
            return bool(self._r.hexists(NAMES, name))

    def entries(self) -> list[dict[str, Any]]:
        """Every key's name, id, team, scopes and creation, by name; never a secret or its hash."""
        with redis_errors(self._url):
            raw = cast("dict[str, str]", self._r.hgetall(KEYS))
            names = {key_id: name for name, key_id in cast("dict[str, str]", self._r.hgetall(NAMES)).items()}
        return sorted((_shown(key_id, text, names) for key_id, text in raw.items()), key=lambda e: str(e["name"]))

    def lookup(self, presented: str) -> Principal | None:
        """The key's holder, or None for a malformed, unknown, revoked or wrong key: one HGET, constant-time compare."""
        match = _PRESENTED.fullmatch(presented)
        if match is None:
            return None
        with redis_errors(self._url):
            text = cast("str | None", self._r.hget(KEYS, match.group(1)))
        found = _parsed(match.group(1), text)
        stored = found[1] if found is not None else _NO_MATCH
        if not hmac.compare_digest(_digest(match.group(2)), stored) or found is None:
            return None
        return found[0]


def _shown(key_id: str, text: str, names: dict[str, str]) -> dict[str, Any]:
    """One key as ``yoloq key list`` shows it, never its hash; a corrupt entry by its id and the name it was created
    under (``names``: id → name), marked corrupt, so that an operator can revoke it."""
    if _parsed(key_id, text) is None:
        return {"id": key_id, "name": names.get(key_id, ""), "team": "", "scopes": [], "created_at": "",
                "created_by": "", "corrupt": True}  # fmt: skip
    return {"id": key_id, **{k: v for k, v in json.loads(text).items() if k != "sha256"}}
