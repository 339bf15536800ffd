"""The supervisor's sweep for queued jobs whose message was lost (``routing.resend`` decides; this reads and acts).

Every ``grace_s / 2`` the leading supervisor compares the registry's queued jobs with every message in the tier
queues and the workers' unacked set, and publishes again the attempt of a job missing from both on two sweeps in a
row. Reading every message is O(queued jobs): hence a sweep every few seconds, not every tick.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from infra.queues import task_ids_in_broker
from routing.resend import Waiting, unsent
from routing.tiers import all_queues
from tasks import lifecycle
from tasks.errors import YoloqError
from tasks.records import parse_iso
from tasks.runtime import Runtime
from tasks.states import JobState

log = logging.getLogger("yoloq.supervisor")


class Resender:
    """Finds and resends queued jobs with no message anywhere; keeps the suspects between sweeps."""

    def __init__(self, rt: Runtime, grace_s: float, say: Callable[[str], None], dry_run: bool = False) -> None:
        self.rt, self.grace_s, self.say, self.dry_run = rt, grace_s, say, dry_run
        self.suspects: frozenset[str] = frozenset()
        self._last = float("-inf")

    def maybe_sweep(self, now: float) -> list[str]:
        """Sweep when half the grace has passed since the last one; returns the ids resent (or that would be)."""
        if now - self._last < self.grace_s / 2:
            return []
        self._last = now
        reg = self.rt.registry
        present = task_ids_in_broker(reg.client, all_queues(), self.rt.settings.redis_url)  # before the registry
        queued = {r.job_id: r for r in reg.many(reg.ids(JobState.QUEUED, limit=100_000))}
        waiting = [
            Waiting(r.job_id, r.attempts[-1].task_id, parse_iso(r.attempts[-1].created_at).timestamp())
            for r in queued.values()
            if r.attempts and r.attempts[-1].created_at
        ]
        resend, self.suspects = unsent(waiting, present, self.suspects, now, self.grace_s)
        for job_id in resend:
            record = queued[job_id]
            reason = f"queued with no message in {record.queue} or at any worker on two sweeps: published again"
            if self.dry_run:
                self.say(f"would resend {job_id}: {reason}")
                continue
            try:
                lifecycle.resend(reg, self.rt.dispatch, record, reason)
            except YoloqError as err:
                log.warning("resend of %s failed (next sweep retries): %s", job_id, err)
                continue
            self.say(f"resent {job_id}: {reason}")
        return resend
