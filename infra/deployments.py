"""Deployments in Redis (``yoloq:deployments``: alias → JSON :class:`~tasks.model_records.Deployment`): which aliases
are served, with what bounds, batching and targets. Every change is audited in the same Lua step."""

from __future__ import annotations

import json
from typing import cast

import redis
from pydantic import ValidationError

from infra.audit import AUDIT_KEY, lua_xadd
from infra.redis_client import redis_errors
from tasks.model_records import Deployment
from tasks.records import Event, iso, utc_now

KEY = "yoloq:deployments"

_PUT = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
XADD
return 1
""".replace("XADD", lua_xadd("KEYS[2]", "''", "ARGV[3]"))

_DROP = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
XADD
return 1
""".replace("XADD", lua_xadd("KEYS[2]", "''", "ARGV[2]"))


def _event(kind: str, alias: str, by: str, reason: str) -> str:
    return Event(at=iso(utc_now()), type=kind, reason=reason, by=by, deployment=alias).model_dump_json()


class Deployments:
    """Read and change deployments; readers (API, autoscaler, replicas) see a change from their next read."""

    def __init__(self, client: redis.Redis, url: str = "") -> None:
        self.client = client
        self.url = url

    def get(self, alias: str) -> Deployment | None:
        """The deployment of ``alias`` (canonical ``name@label``), or None when it is not served."""
        with redis_errors(self.url):
            raw = cast("str | None", self.client.hget(KEY, alias))
        return _parse(raw)

    def all(self) -> list[Deployment]:
        """Every deployment whose entry parses, by alias."""
        with redis_errors(self.url):
            raw = cast("dict[str, str]", self.client.hgetall(KEY))
        found = (_parse(text) for _, text in sorted(raw.items()))
        return [d for d in found if d is not None]

    def put(self, deployment: Deployment, by: str, reason: str) -> None:
        """Create or replace a deployment (its audit entry says who and why)."""
        event = _event("deployment-changed", deployment.alias, by, reason)
        with redis_errors(self.url):
            self.client.eval(_PUT, 2, KEY, AUDIT_KEY, deployment.alias, deployment.model_dump_json(), event)

    def drop(self, alias: str, by: str) -> bool:
        """Stop serving ``alias`` (replicas drain when their jobs are cancelled); False when it was not deployed."""
        event = _event("deployment-removed", alias, by, "deployment removed")
        with redis_errors(self.url):
            return bool(self.client.eval(_DROP, 2, KEY, AUDIT_KEY, alias, event))


def _parse(raw: str | None) -> Deployment | None:
    if raw is None:
        return None
    try:
        return Deployment.model_validate(json.loads(raw))
    except (ValueError, ValidationError):
        return None
