"""Supervisor failover (issue 17 item 5, bench/drills/supervisor_failover.py): a leader that dies between recording a
preempt request and setting the victim's flag (request first, then flag) must not leave the waiting job stuck. The
next leader counted the recorded request as "being preempted", so it asked nobody else, and nothing ever set the
flag: the victim ran to its end (hours, for a training) and its escalation never came either (it needs the flag)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from infra.leases import Flag, Leases
from infra.redis_client import connect
from tasks.records import Event, iso, utc_now
from tasks.specs import ProbeSpec
from tasks.states import JobState
from tests.fleet import poll, stop_supervisors

pytestmark = pytest.mark.integration


@pytest.fixture
def supervisor(services: Any) -> Iterator[None]:
    yield
    stop_supervisors(services)


def test_a_request_whose_leader_died_before_the_flag_is_carried_out_by_the_next(fleet, client, services, supervisor):
    # Given a low job on the only GPU and a critical job waiting, approved to run
    fleet.start("0:A100:40")
    client.preapprove("ops")
    low = client.submit(ProbeSpec(seconds=40, tier="low", team="ops", memory_gb=8))
    poll(lambda: int(low.refresh().progress.get("step", 0)) >= 1, 60, "the low job running")
    urgent = client.submit(ProbeSpec(seconds=1, tier="critical", team="ops", memory_gb=8))
    # And the request a leader recorded for it just before it was killed, without the flag it would have set next
    asked = Event(at=iso(utc_now()), type="preempt-requested", reason="critical job waits (test)", by="supervisor",
                  for_job=urgent.job_id)  # fmt: skip
    client.registry.append_event(low.job_id, asked)
    assert Leases(connect(services.settings.redis_url)).flag(low.job_id) is None
    # When a new supervisor leads
    services.start_supervisor("--interval", "0.2", "--leader-ttl", "3")
    # Then the victim yields within seconds (not at its end), the critical job runs, and nobody else was asked
    started = urgent.wait({JobState.RUNNING, JobState.SUCCEEDED}, timeout_s=15)
    assert started.started_at is not None
    record = low.wait(timeout_s=90)
    assert record.state is JobState.SUCCEEDED and len(record.preemptions) == 1
    assert [e.type for e in record.events].count("preempt-requested") == 1
    assert Leases(connect(services.settings.redis_url)).flag(low.job_id) is not Flag.PREEMPT
