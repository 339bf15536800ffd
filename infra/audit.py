"""The audit log: every decision about a job or the rules (who preempted, promoted, froze, approved, held, released,
changed a quota), in one Redis stream, so "why did this happen at 3 a.m." has one place to look.

Job events are added to the stream by the registry in the same atomic step as the job's own history (see
``infra.registry``); rule changes by :class:`infra.admission_rules.AdmissionStore`. The stream is capped at about
:data:`MAX_ENTRIES` entries (``XADD MAXLEN ~``).
"""

from __future__ import annotations

import json
from typing import Any, cast

import redis

from infra.redis_client import redis_errors
from tasks.records import Event

AUDIT_KEY = "yoloq:audit"
MAX_ENTRIES = 100_000


def lua_xadd(key: str, job: str, event: str) -> str:
    """The Lua call that adds an audit entry inside a registry script (arguments are Lua expressions)."""
    return f"redis.call('XADD', {key}, 'MAXLEN', '~', {MAX_ENTRIES}, '*', 'job', {job}, 'event', {event})"


def add(pipe: Any, job_id: str, event: Event) -> None:
    """Queue one audit entry on a pipeline (or client) so it lands with the change it describes."""
    pipe.xadd(AUDIT_KEY, {"job": job_id, "event": event.model_dump_json(exclude_none=True)},
              maxlen=MAX_ENTRIES, approximate=True)  # fmt: skip


class AuditLog:
    """Read the audit stream, newest first."""

    def __init__(self, client: redis.Redis, url: str = "") -> None:
        self._r, self._url = client, url

    def entries(self, limit: int = 100, job_id: str | None = None) -> list[dict[str, Any]]:
        """The newest ``limit`` entries (of one job when ``job_id`` is given), each as a JSON-ready dict."""
        out: list[dict[str, Any]] = []
        last = "+"
        with redis_errors(self._url):
            while len(out) < limit:
                batch = cast(
                    "list[tuple[Any, dict[Any, Any]]]", self._r.xrevrange(AUDIT_KEY, max=last, count=max(limit, 500))
                )
                for entry_id, fields in batch:
                    entry = _entry(entry_id, fields)
                    if job_id is None or entry["job_id"] == job_id:
                        out.append(entry)
                if len(batch) < max(limit, 500) or job_id is None:
                    break
                last = "(" + _text(batch[-1][0])
        return out[:limit]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entry(entry_id: Any, fields: dict[Any, Any]) -> dict[str, Any]:
    values = {_text(k): _text(v) for k, v in fields.items()}
    event = json.loads(values.get("event", "{}"))
    return {"id": _text(entry_id), "job_id": values.get("job") or None, **event}
