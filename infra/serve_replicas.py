"""Serving replicas' presence (docs/serving.md): ``yoloq:serve:{alias}:replicas``, a hash of replica job id → JSON
``{job_id, task_id, worker, gpu, backend, versions, state, ready_at, heartbeat_at, cold_start_s}``.

A replica (:mod:`tasks.serve_runner`) writes its entry when it starts warming and rewrites it at least every
:data:`HEARTBEAT_S` (``state``: ``warming`` → ``ready`` → ``draining``); it removes it when it exits. Readers (the
autoscaler, the API, ``yoloq serve --list``) ask :meth:`ServeReplicas.live`, which counts only entries with a recent
heartbeat: a replica killed with -9 leaves its entry behind, and that entry stops counting within ``max_age_s`` and
is deleted once it is :data:`STALE_S` old. Entries are written by the attempt that owns them (``task_id``), so the
exit of an old attempt never removes the entry of the attempt that replaced it. Timestamps are ISO-8601 UTC.
"""

from __future__ import annotations

import json
from typing import Any, cast

import redis

from infra.redis_client import redis_errors
from tasks.records import iso, parse_iso, utc_now

HEARTBEAT_S = 1.0  # a replica rewrites its entry this often (the contract says at most 2 s)
LIVE_S = 6.0  # an entry whose heartbeat is older than this is not a live replica
STALE_S = 60.0  # ... and older than this it is deleted by the next reader

# Delete the entry only if the attempt that asks still owns it (ARGV[2]: its task id, or '' for anyone's).
_REMOVE = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
if ARGV[2] ~= '' then
  local ok, entry = pcall(cjson.decode, raw)
  if ok and type(entry) == 'table' and entry['task_id'] and entry['task_id'] ~= ARGV[2] then return 0 end
end
return redis.call('HDEL', KEYS[1], ARGV[1])
"""


def replicas_key(alias: str) -> str:
    """The hash of an alias's replicas."""
    return f"yoloq:serve:{alias}:replicas"


def _age_s(entry: dict[str, Any], now: float) -> float:
    """Seconds since the entry's heartbeat (infinite for an entry without a readable one)."""
    try:
        return now - parse_iso(str(entry.get("heartbeat_at"))).timestamp()
    except ValueError:
        return float("inf")


class ServeReplicas:
    """Write (replicas) and read (autoscaler, API, CLI) the presence entries, over a text Redis client."""

    def __init__(self, client: redis.Redis, url: str = "") -> None:
        self._r, self._url = client, url
        self._remove = client.register_script(_REMOVE)

    def put(self, alias: str, entry: dict[str, Any]) -> None:
        """Write a replica's entry (keyed by its ``job_id``) with a fresh ``heartbeat_at``."""
        body = {**entry, "heartbeat_at": iso(utc_now())}
        with redis_errors(self._url):
            self._r.hset(replicas_key(alias), str(entry["job_id"]), json.dumps(body, sort_keys=True))

    def remove(self, alias: str, job_id: str, task_id: str = "") -> bool:
        """Drop a replica's entry (only if attempt ``task_id`` owns it, when given); False when it was not there."""
        with redis_errors(self._url):
            return bool(self._remove(keys=[replicas_key(alias)], args=[job_id, task_id]))

    def entries(self, alias: str) -> list[dict[str, Any]]:
        """Every entry of ``alias`` as stored, live or not, by job id (unreadable entries left out)."""
        with redis_errors(self._url):
            raw = cast("dict[str, str]", self._r.hgetall(replicas_key(alias)))
        out = []
        for _, text in sorted(raw.items()):
            try:
                entry = json.loads(text)
            except ValueError:
                continue
            if isinstance(entry, dict):
                out.append(entry)
        return out

    def live(self, alias: str, max_age_s: float = LIVE_S) -> list[dict[str, Any]]:
        """The replicas of ``alias`` whose heartbeat is at most ``max_age_s`` old (each with ``age_s``), by job id;
        entries older than :data:`STALE_S` are deleted on the way (their replica died without removing them)."""
        now = utc_now().timestamp()
        found, stale = [], []
        for entry in self.entries(alias):
            age = _age_s(entry, now)
            if age <= max_age_s:
                found.append({**entry, "age_s": round(max(age, 0.0), 3)})
            elif age > STALE_S:
                stale.append(str(entry.get("job_id")))
        if stale:
            with redis_errors(self._url):
                self._r.hdel(replicas_key(alias), *stale)
        return found
