"""Credit-score state in Redis: each team's strikes, the audit cursor the sweep reads from, the last scores.

``yoloq:credit:strikes:{team}`` (zset ``kind:job_id`` → time; one strike per job and kind, so a sweep read twice
counts once), ``yoloq:credit:teams`` (set), ``yoloq:credit:cursor`` (the last audit entry swept),
``yoloq:credit:score`` (hash team → score, as the last sweep saw it).
"""

from __future__ import annotations

from typing import Any, cast

import redis

from infra.audit import AUDIT_KEY
from infra.redis_client import redis_errors

P = "yoloq:credit:"


class CreditStore:
    """Read and write strikes, the sweep's cursor and the scores."""

    def __init__(self, client: redis.Redis, url: str = "") -> None:
        self._r, self._url = client, url

    def add_strike(self, team: str, kind: str, job_id: str, at_ts: float) -> bool:
        """Record one strike; False when this job already has a strike of this kind."""
        with redis_errors(self._url):
            pipe = self._r.pipeline(transaction=True)
            pipe.sadd(f"{P}teams", team)
            pipe.zadd(f"{P}strikes:{team}", {f"{kind}:{job_id}": at_ts}, nx=True)
            return bool(pipe.execute()[1])

    def strikes(self, since_ts: float) -> dict[str, list[tuple[float, str, str]]]:
        """Every team's strikes since ``since_ts``: (time, kind, job id), oldest first."""
        with redis_errors(self._url):
            teams = sorted(str(t) for t in cast("set[Any]", self._r.smembers(f"{P}teams")))
            pipe = self._r.pipeline(transaction=False)
            for team in teams:
                pipe.zrangebyscore(f"{P}strikes:{team}", since_ts, "+inf", withscores=True)
            rows = pipe.execute()
        out: dict[str, list[tuple[float, str, str]]] = {}
        for team, found in zip(teams, rows, strict=True):
            for member, at in found:
                kind, _, job_id = str(member).partition(":")
                out.setdefault(team, []).append((float(at), kind, job_id))
        return out

    def audit_since(self, count: int = 1000) -> list[tuple[str, dict[str, str]]]:
        """Audit entries after the cursor, oldest first (at most ``count``)."""
        with redis_errors(self._url):
            cursor = self._r.get(f"{P}cursor") or "-"
            start = f"({cursor}" if cursor != "-" else "-"
            rows = cast("list[tuple[Any, dict[Any, Any]]]", self._r.xrange(AUDIT_KEY, min=start, count=count))
        return [(str(entry_id), {str(k): str(v) for k, v in fields.items()}) for entry_id, fields in rows]

    def advance(self, cursor: str) -> None:
        """Remember the last audit entry swept."""
        with redis_errors(self._url):
            self._r.set(f"{P}cursor", cursor)

    def save_scores(self, scores: dict[str, float]) -> None:
        """The scores of the last sweep, for ``yoloq quota show``."""
        if scores:
            with redis_errors(self._url):
                self._r.hset(f"{P}score", mapping={team: str(value) for team, value in scores.items()})

    def scores(self) -> dict[str, float]:
        """Team → score as the last sweep saw it."""
        with redis_errors(self._url):
            raw = cast("dict[Any, Any]", self._r.hgetall(f"{P}score"))
        return {str(team): float(value) for team, value in raw.items()}
