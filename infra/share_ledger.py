"""The tenants of a shared GPU (``yoloq worker --share``): which jobs run on it and the memory each was admitted with.

``yoloq:share:{host}:{index}`` is a hash job id → JSON ``{need_mib, task_id}``. Admission is an optimistic
transaction (WATCH the hash, let the caller's rule judge the tenants, write only if nobody changed it meanwhile), so
two pool processes of one worker admitting at once never both squeeze into the last room. The rule itself is
``routing.sharing.fits`` (the caller passes it): this adapter only reads and writes. A worker clears its GPU's ledger
when it starts: its pool and job processes die with it, so whatever a killed worker left there runs no more.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import cast

import redis

from infra.redis_client import redis_errors

PREFIX = "yoloq:share:"
_LEAVE = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if raw and cjson.decode(raw).task_id == ARGV[2] then return redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
"""


def ledger_key(host: str, index: int) -> str:
    """The hash of one shared GPU's tenants."""
    return f"{PREFIX}{host}:{index}"


class ShareLedger:
    """Admit, release and list the tenants of shared GPUs."""

    def __init__(self, client: redis.Redis, url: str = "") -> None:
        self._r, self._url = client, url
        self._leave = client.register_script(_LEAVE)

    def tenants(self, host: str, index: int) -> dict[str, int]:
        """Job id → the memory it was admitted with, for every tenant of the GPU."""
        return {job: need for job, (need, _) in self.entries(host, index).items()}

    def entries(self, host: str, index: int) -> dict[str, tuple[int, str]]:
        """Job id → (admitted MiB, the attempt's task id), for every tenant of the GPU."""
        with redis_errors(self._url):
            rows = cast("dict[str, str]", self._r.hgetall(ledger_key(host, index)))
        decoded = {str(k): json.loads(v) for k, v in rows.items()}
        return {k: (int(v["need_mib"]), str(v.get("task_id", ""))) for k, v in decoded.items()}

    def admit(self, host: str, index: int, job: tuple[str, str, int], fits: Callable[[list[int]], bool]) -> bool | None:
        """Add ``job`` = (job id, task id, need) to the tenants when ``fits(the other tenants' needs)``: True when
        added, False when it does not fit, None when it already was a tenant (a duplicate delivery: not ours to
        remove)."""
        job_id, task_id, need = job
        key = ledger_key(host, index)
        with redis_errors(self._url), self._r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    rows = cast("dict[str, str]", pipe.hgetall(key))
                    mine = json.loads(rows[job_id]) if job_id in rows else None
                    if mine is not None and mine.get("task_id") == task_id:
                        pipe.unwatch()
                        return None
                    others = [int(json.loads(v)["need_mib"]) for k, v in rows.items() if k != job_id]  # an older
                    if not fits(others):  # attempt's entry of this job is replaced, never counted twice
                        pipe.unwatch()
                        return False
                    pipe.multi()
                    pipe.hset(key, job_id, json.dumps({"need_mib": need, "task_id": task_id}))
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue  # another process of this worker admitted or left meanwhile: judge again

    def leave(self, host: str, index: int, job_id: str, task_id: str) -> bool:
        """The attempt ``task_id`` of the job ended on this GPU: its memory is free for the next tenant (a later
        attempt's entry of the same job is left alone); False when it was not a tenant."""
        with redis_errors(self._url):
            return bool(self._leave(keys=[ledger_key(host, index)], args=[job_id, task_id]))

    def clear(self, host: str, index: int) -> None:
        """A (re)starting worker: no tenant of an earlier process survives it."""
        with redis_errors(self._url):
            self._r.delete(ledger_key(host, index))
