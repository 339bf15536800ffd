"""The detect path's transport: one Redis list of requests per deployment, one reply list per request.

The API pushes ``json(meta) + b"\\x00" + image`` onto ``yoloq:serve:{alias}:requests`` and waits on
``yoloq:serve:reply:{id}``; a replica takes a batch from the head (up to ``max_batch``, waiting at most ``max_wait_s``
after the first request: Triton's dynamic batcher policy) and pushes one JSON reply per request. Why a list and not
direct HTTP to replicas: docs/serving.md. JSON ends at the first NUL because JSON escapes NUL inside strings.

A replica takes with a ``holder`` (its presence id): what it takes is *moved* (``BLMOVE``, then a script) into its own
list ``yoloq:serve:{alias}:taken:{holder}`` and its name into ``yoloq:serve:{alias}:holders``; the list is emptied in
the round trip that delivers the batch's last reply. A replica killed with -9 leaves its batch there, and
:meth:`ServeQueue.orphans` (the serving scaler's tick, every replica now and then) puts it back at the head of the
queue once the holder has no live presence entry: delivery is at least once (a replica that was only frozen past
its heartbeat may answer a reclaimed request too; the caller reads the first answer, the second expires).

:class:`ServeQueue` is synchronous (replicas, benchmarks, the API's push); :class:`AsyncServeQueue` is the API's wait
for a reply on its event loop, so a request waiting for a replica holds a Redis connection but no thread.

Connection errors become :class:`~tasks.errors.BrokerUnavailable` (``infra.redis_client.redis_errors``).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis
import redis.asyncio

from infra.redis_client import redis_errors
from infra.wake import CHANNEL as WAKE_CHANNEL

REPLY_TTL_S = 60
# Gathering a batch after its first request polls LPOP (a round trip is ~0.1 ms) rather than BLPOP with the time left:
# a blocked client's timeout fires on the server's clock tick (hz 10 by default, Redis 6.2 and 7.0 alike), so a BLPOP
# for 5 ms returned after 100 ms and each batch that did not fill waited 100 ms, not max_wait (bench/serve.py: a p50 of
# 100 ms for one client); and Redis 6.2 read a timeout under a millisecond as 0, "block forever" (a replica hung).
GATHER_POLL_S = 0.0005
_SEP = b"\x00"


def requests_key(alias: str) -> str:
    """The list a deployment's replicas drain."""
    return f"yoloq:serve:{alias}:requests"


def taken_key(alias: str, holder: str) -> str:
    """The requests replica ``holder`` has taken and not yet answered."""
    return f"yoloq:serve:{alias}:taken:{holder}"


def holders_key(alias: str) -> str:
    """The set of replicas that may hold taken requests of ``alias`` (whom :meth:`ServeQueue.orphans` checks)."""
    return f"yoloq:serve:{alias}:holders"


# Move up to ARGV[1] more requests from the queue (KEYS[1]) to the holder's list (KEYS[2]) and name the holder
# (ARGV[2]) in the holders set (KEYS[3]); returns what moved. Atomic: a request is always in one list or the other.
_GATHER = """
redis.call('SADD', KEYS[3], ARGV[2])
local n = tonumber(ARGV[1])
if n <= 0 then return {} end
local items = redis.call('LPOP', KEYS[1], n)
if not items then return {} end
redis.call('RPUSH', KEYS[2], unpack(items))
return items
"""
# Put the holder's (ARGV[1]) taken requests (KEYS[2]) back at the queue's head (KEYS[1]) in order; ARGV[2] == '1'
# also forgets the holder (KEYS[3]). Returns how many went back.
_RECLAIM = """
local items = redis.call('LRANGE', KEYS[2], 0, -1)
for i = #items, 1, -1 do redis.call('LPUSH', KEYS[1], items[i]) end
redis.call('DEL', KEYS[2])
if ARGV[2] == '1' then redis.call('SREM', KEYS[3], ARGV[1]) end
return #items
"""


def reply_key(request_id: str) -> str:
    """Where the one answer to a request lands."""
    return f"yoloq:serve:reply:{request_id}"


@dataclass(frozen=True)
class Request:
    """One detect request as a replica sees it: ``meta`` (``id``, ``version``, ``conf``, ``deadline``, ``enq``) and
    the checked, not yet decoded image bytes."""

    meta: dict[str, Any]
    image: bytes

    @property
    def id(self) -> str:
        """The request id (its reply key's suffix)."""
        return str(self.meta["id"])

    def encode(self) -> bytes:
        """The list element: JSON meta, NUL, image bytes."""
        return json.dumps(self.meta, separators=(",", ":")).encode() + _SEP + self.image

    @classmethod
    def decode(cls, raw: bytes) -> Request | None:
        """The request, or None for an element that is not one (logged and skipped by the replica, never fatal)."""
        head, sep, image = raw.partition(_SEP)
        if not sep:
            return None
        try:
            meta = json.loads(head)
        except ValueError:
            return None
        if not isinstance(meta, dict) or not isinstance(meta.get("id"), str):
            return None
        return cls(meta, image)


class ServeQueue:
    """Both ends of the transport over one binary Redis client (``infra.redis_client.connect(url, binary=True)``)."""

    def __init__(self, client: redis.Redis, url: str = "") -> None:
        self.client = client
        self.url = url
        self._gather_script = client.register_script(_GATHER)
        self._reclaim_script = client.register_script(_RECLAIM)

    def push(self, alias: str, request: Request, wake: bool = False) -> None:
        """Queue a request at the tail (API side); ``wake``: then publish on the supervisor's wake channel in the same
        round trip, so a deployment scaled to zero is scaled up on the next tick, which already sees the request."""
        pipe = self.client.pipeline(transaction=False)
        pipe.rpush(requests_key(alias), request.encode())
        if wake:
            pipe.publish(WAKE_CHANNEL, f"serve:{alias}")
        with redis_errors(self.url):
            pipe.execute()

    def wait_reply(self, request_id: str, timeout_s: float) -> dict[str, Any] | None:
        """The reply, or None when none came within ``timeout_s`` (API side; blocks one thread)."""
        with redis_errors(self.url):
            got = self.client.blpop([reply_key(request_id)], timeout=max(timeout_s, 0.01))
        return _reply(got)

    def depth(self, alias: str) -> int:
        """Requests waiting for a replica: the deployment's load signal."""
        with redis_errors(self.url):
            return int(cast(int, self.client.llen(requests_key(alias))))

    def take_batch(self, alias: str, max_batch: int, max_wait_s: float, idle_s: float = 1.0,
                   holder: str | None = None) -> list[Request]:  # fmt: skip
        """Up to ``max_batch`` requests: block up to ``idle_s`` for the first, then gather more until the batch is
        full or ``max_wait_s`` has passed since the first arrived (replica side). ``[]`` when idle. With a
        ``holder``, what is taken stays in its list until :meth:`answer` releases it (a kill -9 loses nothing)."""
        key = requests_key(alias)
        with redis_errors(self.url):
            if holder is None:
                first = cast("tuple[bytes, bytes] | None", self.client.blpop([key], timeout=idle_s))
                got = first[1] if first is not None else None
            else:
                got = cast("bytes | None", self.client.blmove(key, taken_key(alias, holder), idle_s, "LEFT", "RIGHT"))  # type: ignore[arg-type]
        if got is None:
            return []
        raw = [got]
        # What was taken is this replica's to answer: on a lost connection it serves the partial batch, never drops it.
        with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
            self._gather(alias, raw, max_batch, time.monotonic() + max_wait_s, holder)
        return [req for req in map(Request.decode, raw) if req is not None]

    def _gather(self, alias: str, raw: list[bytes], max_batch: int, deadline: float, holder: str | None) -> None:
        """Add queued requests to ``raw`` until it is full or ``deadline`` (monotonic) passes."""
        key = requests_key(alias)
        while True:
            want = max_batch - len(raw)
            if holder is None:
                more = cast("list[bytes] | None", self.client.lpop(key, want)) if want > 0 else None
            else:  # runs once even for a full batch: it (re)names the holder for orphans()
                keys = [key, taken_key(alias, holder), holders_key(alias)]
                more = cast("list[bytes]", self._gather_script(keys=keys, args=[want, holder]))
            if more:
                raw.extend(more)
                continue
            left = deadline - time.monotonic()
            if len(raw) >= max_batch or left <= 0:
                return
            time.sleep(min(left, GATHER_POLL_S))  # not BLPOP: its timeout would wait for the server's next tick

    def hold(self, alias: str, holder: str) -> int:
        """Start taking as ``holder``: put back what an earlier run under that name left taken (a replica job's
        previous attempt, killed) and name it a holder. How many went back."""
        with redis_errors(self.url):
            count = self.reclaim(alias, holder)
            self.client.sadd(holders_key(alias), holder)
        return count

    def reclaim(self, alias: str, holder: str, forget: bool = False) -> int:
        """Put ``holder``'s taken, unanswered requests back at the head of the queue, oldest first (``forget``: and
        drop it from the holders). How many went back."""
        keys = [requests_key(alias), taken_key(alias, holder), holders_key(alias)]
        with redis_errors(self.url):
            return int(cast(int, self._reclaim_script(keys=keys, args=[holder, "1" if forget else "0"])))

    def orphans(self, alias: str, live: set[str]) -> int:
        """Reclaim the taken requests of every holder not in ``live`` (the ids of live presence entries, read just
        before): a replica killed with -9 or OOM-killed. How many went back to the queue."""
        with redis_errors(self.url):
            holders = cast("set[bytes | str]", self.client.smembers(holders_key(alias)))
        names = {h.decode() if isinstance(h, bytes) else h for h in holders}
        return sum(self.reclaim(alias, name, forget=True) for name in sorted(names - live))

    def give_back(self, alias: str, requests: Sequence[Request]) -> None:
        """Return untouched requests to the head, in order (a batch taken without a holder that will not run)."""
        if requests:
            with redis_errors(self.url):
                self.client.lpush(requests_key(alias), *[r.encode() for r in reversed(requests)])

    def answer(self, replies: Iterable[tuple[str, dict[str, Any]]], release: tuple[str, str] | None = None) -> None:
        """Deliver replies in one round trip; each expires if its caller has gone. ``release`` ``(alias, holder)``:
        the batch is done, so its holder's taken list is emptied in the same transaction."""
        pipe = self.client.pipeline(transaction=release is not None)
        for request_id, body in replies:
            key = reply_key(request_id)
            pipe.rpush(key, json.dumps(body, separators=(",", ":")))
            pipe.expire(key, REPLY_TTL_S)
        if release is not None:
            pipe.delete(taken_key(*release))
        with redis_errors(self.url):
            pipe.execute()


class AsyncServeQueue:
    """The API's end of the reply lists on an event loop, over one ``redis.asyncio`` binary client
    (``infra.redis_client.connect_async``) whose socket timeout exceeds the longest wait."""

    def __init__(self, client: redis.asyncio.Redis, url: str = "") -> None:
        self.client = client
        self.url = url

    async def wait_reply(self, request_id: str, timeout_s: float) -> dict[str, Any] | None:
        """The reply, or None when none came within ``timeout_s``: awaited, so thousands may wait without a thread."""
        with redis_errors(self.url):
            waiting = self.client.blpop([reply_key(request_id)], timeout=max(timeout_s, 0.01))
            got = await cast("Awaitable[list[bytes] | None]", waiting)
        return _reply(got)

    async def aclose(self) -> None:
        """Close the client's connections (the API's shutdown)."""
        await self.client.aclose()


def _reply(got: object) -> dict[str, Any] | None:
    """A BLPOP's answer as the reply object (None for a timeout, or for an element that is not a JSON object)."""
    if got is None:
        return None
    try:
        body = json.loads(cast("tuple[bytes, bytes]", got)[1])
    except ValueError:
        return None
    return body if isinstance(body, dict) else None
