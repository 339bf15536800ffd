"""workers/resender.py against the real broker Redis: a queued job's message waiting in a queue is never resent; one
found nowhere, or only in a worker's unacked set (a worker that took it and never started the job: kombu would
restore it only after the 7-day visibility timeout), is resent once, after two sweeps past the grace."""

from __future__ import annotations

import json
import time

import pytest

from infra.queues import UNACKED_KEY
from infra.redis_client import connect
from tasks.specs import ProbeSpec
from workers.resender import Resender

pytestmark = pytest.mark.integration

GRACE = 10.0


class Clock:
    """Sweep times, each a full grace after the last (the resender takes the time as a parameter)."""

    def __init__(self) -> None:
        self.now = time.time()

    def sweeps(self, resender: Resender, n: int) -> list[list[str]]:
        out = []
        for _ in range(n):
            self.now += GRACE
            out.append(resender.maybe_sweep(self.now))
        return out


def test_a_message_waiting_or_held_by_a_worker_is_never_resent_and_a_lost_one_is(fleet, client, services) -> None:
    # Given a queued job (no worker runs) and a resender that only reports
    said: list[str] = []
    handle = client.submit(ProbeSpec(seconds=1, tier="low", team="ops"))
    record = handle.refresh()
    resender, clock = Resender(client.rt, GRACE, said.append, dry_run=True), Clock()
    # Then while its message waits in the queue, sweeps find nothing
    assert clock.sweeps(resender, 3) == [[], [], []]
    # And when only a worker's unacked set holds it (taken, never started), it is suspected, then resent
    redis = connect(services.settings.redis_url)
    raw = redis.rpop(record.queue)
    redis.hset(UNACKED_KEY, "delivery-1", json.dumps([json.loads(raw), "", record.queue]))
    assert clock.sweeps(resender, 2) == [[], [handle.job_id]]
    # ... and so is one gone from both
    redis.hdel(UNACKED_KEY, "delivery-1")
    fresh = Resender(client.rt, GRACE, said.append, dry_run=True)
    assert clock.sweeps(fresh, 2) == [[], [handle.job_id]]
    assert said[-1] == (f"would resend {handle.job_id}: queued with no message in {record.queue} on two sweeps (none, "
                        "or one a worker took and lost): published again")  # fmt: skip
