"""Attempt leases and per-job control flags in Redis (BRIEF §3 steps 2 and 5).

A running attempt holds ``yoloq:lease:{job}`` = its task id, with a TTL its heartbeat renews; a second delivery of
the same job finds the lease taken and exits without running. Operators and the supervisor ask a running job to stop
by setting ``yoloq:flag:{job}`` to ``preempt`` or ``cancel``; the job checks it between steps (one GET, ~0.1 ms).
"""

from __future__ import annotations

from enum import StrEnum
from typing import cast

import redis

from infra.redis_client import redis_errors

P = "yoloq:"

RENEW_IF_HELD = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
RELEASE_IF_HELD = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Flag(StrEnum):
    """What a running attempt is being asked to do."""

    PREEMPT = "preempt"
    CANCEL = "cancel"


class Leases:
    """Compare-and-set leases and control flags, keyed by job id."""

    def __init__(self, client: redis.Redis, url: str = "") -> None:
        self._r = client
        self._url = url
        self._renew = client.register_script(RENEW_IF_HELD)
        self._release = client.register_script(RELEASE_IF_HELD)

    def acquire(self, job_id: str, task_id: str, ttl_s: float) -> bool:
        """Take the job's lease for this attempt; False when another live attempt holds it."""
        with redis_errors(self._url):
            return bool(self._r.set(f"{P}lease:{job_id}", task_id, nx=True, px=int(ttl_s * 1000)))

    def renew(self, job_id: str, task_id: str, ttl_s: float) -> bool:
        """Extend the lease if this attempt still holds it; False means it was lost."""
        with redis_errors(self._url):
            return bool(self._renew(keys=[f"{P}lease:{job_id}"], args=[task_id, int(ttl_s * 1000)]))

    def release(self, job_id: str, task_id: str) -> None:
        """Drop the lease if (and only if) this attempt holds it."""
        with redis_errors(self._url):
            self._release(keys=[f"{P}lease:{job_id}"], args=[task_id])

    def holder(self, job_id: str) -> str | None:
        """Task id of the attempt holding the lease, if any."""
        with redis_errors(self._url):
            value = self._r.get(f"{P}lease:{job_id}")
        return str(value) if value else None

    def set_flag(self, job_id: str, flag: Flag) -> None:
        """Ask the running attempt to stop; cancel wins over preempt once set."""
        with redis_errors(self._url):
            if flag is Flag.CANCEL:
                self._r.set(f"{P}flag:{job_id}", flag.value, ex=7 * 24 * 3600)
            else:
                self._r.set(f"{P}flag:{job_id}", flag.value, nx=True, ex=7 * 24 * 3600)

    def flag(self, job_id: str) -> Flag | None:
        """The pending request for this job, if any."""
        with redis_errors(self._url):
            value = self._r.get(f"{P}flag:{job_id}")
        return Flag(str(value)) if value else None

    def flags(self, job_ids: list[str]) -> dict[str, Flag | None]:
        """The pending request of each job, in one round trip (the supervisor reads every running job's)."""
        if not job_ids:
            return {}
        with redis_errors(self._url):
            values = cast(list[str | None], self._r.mget([f"{P}flag:{job_id}" for job_id in job_ids]))
        return {job_id: Flag(str(v)) if v else None for job_id, v in zip(job_ids, values, strict=True)}

    def clear_flag(self, job_id: str) -> None:
        """Forget a handled request so the next attempt runs normally."""
        with redis_errors(self._url):
            self._r.delete(f"{P}flag:{job_id}")
