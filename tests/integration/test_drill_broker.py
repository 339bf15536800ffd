"""What the broker-restart drill (bench/drills/broker_restart.py, issue 17 item 3) found: a worker whose connection
to Redis broke between taking a job's message and starting it leaves the message in kombu's unacked set, where
kombu restores it only after the visibility timeout (7 days). The resender counted it as present, so the job stayed
queued for good; now a queued job whose message only sits there is published again."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from infra.queues import UNACKED_INDEX_KEY, UNACKED_KEY, task_ids_in_broker
from infra.redis_client import connect
from routing.tiers import all_queues
from tasks.specs import ProbeSpec
from tasks.states import JobState
from tests.fleet import stop_supervisors

pytestmark = pytest.mark.integration


@pytest.fixture
def supervisor(services: Any) -> Iterator[None]:
    services.start_supervisor("--interval", "0.2", "--leader-ttl", "3", "--resend-grace", "2")
    yield
    stop_supervisors(services)


def test_a_queued_job_whose_message_a_worker_took_and_lost_runs_once(fleet, client, services, supervisor) -> None:
    # Given a queued job whose message was taken off its queue into kombu's unacked set and never started (as a
    # worker leaves it when Redis goes away between the delivery and the start)
    redis = connect(services.settings.redis_url)
    handle = client.submit(ProbeSpec(seconds=0, tier="low", team="ops"))
    record = handle.refresh()
    task_id = record.attempts[-1].task_id
    raw = next(m for m in redis.lrange(record.queue, 0, -1) if json.loads(m)["headers"]["id"] == task_id)
    assert redis.lrem(record.queue, 1, raw) == 1
    tag = f"drill-lost-{task_id}"
    redis.hset(UNACKED_KEY, tag, json.dumps([json.loads(raw), "", record.queue]))
    redis.zadd(UNACKED_INDEX_KEY, {tag: time.time()})
    assert task_id in task_ids_in_broker(redis, all_queues()), "where the resender used to find it, and stop"
    # When a worker and the supervisor run
    fleet.start("0:A100:40")
    # Then the supervisor publishes it again, the job runs once and succeeds, and the stale entry is gone
    done = handle.wait(timeout_s=60)
    assert done.state is JobState.SUCCEEDED, done.events[-1]
    assert [e.type for e in done.events].count("resent") == 1
    assert [a.task_id for a in done.attempts] == [task_id] and sum(a.started_at is not None for a in done.attempts) == 1
    assert not redis.hexists(UNACKED_KEY, tag) and redis.zscore(UNACKED_INDEX_KEY, tag) is None
