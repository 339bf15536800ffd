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


def ledger_key(host: str, index: int) -> str:
    """The hash of one shared GPU's tenants."""
    return f"{PREFIX}{host}:{index}"


class ShareLedger:
    """Admit, release and list the tenants of shared GPUs."""

    def __init__(self, client: redis.Redis, url: str = "") -> None:
        self._r, self._url = client, url

    def tenants(self, host: str, index: int) -> dict[str, int]:
        """Job id → the memory it was admitted with, for every tenant of the GPU."""
        with redis_errors(self._url):
            rows = cast("dict[str, str]", self._r.hgetall(ledger_key(host, index)))
        return {str(k): int(json.loads(v)["need_mib"]) for k, v in rows.items()}

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
                    if job_id in rows:
                        pipe.unwatch()
                        return None
                    if not fits([int(json.loads(v)["need_mib"]) for v in rows.values()]):
                        pipe.unwatch()
                        return False
                    pipe.multi()
                    pipe.hset(key, job_id, json.dumps({"need_mib": need, "task_id": task_id}))
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue  # another process of this worker admitted or left meanwhile: judge again

    def leave(self, host: str, index: int, job_id: str) -> None:
        """The job's attempt ended on this GPU: its memory is free for the next tenant."""
        with redis_errors(self._url):
            self._r.hdel(ledger_key(host, index), job_id)

    def clear(self, host: str, index: int) -> None:
        """A (re)starting worker: no tenant of an earlier process survives it."""
        with redis_errors(self._url):
            self._r.delete(ledger_key(host, index))
