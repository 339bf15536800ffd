"""Cordoned GPUs in Redis: a device whose flag is set takes no new jobs until an operator uncordons it.

``yoloq:cordon:{host}:{index}`` = JSON ``{host, index, reason, by, at}``, with no TTL: the flag outlives the worker,
so a restarted worker on a bad device stays out of rotation (Celery's ``cancel_consumer`` alone is forgotten at a
restart). Setting and clearing a flag adds an entry to the audit log in the same atomic step.

Simulated devices (``YOLOQ_GPUS``) read as healthy unless ``yoloq:gpu-fault:{host}:{index}`` holds a JSON object of
reading fields (e.g. ``{"ecc_uncorrected": 2}``): the drill that exercises the health check without a broken GPU.
"""

from __future__ import annotations

import json
from typing import Any, cast

import redis

from infra.audit import AUDIT_KEY, lua_xadd
from infra.redis_client import redis_errors
from tasks.records import Event

CORDON_PREFIX = "yoloq:cordon:"
FAULT_PREFIX = "yoloq:gpu-fault:"

_CORDON = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then XADD return 1 end
return 0
""".replace("XADD", lua_xadd("KEYS[2]", "''", "ARGV[2]"))
_UNCORDON = """
if redis.call('DEL', KEYS[1]) == 1 then XADD return 1 end
return 0
""".replace("XADD", lua_xadd("KEYS[2]", "''", "ARGV[1]"))


def device_key(host: str, index: int) -> str:
    """The cordon flag's key for one device."""
    return f"{CORDON_PREFIX}{host}:{index}"


def taking_work(live: list[dict[str, Any]], cordons: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The live worker claims that take work now (ready, device not cordoned): what the supervisor may place on and
    what queue positions replay, one definition for both."""
    cordoned = {(str(f.get("host")), int(f.get("index", -1))) for f in cordons}

    def device(claim: dict[str, Any]) -> tuple[str, int]:
        return str(claim.get("host")), int((claim.get("gpu") or {}).get("index", -1))

    return [w for w in live if w.get("ready_at") and device(w) not in cordoned]


class CordonStore:
    """Set, clear and read cordon flags (and, for drills, a simulated device's injected fault)."""

    def __init__(self, client: redis.Redis, url: str = "") -> None:
        self._r, self._url = client, url
        self._cordon = client.register_script(_CORDON)
        self._uncordon = client.register_script(_UNCORDON)

    def cordon(self, host: str, index: int, reason: str, by: str, at: str) -> bool:
        """Cordon a device; False when it already was (its first reason is kept)."""
        flag = json.dumps({"host": host, "index": index, "reason": reason, "by": by, "at": at})
        event = Event(at=at, type="cordoned", reason=f"GPU {index} on {host}: {reason}", by=by)
        with redis_errors(self._url):
            return bool(self._cordon(keys=[device_key(host, index), AUDIT_KEY], args=[flag, event.model_dump_json()]))

    def uncordon(self, host: str, index: int, by: str, at: str) -> bool:
        """Let a device take work again; False when it was not cordoned."""
        event = Event(at=at, type="uncordoned", reason=f"GPU {index} on {host}", by=by)
        with redis_errors(self._url):
            return bool(self._uncordon(keys=[device_key(host, index), AUDIT_KEY], args=[event.model_dump_json()]))

    def get(self, host: str, index: int) -> dict[str, Any] | None:
        """The device's cordon record, or None when it takes work."""
        with redis_errors(self._url):
            raw = self._r.get(device_key(host, index))
        return cast("dict[str, Any]", json.loads(str(raw))) if raw else None

    def all(self) -> list[dict[str, Any]]:
        """Every cordoned device (all hosts), ordered by host and index."""
        with redis_errors(self._url):
            keys = list(self._r.scan_iter(match=f"{CORDON_PREFIX}*", count=500))
            values = cast("list[Any]", self._r.mget(keys)) if keys else []
        flags = [json.loads(str(v)) for v in values if v]
        return sorted(flags, key=lambda f: (str(f.get("host")), int(f.get("index", 0))))

    def injected_fault(self, host: str, index: int) -> dict[str, Any]:
        """Reading fields a drill injected for a simulated device (empty: it reads as healthy)."""
        with redis_errors(self._url):
            raw = self._r.get(f"{FAULT_PREFIX}{host}:{index}")
        value = json.loads(str(raw)) if raw else {}
        return value if isinstance(value, dict) else {}
