"""What ``yoloq beat`` keeps in Redis: the per-slot send locks, the SLA reports and the last GPU health check.

Keys (prefix ``yoloq:``):

- ``beat:slot:{entry}:{slot}`` — the identity (``host:pid``) of the beat that sent ``entry`` for that slot;
  ``SET NX PX``, living until the next slot begins plus the allowed clock skew (``routing.slots``);
- ``sla:report`` — the latest SLA report (JSON); ``sla:reports`` — the newest :data:`MAX_REPORTS` of them;
- ``gpu-health:last`` — the last health check's readings and verdicts (JSON).
"""

from __future__ import annotations

import json
from typing import Any, cast

import redis

from infra.redis_client import redis_errors

SLA_LATEST = "yoloq:sla:report"
SLA_HISTORY = "yoloq:sla:reports"
HEALTH_LAST = "yoloq:gpu-health:last"
MAX_REPORTS = 2000  # about three weeks of 15-minute reports


class BeatState:
    """Slot locks and the reports beat's tasks leave behind."""

    def __init__(self, client: redis.Redis, url: str = "") -> None:
        self._r, self._url = client, url

    def take_slot(self, key: str, holder: str, ttl_ms: int) -> bool:
        """Claim one entry's slot for ``holder``; False when another beat (or this one) already sent it."""
        with redis_errors(self._url):
            return bool(self._r.set(key, holder, nx=True, px=max(ttl_ms, 1)))

    def slot_holder(self, key: str) -> str | None:
        """Which beat sent the slot, while its key lives."""
        with redis_errors(self._url):
            value = self._r.get(key)
        return str(value) if value else None

    def save_sla_report(self, doc: dict[str, Any]) -> None:
        """Store a report as the latest and append it to the capped history, atomically."""
        text = json.dumps(doc, sort_keys=True)
        with redis_errors(self._url):
            pipe = self._r.pipeline(transaction=True)
            pipe.set(SLA_LATEST, text)
            pipe.lpush(SLA_HISTORY, text)
            pipe.ltrim(SLA_HISTORY, 0, MAX_REPORTS - 1)
            pipe.execute()

    def sla_reports(self, limit: int = 1) -> list[dict[str, Any]]:
        """The newest ``limit`` SLA reports, newest first."""
        with redis_errors(self._url):
            raw = cast("list[Any]", self._r.lrange(SLA_HISTORY, 0, limit - 1))
        return [json.loads(str(item)) for item in raw]

    def save_health(self, doc: dict[str, Any]) -> None:
        """Keep the last GPU health check for operators."""
        with redis_errors(self._url):
            self._r.set(HEALTH_LAST, json.dumps(doc, sort_keys=True))

    def last_health(self) -> dict[str, Any] | None:
        """The last GPU health check, if any ran."""
        with redis_errors(self._url):
            raw = self._r.get(HEALTH_LAST)
        return cast("dict[str, Any]", json.loads(str(raw))) if raw else None
