"""The Redis registry's compare-and-set transitions, against the session's real Redis (no workers)."""

from __future__ import annotations

import pytest

from infra.leases import Flag, Leases
from infra.redis_client import connect
from infra.registry import Change, RedisRegistry
from routing.tiers import Tier, route
from tasks import lifecycle
from tasks.errors import InvalidTransition, JobNotFound, LeaseHeld
from tasks.records import Event, iso, new_job_id, utc_now
from tasks.specs import ProbeSpec
from tasks.states import JobState
from tests.fleet import clean_redis

pytestmark = pytest.mark.integration


@pytest.fixture
def registry(services):
    clean_redis(services)
    yield RedisRegistry(connect(services.settings.redis_url))
    clean_redis(services)


def _register(registry: RedisRegistry, tier: str = "low") -> tuple[str, str]:
    spec = ProbeSpec(seconds=1, tier=tier, team="ops")
    job_id, task_id = new_job_id(), lifecycle.new_task_id()
    lifecycle.register(registry, job_id, spec, route(spec.tier, spec.memory_mib()), task_id)
    return job_id, task_id


def test_start_requires_the_current_task_id_and_a_queued_job(registry):
    job_id, task_id = _register(registry)
    with pytest.raises(InvalidTransition, match="stale"):
        lifecycle.record_start(registry, job_id, "some-old-task-id", ("gpu0@h", "0"))
    lifecycle.record_start(registry, job_id, task_id, ("gpu0@h", "0"))
    with pytest.raises(InvalidTransition, match="is running; cannot become running"):
        lifecycle.record_start(registry, job_id, task_id, ("gpu0@h", "0"))
    record = registry.get(job_id)
    assert (record.state, record.worker, record.attempts[0].started_at) == (
        JobState.RUNNING,
        "gpu0@h",
        record.started_at,
    )
    assert [e.type for e in record.events] == ["submitted", "started"]


def test_terminal_states_accept_nothing_and_unknown_jobs_are_reported(registry):
    job_id, task_id = _register(registry)
    lifecycle.record_start(registry, job_id, task_id, ("w", "0"))
    lifecycle.end_attempt(registry, job_id, task_id, JobState.SUCCEEDED, reason="done", extra={})
    for target in JobState:
        change = Change(to=target, event=Event(at=iso(utc_now()), type="x"))
        with pytest.raises(InvalidTransition):
            registry.transition(job_id, change)
    with pytest.raises(JobNotFound):
        registry.get("j-missing")
    assert registry.get(job_id).attempts[0].outcome == "succeeded"


def test_state_index_lists_newest_first_and_follows_transitions(registry):
    first, _ = _register(registry)
    second, task = _register(registry)
    assert registry.ids(JobState.QUEUED) == [second, first]
    lifecycle.record_start(registry, second, task, ("w", "0"))
    assert registry.ids(JobState.QUEUED) == [first]
    assert registry.ids(JobState.RUNNING) == [second]
    assert registry.ids() == [second, first]


def test_start_takes_the_lease_atomically_and_refuses_a_second_live_attempt(registry):
    leases = Leases(registry.client)
    job_id, task_id = _register(registry)
    assert leases.acquire(job_id, "another-live-attempt", 5)
    with pytest.raises(LeaseHeld):
        lifecycle.record_start(registry, job_id, task_id, ("w", "0"), lease_ttl_s=5)
    assert registry.get(job_id).state is JobState.QUEUED
    leases.release(job_id, "another-live-attempt")
    lifecycle.record_start(registry, job_id, task_id, ("w", "0"), lease_ttl_s=5)
    assert leases.holder(job_id) == task_id


def test_lease_is_exclusive_and_flags_prefer_cancel(services, registry):
    leases = Leases(registry.client)
    job_id, task_id = _register(registry)
    assert leases.acquire(job_id, task_id, 5)
    assert not leases.acquire(job_id, "other", 5)
    assert not leases.renew(job_id, "other", 5)
    leases.release(job_id, "other")
    assert leases.holder(job_id) == task_id
    leases.set_flag(job_id, Flag.CANCEL)
    leases.set_flag(job_id, Flag.PREEMPT)
    assert leases.flag(job_id) is Flag.CANCEL
    assert Tier(registry.get(job_id).tier) is Tier.LOW
