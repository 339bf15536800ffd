"""The broker's Redis lists read and rearranged directly: queue depth per tier (what Flower and KEDA cannot count),
and a promoted job's message placed by its submit time (what Celery cannot do).

Kombu's Redis transport LPUSHes each message (a JSON envelope whose ``headers`` are Celery's) and consumers BRPOP:
the right end of a list is the next message out.
"""

from __future__ import annotations

import json
from typing import Any, cast

import redis

from infra.redis_client import redis_errors

SUBMITTED_HEADER = "yoloq_submitted"  # the job's submit time (epoch seconds) on every message we publish
# Kombu's Redis transport keeps the bindings of each exchange in these sets ("key\x06\x16pattern\x06\x16queue").
BINDING_TABLES = ("_kombu.binding.{}", "_kombu.binding_permanent.{}")
_BINDING_SEP = "\x06\x16"

# Move the message of task ARGV[1] just right of (i.e. out before) the rightmost message submitted after ARGV[2];
# leave it where it is (the tail) when every other message is older. Returns how many messages it now precedes
# that were ahead of it, -1 when the message is gone (a worker took it already).
_PLACE = """
local items = redis.call('LRANGE', KEYS[1], 0, -1)
local mine, mine_at, pivot, pivot_at = nil, 0, nil, 0
for i, raw in ipairs(items) do
  local ok, msg = pcall(cjson.decode, raw)
  if ok and type(msg) == 'table' and type(msg.headers) == 'table' then
    if msg.headers.id == ARGV[1] then
      mine, mine_at = raw, i
    else
      local ts = tonumber(msg.headers[ARGV[3]])
      if ts and ts > tonumber(ARGV[2]) then pivot, pivot_at = raw, i end
    end
  end
end
if not mine then return -1 end
if not pivot or pivot_at < mine_at then return 0 end
redis.call('LREM', KEYS[1], 1, mine)
redis.call('LINSERT', KEYS[1], 'AFTER', pivot, mine)
return pivot_at - mine_at
"""


# Remove the waiting message of task ARGV[1] from the list; 1 when it was there, 0 when a worker took it already.
_WITHDRAW = """
for _, raw in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local ok, msg = pcall(cjson.decode, raw)
  if ok and type(msg) == 'table' and type(msg.headers) == 'table' and msg.headers.id == ARGV[1] then
    return redis.call('LREM', KEYS[1], 1, raw)
  end
end
return 0
"""


def withdraw(client: redis.Redis, queue: str, task_id: str, url: str = "") -> bool:
    """Take a cancelled job's message out of its queue, so depth (what KEDA and the autoscaler scale on) stops
    counting it at once instead of when a worker finally pops and skips it; False when it was no longer waiting."""
    with redis_errors(url):
        removed = client.eval(_WITHDRAW, 1, queue, task_id)
    return bool(cast("int", removed))


# Move the waiting message of task ARGV[1] from KEYS[1] to the consuming end of KEYS[2] (a device's own queue): 1 when
# moved, 0 when it was not waiting there. One script, so the message is in exactly one list at every instant.
_MOVE = """
for _, raw in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local ok, msg = pcall(cjson.decode, raw)
  if ok and type(msg) == 'table' and type(msg.headers) == 'table' and msg.headers.id == ARGV[1] then
    redis.call('LREM', KEYS[1], 1, raw)
    redis.call('RPUSH', KEYS[2], raw)
    return 1
  end
end
return 0
"""


def move(client: redis.Redis, src: str, dst: str, task_id: str, url: str = "") -> bool:
    """Hand a placed gang's message to the one worker that must run it, next out of its device queue; False when the
    message was not waiting in ``src`` (lost: the resender publishes it again and the next tick moves that one)."""
    with redis_errors(url):
        moved = client.eval(_MOVE, 2, src, dst, task_id)
    return bool(cast("int", moved))


def depths(client: redis.Redis, queues: tuple[str, ...], url: str = "") -> dict[str, int]:
    """Waiting messages per queue, in one pipelined round trip."""
    with redis_errors(url):
        pipe = client.pipeline(transaction=False)
        for queue in queues:
            pipe.llen(queue)
        counts = pipe.execute()
    return dict(zip(queues, (int(c) for c in counts), strict=True))


def place_by_submit_time(client: redis.Redis, queue: str, task_id: str, submitted_ts: float, url: str = "") -> int:
    """Put a just-sent message ahead of every message of a job submitted after it (one atomic script, O(depth)).

    Returns how many queued messages it moved ahead of; -1 when a worker already took it.
    """
    with redis_errors(url):
        moved = client.eval(_PLACE, 1, queue, task_id, f"{submitted_ts:.6f}", SUBMITTED_HEADER)
    return int(cast("int", moved))


def own_binding(queue: str) -> str:
    """The one member each queue's exchange (named after the queue, celeryconfig.task_queues) may hold."""
    return _BINDING_SEP.join((queue, "", queue))


def prune_bindings(client: redis.Redis, queues: tuple[str, ...], url: str = "") -> int:
    """Drop every binding but the queue's own from each queue's exchange: versions before per-queue exchanges bound
    all tier queues to one exchange, and those members outlive the upgrade in Redis (one publish to that exchange
    would still land in every list). Returns how many members were removed."""
    targets = [(table.format(queue), own_binding(queue)) for queue in queues for table in BINDING_TABLES]
    with redis_errors(url):
        pipe = client.pipeline(transaction=False)
        for key, _ in targets:
            pipe.smembers(key)
        tables = pipe.execute()
        removed = 0
        for (key, own), members in zip(targets, tables, strict=True):
            stale = [member for member in members if _text(member) != own]
            if stale:
                pipe.srem(key, *stale)
                removed += len(stale)
        pipe.execute()
    return removed


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


UNACKED_KEY = "unacked"  # kombu's Redis transport default: delivered, not yet acked messages (acks_late: running)
UNACKED_INDEX_KEY = "unacked_index"  # its companion: delivery tag → delivery time, what the restore sweep reads


def _unacked(client: redis.Redis, url: str) -> list[tuple[Any, str]]:
    """Kombu's unacked hash as (message, queue) pairs: each value is ``[message, exchange, routing_key]``, and our
    routing key is the queue; entries that are not one of those are skipped."""
    with redis_errors(url):
        values = cast("list[Any]", client.hvals(UNACKED_KEY))
    held = []
    for raw in values:
        try:
            entry = json.loads(raw)
            held.append((entry[0], str(entry[2])))
        except (ValueError, IndexError, TypeError, KeyError):
            continue
    return held


def drop_unacked(client: redis.Redis, task_id: str, url: str = "") -> int:
    """Forget the delivered, never acked message of ``task_id`` (kombu's unacked hash and its index); returns how many
    entries went. For an attempt whose worker died: its message would otherwise stay there for the whole visibility
    timeout (7 days), counted in its tier's depth all along (``unacked_by_queue``), then be delivered only to be
    skipped. A live worker that acks it later finds nothing to remove, which kombu takes in its stride."""
    with redis_errors(url):
        entries = cast("dict[str, Any]", client.hgetall(UNACKED_KEY))
        tags = [tag for tag, raw in entries.items() if _entry_task_id(raw) == task_id]
        if tags:
            pipe = client.pipeline(transaction=True)
            pipe.hdel(UNACKED_KEY, *tags)
            pipe.zrem(UNACKED_INDEX_KEY, *tags)
            pipe.execute()
    return len(tags)


def _entry_task_id(raw: Any) -> str:
    """The task id of one unacked entry (``[message, exchange, routing_key]``); "" when it is not one of ours."""
    try:
        return _task_id(json.loads(raw)[0])
    except (ValueError, IndexError, TypeError, KeyError):
        return ""


def unacked_by_queue(client: redis.Redis, url: str = "") -> dict[str, int]:
    """Messages a worker holds (reserved or running, not acked) per queue: what an LLEN-only count misses."""
    counts: dict[str, int] = {}
    for _, queue in _unacked(client, url):
        counts[queue] = counts.get(queue, 0) + 1
    return counts


def task_ids_in_broker(client: redis.Redis, queues: tuple[str, ...], url: str = "", held: bool = True) -> set[str]:
    """Task ids of every message waiting in ``queues`` and, with ``held``, of those delivered to a worker and not yet
    acked (the unacked hash). The lists are read before the unacked hash, so a message a worker takes meanwhile is
    still seen."""
    with redis_errors(url):
        pipe = client.pipeline(transaction=False)
        for queue in queues:
            pipe.lrange(queue, 0, -1)
        waiting = pipe.execute()
    ids = {_task_id(raw) for items in waiting for raw in items}
    if held:
        ids |= {_task_id(message) for message, _ in _unacked(client, url)}
    ids.discard("")
    return ids


def _task_id(message: Any) -> str:
    """The Celery task id in a kombu envelope (raw JSON or already decoded); "" when it is not one of ours."""
    try:
        envelope = json.loads(message) if isinstance(message, str | bytes) else message
        return str(envelope["headers"]["id"])
    except (ValueError, KeyError, TypeError):
        return ""
