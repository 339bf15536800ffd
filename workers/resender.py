"""The supervisor's sweep for queued jobs whose message was lost (``routing.resend`` decides; this reads and acts).

Every ``grace_s / 2`` the leading supervisor compares the registry's queued jobs with every message in the tier
queues, and publishes again the attempt of a job missing from them on two sweeps in a row. Reading every message is
O(queued jobs): hence a sweep every few seconds, not every tick.

A message in kombu's unacked set does not count as present for a *queued* job: a worker that took it would have
claimed the job (it turns ``running`` within milliseconds), so one still there two sweeps later was delivered to a
worker that lost it. A worker whose connection to Redis broke between the delivery and the start leaves it there,
and kombu would put it back only after the visibility timeout (7 days); the broker-restart drill (issue 17) found
such a job queued for good. The resend reuses the task id and drops the stale unacked entry; should the worker run
the first copy after all, the attempt's compare-and-set claim lets only one of the two run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from infra.queues import drop_unacked, task_ids_in_broker
from routing.resend import Waiting, unsent
from routing.tiers import all_queues, gang_queues
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
        url = self.rt.settings.redis_url
        lists = (*all_queues(), *gang_queues())
        present = task_ids_in_broker(reg.client, lists, url, held=False)  # before the registry
        queued = {r.job_id: r for r in reg.many(reg.ids(JobState.QUEUED, limit=100_000))}
        waiting = [
            Waiting(r.job_id, r.attempts[-1].task_id, parse_iso(r.attempts[-1].created_at).timestamp())
            for r in queued.values()
            if r.attempts and r.attempts[-1].created_at
        ]
        resend, self.suspects = unsent(waiting, present, self.suspects, now, self.grace_s)
        for job_id in resend:
            record = queued[job_id]
            reason = f"queued with no message in {record.queue} on two sweeps (none, or one a worker took and lost): " \
                     "published again"  # fmt: skip
            if self.dry_run:
                self.say(f"would resend {job_id}: {reason}")
                continue
            try:
                lifecycle.resend(reg, self.rt.dispatch, record, reason)
                drop_unacked(reg.client, record.attempts[-1].task_id, url)  # a lost delivery's leftover, if any
            except YoloqError as err:
                log.warning("resend of %s failed (next sweep retries): %s", job_id, err)
                continue
            self.say(f"resent {job_id}: {reason}")
        return resend
