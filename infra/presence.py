"""One live worker per GPU: a per-device claim in Redis that doubles as the worker's presence record.

``yoloq:gpu:{host}:{index}`` is a hash (node, pid, gpu, queues, heartbeat_at, owner token) with a TTL the worker
renews. A second ``yoloq worker --gpu I`` on the same host finds the claim and is refused, unless the holder's pid
is dead (a worker killed with -9 leaves a claim behind; a restart must not wait for the TTL). Celery itself does not
detect duplicate worker names (BRIEF §5).
"""

from __future__ import annotations

import json
import os
import secrets
from typing import Any, cast

import redis

from infra.processes import pid_alive
from infra.redis_client import redis_errors
from tasks.errors import GpuUnavailable

P = "yoloq:gpu:"

_RENEW = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'heartbeat_at', ARGV[3])
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""
_RELEASE = """
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_TAKE = """
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(cjson.decode(ARGV[2])))
return redis.call('PEXPIRE', KEYS[1], ARGV[3])
"""


class GpuClaims:
    """Claim, renew, release and list per-device worker claims."""

    def __init__(self, client: redis.Redis, url: str = "") -> None:
        self._r = client
        self._url = url
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._take = client.register_script(_TAKE)

    def claim(self, host: str, index: int, record: dict[str, Any], ttl_s: float) -> str:
        """Claim device ``index`` on ``host`` for this process; returns the owner token or raises GpuUnavailable."""
        key = f"{P}{host}:{index}"
        token = secrets.token_hex(8)
        flat: list[str] = []
        for k, v in {**record, "owner": token}.items():
            flat += [k, v if isinstance(v, str) else json.dumps(v)]
        with redis_errors(self._url):
            current = cast(dict[str, str], self._r.hgetall(key))
            stale_owner = current.get("owner", "") if current else ""
            holder = int(current.get("pid", "0")) if current else 0
            # Our own pid in a claim we have not made yet is a previous incarnation (a restarted container keeps its
            # hostname and often gets the same pid): stale, not a live rival.
            if current and holder != os.getpid() and pid_alive(holder):
                node, pid = current.get("node"), current.get("pid")
                raise GpuUnavailable(f"GPU {index} on {host} already has a live worker {node!s} (pid {pid!s})")
            if not self._take(keys=[key], args=[stale_owner, json.dumps(flat), int(ttl_s * 1000)]):
                raise GpuUnavailable(f"GPU {index} on {host} was claimed by another worker just now")
        return token

    def renew(self, host: str, index: int, token: str, ttl_s: float, now_iso: str) -> bool:
        """Keep the claim alive; False when it was lost (another worker took over)."""
        with redis_errors(self._url):
            key = f"{P}{host}:{index}"
            return bool(self._renew(keys=[key], args=[token, int(ttl_s * 1000), now_iso]))

    def mark_ready(self, host: str, index: int, token: str, now_iso: str) -> bool:
        """Record that the worker consumes its queues now (``ready_at``), if this process still owns the claim."""
        with redis_errors(self._url):
            key = f"{P}{host}:{index}"
            if self._r.hget(key, "owner") != token:
                return False
            self._r.hset(key, "ready_at", now_iso)
            return True

    def release(self, host: str, index: int, token: str) -> None:
        """Drop the claim if this process still owns it."""
        with redis_errors(self._url):
            self._release(keys=[f"{P}{host}:{index}"], args=[token])

    def live(self) -> list[dict[str, Any]]:
        """Every live worker claim (all hosts), decoded, ordered by host and device."""
        with redis_errors(self._url):
            keys = sorted(self._r.scan_iter(match=f"{P}*", count=500))
            pipe = self._r.pipeline(transaction=False)
            for key in keys:
                pipe.hgetall(key)
            rows = pipe.execute()
        out = []
        for row in rows:
            if not row:
                continue
            decoded = {k: v for k, v in row.items() if k != "owner"}
            for k in ("gpu", "queues", "pid"):
                if k in decoded:
                    decoded[k] = json.loads(decoded[k])
            out.append(decoded)
        return out
