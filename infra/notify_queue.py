"""The notification pipeline's Redis side: the stream of notifiable events and the queue of deliveries.

``yoloq:notify`` (stream, capped at about :data:`MAX_ENTRIES`) gets one entry per notifiable event, written by the
registry's own script in the same atomic step as the state change (:func:`lua_xadd`), and only while some webhook is
stored: the scheduler never waits on HTTP, nothing is lost between the change and its notice, and a fleet without
webhooks pays one ``EXISTS``. Notifiers read it through the consumer group ``notifiers``: each entry goes to one of
them; an entry read but not acknowledged (its notifier died) is claimed by another after ``claim_idle_ms``.

Reading an entry fans it out to its deliveries (one per subscription, :func:`routing.notify.targets`), queued in
``yoloq:webhook-due`` (zset: ``sub|event`` by due time; the delivery's record in ``yoloq:webhook-deliveries``) and the
entry is acknowledged in the same MULTI. Taking due deliveries moves their score to a lease's end instead of
removing them (:meth:`NotifyQueue.take_due`): a notifier killed mid-POST leaves them due again when the lease ends,
so each is delivered at least once; the event id in the header lets receivers drop the duplicates.
"""

from __future__ import annotations

import json
from typing import Any, cast

import redis

from infra.redis_client import redis_errors
from routing.notify import notify_type
from tasks.records import Event

STREAM = "yoloq:notify"
SUBS = "yoloq:webhooks"  # = infra.webhooks.SUBS: the stream is written only while this hash exists
GROUP = "notifiers"
DUE = "yoloq:webhook-due"
DELIVERIES = "yoloq:webhook-deliveries"
MAX_ENTRIES = 100_000

_TAKE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, member in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[2], member) end
return due
"""


def lua_xadd(stream: str, subs: str, job: str, event: str) -> str:
    """The Lua lines that add a notify entry inside a registry script, if any webhook exists (Lua expressions)."""
    return (f"if redis.call('EXISTS', {subs}) == 1 then redis.call('XADD', {stream}, 'MAXLEN', '~', {MAX_ENTRIES}, "
            f"'*', 'job', {job}, 'event', {event}) end")  # fmt: skip


def flag(event: Event) -> str:
    """ "1" when webhooks are told of ``event`` (:func:`routing.notify.notify_type`): the registry's scripts then add
    it to the stream."""
    return "1" if notify_type(event.type, event.state.value if event.state else None) else "0"


def add(pipe: Any, job_id: str, event: Event) -> None:
    """Queue a notify entry on a pipeline, with the change it describes (for events no state change carries)."""
    pipe.xadd(STREAM, {"job": job_id, "event": event.model_dump_json(exclude_none=True)}, maxlen=MAX_ENTRIES,
              approximate=True)  # fmt: skip


def member(sub_id: str, event_id: str) -> str:
    """A delivery's name in the due queue: one per (subscription, event)."""
    return f"{sub_id}|{event_id}"


def _event(text: Any) -> dict[str, Any]:
    """A stream entry's event; {} (nothing notified, still acknowledged) for one that is not a JSON object, so one
    bad entry cannot stop every notifier that claims it."""
    try:
        event = json.loads(text) if isinstance(text, str | bytes) else None
    except ValueError:
        return {}
    return event if isinstance(event, dict) else {}


class NotifyQueue:
    """Read the stream as one consumer of the group; queue, take, retry and finish deliveries."""

    def __init__(self, client: redis.Redis, consumer: str, url: str = "") -> None:
        self._r, self.consumer, self._url = client, consumer, url
        self._take = client.register_script(_TAKE_DUE)

    def ensure_group(self) -> None:
        """Create the consumer group (and the stream) if missing; from the stream's start, so nothing written before
        the first notifier ran is skipped."""
        with redis_errors(self._url):
            try:
                self._r.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
            except redis.ResponseError as err:
                if "BUSYGROUP" not in str(err):
                    raise

    def read(self, count: int, block_ms: int, claim_idle_ms: int) -> list[tuple[str, str, dict[str, Any]]]:
        """(entry id, job id, event) of entries to fan out: those a dead consumer left unacknowledged for
        ``claim_idle_ms`` first, else new ones (waiting up to ``block_ms``)."""
        try:
            rows = self._read(count, block_ms, claim_idle_ms)
        except redis.ResponseError as err:
            if "NOGROUP" not in str(err):
                raise
            self.ensure_group()  # Redis lost the stream (restarted without persistence, wiped): start again
            return []
        return [(str(i), str((f or {}).get("job", "")), _event((f or {}).get("event"))) for i, f in rows]

    def _read(self, count: int, block_ms: int, claim_idle_ms: int) -> list[Any]:
        with redis_errors(self._url):
            claimed = cast("list[Any]", self._r.xautoclaim(STREAM, GROUP, self.consumer, claim_idle_ms, "0-0",
                                                           count=count))  # fmt: skip
            rows = [r for r in claimed[1] if r]  # an entry trimmed meanwhile has no fields: acknowledged, no delivery
            if rows:
                return rows
            got = cast("list[Any]", self._r.xreadgroup(GROUP, self.consumer, {STREAM: ">"}, count=count,
                                                       block=max(block_ms, 1)))  # fmt: skip
        return cast("list[Any]", got[0][1]) if got else []

    def jobs(self, job_ids: list[str]) -> dict[str, dict[str, str]]:
        """Team, name, kind and tier of each job (what a body names), in one round trip."""
        fields = ["team", "name", "kind", "tier"]
        with redis_errors(self._url):
            pipe = self._r.pipeline(transaction=False)
            for job_id in job_ids:
                pipe.hmget(f"yoloq:job:{job_id}", fields)
            rows = pipe.execute()
        return {j: {k: v or "" for k, v in zip(fields, row, strict=True)} for j, row in zip(job_ids, rows, strict=True)}

    def enqueue(self, entry_ids: list[str], deliveries: list[dict[str, Any]], due: float) -> None:
        """Queue ``deliveries`` (each once: a re-read entry does not reset one in flight) and acknowledge the entries
        they came from, in one MULTI."""
        with redis_errors(self._url):
            pipe = self._r.pipeline(transaction=True)
            for delivery in deliveries:
                name = member(delivery["sub"], delivery["event_id"])
                pipe.hsetnx(DELIVERIES, name, json.dumps(delivery))
                pipe.zadd(DUE, {name: due}, nx=True)
            if entry_ids:
                pipe.xack(STREAM, GROUP, *entry_ids)
            pipe.execute()

    def take_due(self, now: float, lease_s: float, count: int) -> list[tuple[str, dict[str, Any] | None]]:
        """Up to ``count`` deliveries due at ``now``, each leased for ``lease_s`` (due again then, unless finished or
        rescheduled), with their records (None: the record is gone, drop it)."""
        with redis_errors(self._url):
            names = [str(n) for n in self._take(keys=[DUE], args=[repr(now), repr(now + lease_s), count])]
            texts = cast("list[str | None]", self._r.hmget(DELIVERIES, names)) if names else []
        return [(n, json.loads(t) if t else None) for n, t in zip(names, texts, strict=True)]

    def finish(self, name: str) -> None:
        """A delivery is over (delivered, given up, or its subscription gone): forget it."""
        with redis_errors(self._url):
            pipe = self._r.pipeline(transaction=True)
            pipe.zrem(DUE, name)
            pipe.hdel(DELIVERIES, name)
            pipe.execute()

    def retry(self, name: str, delivery: dict[str, Any], at: float) -> None:
        """Keep a failed delivery with its updated record, due again at ``at``."""
        with redis_errors(self._url):
            pipe = self._r.pipeline(transaction=True)
            pipe.hset(DELIVERIES, name, json.dumps(delivery))
            pipe.zadd(DUE, {name: at}, xx=True)
            pipe.execute()

    def next_due(self) -> float | None:
        """When the earliest queued delivery is due (None: none queued)."""
        with redis_errors(self._url):
            head = cast("list[tuple[str, float]]", self._r.zrange(DUE, 0, 0, withscores=True))
        return float(head[0][1]) if head else None

    def backlog(self) -> dict[str, int]:
        """Queued deliveries, and stream entries not yet fanned out (``yoloq webhook list`` reports both)."""
        with redis_errors(self._url):
            queued = cast(int, self._r.zcard(DUE))
            groups = cast("list[dict[str, Any]]", self._r.xinfo_groups(STREAM)) if self._r.exists(STREAM) else []
            group = next((g for g in groups if g.get("name") == GROUP), None)
            if group is None:  # no notifier ever ran: every entry is unread
                return {"deliveries_queued": queued, "events_unread": cast(int, self._r.xlen(STREAM))}
            after = f"({group['last-delivered-id']}"
            unread = len(cast("list[Any]", self._r.xrange(STREAM, min=after, count=10_000)))
        return {"deliveries_queued": queued, "events_unread": unread + int(group.get("pending") or 0)}
