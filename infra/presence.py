"""One live worker per GPU: a per-device claim in Redis that doubles as the worker's presence record.

``yoloq:gpu:{host}:{index}`` is a hash (node, pid, gpu, queues, heartbeat_at, owner token; ``utilization`` on real
GPUs) with a TTL the worker renews. A second ``yoloq worker --gpu I`` on the same host finds the claim and is
refused, unless the holder's pid is dead (a worker killed with -9 leaves a claim behind; a restart must not wait for
the TTL). Celery itself does not detect duplicate worker names (BRIEF §5). The claim is the fleet's view; the
host-local lock of :mod:`infra.device_lock`, taken first, is what keeps a second local worker off a device whatever
Redis holds.

A claim that expired while its worker could not reach Redis (an outage longer than the TTL) is not lost: the worker
still runs, so its next renewal writes the whole record back (:attr:`Renewal.RETAKEN`). Only a claim another owner
holds is lost (:attr:`Renewal.LOST`).
"""

from __future__ import annotations

import json
import os
import secrets
from enum import IntEnum
from typing import Any, cast

import redis

from infra.processes import pid_alive
from infra.redis_client import redis_errors
from tasks.errors import GpuUnavailable

P = "yoloq:gpu:"

# Writes the worker's whole record (heartbeat_at, ready_at once set) and answers 1: still ours; 2: the key was gone
# (it expired while Redis was unreachable) and is ours again; 0: another owner holds it (nothing written).
_RENEW = """
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[1] then return 0 end
if not owner then redis.call('DEL', KEYS[1]) end
redis.call('HSET', KEYS[1], unpack(cjson.decode(ARGV[3])))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if owner then return 1 end
return 2
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


class Renewal(IntEnum):
    """What a renewal found (the values are the renew script's answers)."""

    LOST = 0  # another owner holds the claim
    RENEWED = 1  # still ours
    RETAKEN = 2  # it had expired (Redis unreachable longer than the TTL) and is ours again


def _flatten(record: dict[str, Any], token: str) -> str:
    """The claim hash as the scripts take it: a JSON list of field, value pairs (non-strings JSON-encoded)."""
    flat: list[str] = []
    for k, v in {**record, "owner": token}.items():
        flat += [k, v if isinstance(v, str) else json.dumps(v)]
    return json.dumps(flat)


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
        token = secrets.token_hex(8)
        rival = self.take(host, index, token, record, ttl_s)
        if rival is not None:
            node, pid = rival.get("node"), rival.get("pid")
            raise GpuUnavailable(f"GPU {index} on {host} already has a live worker {node!s} (pid {pid!s})")
        return token

    def take(self, host: str, index: int, token: str, record: dict[str, Any], ttl_s: float) -> dict[str, str] | None:
        """Write this claim unless another live process holds the device; returns that holder's claim, else None.

        A claim whose pid is dead is stale (a worker killed with -9), and so is one naming our own pid under another
        token: a restarted container keeps its hostname and often gets the same pid."""
        key = f"{P}{host}:{index}"
        with redis_errors(self._url):
            current = cast(dict[str, str], self._r.hgetall(key))
            owner, pid = current.get("owner", ""), current.get("pid", "")
            holder = int(pid) if pid.isdigit() else 0
            if owner and owner != token and holder not in (0, os.getpid()) and pid_alive(holder):
                return current
            if not self._take(keys=[key], args=[owner, _flatten(record, token), int(ttl_s * 1000)]):
                return cast(dict[str, str], self._r.hgetall(key)) or {"node": "another worker (just now)"}
        return None

    def renew(self, host: str, index: int, token: str, record: dict[str, Any], ttl_s: float) -> Renewal:
        """Keep the claim alive with ``record`` as its content, writing it back whole if it expired while Redis was
        unreachable (its worker still runs: only another owner's claim means it was lost)."""
        args: list[str | int] = [token, int(ttl_s * 1000), _flatten(record, token)]
        with redis_errors(self._url):
            return Renewal(int(self._renew(keys=[f"{P}{host}:{index}"], args=args)))

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
            for k in ("gpu", "queues", "pid", "utilization"):
                if k in decoded:
                    decoded[k] = json.loads(decoded[k])
            out.append(decoded)
        return out
