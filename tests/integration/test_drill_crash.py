"""Found by the crash and hostloss drills (issue 17): a killed attempt's message stayed in kombu's ``unacked`` hash for
the whole visibility timeout (7 days) after its job was recovered under a new task id, so each ``kill -9`` or lost
host added one phantom job to its tier's depth (``/api/v1/queues``, what KEDA scales GPU workers on) for a week."""

from __future__ import annotations

import time

import pytest

from infra.queues import task_ids_in_broker
from routing.tiers import all_queues
from tasks.specs import ProbeSpec
from tasks.states import JobState
from tests.fleet import poll
from yoloq.views import queue_view

pytestmark = pytest.mark.integration


def test_a_killed_attempts_message_leaves_the_broker_once_its_job_is_recovered(fleet, client):
    # Given a probe running on a worker, past its first checkpoint
    fleet.start("0:A100:40")
    handle = client.submit(ProbeSpec(seconds=4, tier="low", team="ops"))
    poll(lambda: int(client.job(handle.job_id).progress.get("step", 0)) >= 1, 30, "a probe step")
    killed = handle.refresh().attempts[0].task_id
    # When its worker is killed with -9 and started again, and the job is recovered and finishes
    fleet.kill9(0)
    fleet.restart(0)
    record = handle.wait(timeout_s=60)
    assert record.state is JobState.SUCCEEDED and [a.outcome for a in record.attempts] == ["preempted", "succeeded"]
    # Then the dead attempt's message is gone from the broker, and no tier counts a job that does not exist
    registry = client.registry
    poll(lambda: not task_ids_in_broker(registry.client, all_queues(), registry.url), 10, "no message left")
    assert killed not in task_ids_in_broker(registry.client, all_queues(), registry.url)
    assert queue_view(registry, time.time())["total"] == 0
