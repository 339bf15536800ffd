"""Devices held for a multi-GPU job (a gang): K GPUs of one host, taken together or not at all, released together.

``yoloq:gang-hold:{host}:{index}`` = the job id holding that device; ``yoloq:gangs`` maps each holding job to its
hold (host, GPU indices, when and why, and the attempt it was dispatched as once started). Holding is one Lua script
over the devices in :func:`routing.gang.claim_order`: every device is checked before any is written, so two
placements racing for overlapping devices (two supervisors across a failover) never split a gang: one holds all of
them, the other none (tests/unit/test_gang.py proves the step-wise protocol for every interleaving; this script runs
it as one step). A held device's worker stops taking jobs from the tier queues (workers/cordon.py) and consumes only
its own device queue, where the supervisor moves the gang's message once every device is idle, or, while a
reservation drains, a one-GPU job lent the idle device until the gang is due (``loans``: index → job, attempt).
"""

from __future__ import annotations

import json
from typing import Any, cast

import redis

from infra.redis_client import redis_errors
from routing.gang import claim_order

HOLD_PREFIX = "yoloq:gang-hold:"
DEFRAG = "defrag"  # the ``kind`` of a one-device hold a defragmentation takes (workers/defrag.py); a gang's has none
GANGS_KEY = "yoloq:gangs"

_HOLD = """
for i = 1, #KEYS - 1 do
  local holder = redis.call('GET', KEYS[i])
  if holder and holder ~= ARGV[1] then return holder end
end
for i = 1, #KEYS - 1 do redis.call('SET', KEYS[i], ARGV[1]) end
redis.call('HSET', KEYS[#KEYS], ARGV[1], ARGV[2])
return ''
"""
_RELEASE = """
for i = 1, #KEYS - 1 do
  if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) end
end
return redis.call('HDEL', KEYS[#KEYS], ARGV[1])
"""
_LEND = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local hold = cjson.decode(raw)
if type(hold.loans) ~= 'table' then hold.loans = {} end
hold.loans[ARGV[2]] = {job_id = ARGV[3], task_id = ARGV[4]}
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(hold))
return 1
"""
_PATCH = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local hold = cjson.decode(raw)
for i = 2, #ARGV, 2 do hold[ARGV[i]] = ARGV[i + 1] end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(hold))
return 1
"""


def hold_key(host: str, index: int) -> str:
    """The key naming the job that holds one device."""
    return f"{HOLD_PREFIX}{host}:{index}"


class GangHolds:
    """Take, read and release gang holds."""

    def __init__(self, client: redis.Redis, url: str = "") -> None:
        self._r, self._url = client, url
        self._hold = client.register_script(_HOLD)
        self._release = client.register_script(_RELEASE)
        self._patch = client.register_script(_PATCH)
        self._lend = client.register_script(_LEND)

    def hold(self, job_id: str, host: str, gpus: tuple[int, ...], fields: dict[str, Any]) -> str:
        """Hold every device or none; returns '' when held, else the job holding the first device in the way."""
        order = claim_order(tuple(str(g) for g in gpus), host)
        keys = [hold_key(h, int(g)) for h, g in order] + [GANGS_KEY]
        record = json.dumps({**fields, "job_id": job_id, "host": host, "gpus": sorted(gpus), "task_id": ""})
        with redis_errors(self._url):
            return str(self._hold(keys=keys, args=[job_id, record]) or "")

    def release(self, job_id: str, host: str, gpus: tuple[int, ...] | list[int]) -> bool:
        """Give back all of a gang's devices at once; False when it held none."""
        keys = [hold_key(host, int(g)) for g in gpus] + [GANGS_KEY]
        with redis_errors(self._url):
            return bool(self._release(keys=keys, args=[job_id]))

    def dispatched(self, job_id: str, task_id: str, at: float = 0.0) -> bool:
        """Record the attempt the gang's message was handed over as (and when): the hold lives while that attempt
        does."""
        with redis_errors(self._url):
            fields = [job_id, "task_id", task_id, "dispatched_at", f"{at:.3f}"]
            return bool(self._patch(keys=[GANGS_KEY], args=fields))

    def lend(self, gang: str, index: int, job_id: str, task_id: str) -> bool:
        """Let one attempt of a one-GPU job run on held GPU ``index`` until the gang is due (backfill); False when the
        hold is gone."""
        with redis_errors(self._url):
            return bool(self._lend(keys=[GANGS_KEY], args=[gang, str(index), job_id, task_id]))

    def loan(self, host: str, index: int) -> tuple[str, str] | None:
        """(gang, job) when a held GPU is lent to a job, else None (not held, or held and not lent)."""
        gang = self.holder(host, index)
        hold = self.get(gang) if gang else None
        entry = ((hold or {}).get("loans") or {}).get(str(index))
        return (str(gang), str(entry["job_id"])) if isinstance(entry, dict) and "job_id" in entry else None

    def holder(self, host: str, index: int) -> str | None:
        """The job holding this device, None when no gang holds it."""
        with redis_errors(self._url):
            value = self._r.get(hold_key(host, index))
        return str(value) if value else None

    def get(self, job_id: str) -> dict[str, Any] | None:
        """One gang's hold, None when it holds nothing."""
        with redis_errors(self._url):
            raw = self._r.hget(GANGS_KEY, job_id)
        return cast("dict[str, Any]", json.loads(str(raw))) if raw else None

    def all(self) -> list[dict[str, Any]]:
        """Every hold, oldest first."""
        with redis_errors(self._url):
            rows = cast("dict[str, str]", self._r.hgetall(GANGS_KEY))
        holds = [json.loads(v) for v in rows.values()]
        return sorted(holds, key=lambda h: (float(h.get("held_at", 0)), str(h.get("job_id"))))


def held_devices(holds: list[dict[str, Any]]) -> dict[tuple[str, int], str]:
    """(host, index) → holding job, for every device of ``holds`` (as :meth:`GangHolds.all` reads them)."""
    return {(str(h["host"]), int(g)): str(h["job_id"]) for h in holds for g in h.get("gpus", [])}
