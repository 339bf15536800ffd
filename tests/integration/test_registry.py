"""The Redis registry's compare-and-set transitions, against the session's real Redis (no workers)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from infra.leases import Flag, Leases
from infra.redis_client import connect
from infra.registry import Change, RedisRegistry
from routing.borrowing import Ledger
from routing.tiers import Tier, route
from tasks import admission, lifecycle
from tasks.errors import InvalidTransition, JobNotFound, LeaseHeld
from tasks.records import Event, iso, new_job_id, utc_now
from tasks.specs import ProbeSpec
from tasks.states import JobState
from tests.fleet import clean_redis
from yoloq.views import queue_view

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


def test_a_requeued_attempt_hands_its_lease_over_so_the_next_one_starts_at_once(registry):
    # Given a running attempt holding its lease (its worker releases it only after the requeue is recorded)
    leases = Leases(registry.client)
    job_id, first = _register(registry)
    lifecycle.record_start(registry, job_id, first, ("w", "0"), lease_ttl_s=30)
    # When it is requeued (preempted, or moved to another GPU) and a worker takes the new attempt a moment later
    dispatch = _Sent()
    second = lifecycle.requeue(registry, leases, dispatch, registry.get(job_id), reason="test", by="supervisor")
    assert dispatch.sent == [job_id]
    # Then the new attempt starts: the old attempt's lease ended with it (before: refused as a duplicate, the job
    # queued with no message until the resender published it again, 30-45 s later)
    lifecycle.record_start(registry, job_id, second, ("w2", "1"), lease_ttl_s=30)
    assert leases.holder(job_id) == second
    leases.release(job_id, first)  # the old attempt's own release afterwards changes nothing
    assert leases.holder(job_id) == second
    # And a finished attempt's lease goes too
    lifecycle.end_attempt(registry, job_id, second, JobState.SUCCEEDED, reason="done", extra={})
    assert leases.holder(job_id) is None


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


class _Sent:
    """A dispatcher that only records (the index is the registry's; no worker or broker list is involved)."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, kind: str, job_id: str, task_id: str, queue: str, labels: dict[str, str], **_: object) -> None:
        self.sent.append(job_id)

    def revoke(self, task_id: str) -> None:
        pass


def _submitted(registry: RedisRegistry, job_id: str) -> float:
    score = registry.client.zscore("yoloq:jobs", job_id)
    assert score is not None
    return float(score)


def test_the_per_tier_queued_index_follows_every_way_in_and_out(registry):
    tiers = [t.value for t in Tier]
    dispatch, leases = _Sent(), Leases(registry.client)
    low_a, task_a = _register(registry, "low")
    high_b, _ = _register(registry, "high")
    low_c, task_c = _register(registry, "low")
    oldest = registry.oldest_queued(tiers)
    assert oldest == {**dict.fromkeys(tiers), "low": _submitted(registry, low_a), "high": _submitted(registry, high_b)}
    # started: out of the index; requeued (preempted): back in, at its submit time
    lifecycle.record_start(registry, low_a, task_a, ("w", "0"))
    assert registry.oldest_queued(tiers)["low"] == _submitted(registry, low_c)
    lifecycle.requeue(registry, leases, dispatch, registry.get(low_a), reason="test", by="test")  # type: ignore[arg-type]
    assert registry.oldest_queued(tiers)["low"] == _submitted(registry, low_a)
    # promoted while queued: moves to the new tier's index
    lifecycle.promote(registry, dispatch, low_a, Tier.CRITICAL, by="test")  # type: ignore[arg-type]
    oldest = registry.oldest_queued(tiers)
    assert (oldest["critical"], oldest["low"]) == (_submitted(registry, low_a), _submitted(registry, low_c))
    # cancelled: gone; a tier with nothing queued reads None
    lifecycle.cancel(registry, leases, dispatch, low_c, by="test")  # type: ignore[arg-type]
    lifecycle.cancel(registry, leases, dispatch, high_b, by="test")  # type: ignore[arg-type]
    assert registry.oldest_queued(tiers) == {**dict.fromkeys(tiers), "critical": _submitted(registry, low_a)}
    assert task_c and dispatch.sent == [low_a, low_a]


def test_jobs_missing_from_the_index_make_the_queue_view_fall_back_to_the_records(registry, client):
    tiers = [t.value for t in Tier]
    job_id, _ = _register(registry, "low")
    now = _submitted(registry, job_id) + 42.0
    indexed = queue_view(client.registry, now)["tiers"]["low"]["oldest_wait_s"]
    registry.client.delete("yoloq:queued:low")  # as if queued before the index existed
    assert registry.oldest_queued(tiers) is None
    from_records = queue_view(client.registry, now)["tiers"]["low"]["oldest_wait_s"]
    assert indexed == pytest.approx(42.0, abs=0.01) and from_records == pytest.approx(42.0, abs=0.01)  # ISO: 1 ms


def test_a_reclaimed_loan_waits_held_however_its_attempt_ends(registry):
    # Given a running job asked to give back borrowed quota (a hold request), and one asked to yield plainly
    dispatch, leases = _Sent(), Leases(registry.client)
    jobs = []
    for hold in (True, False):
        job_id, task_id = _register(registry)
        lifecycle.record_start(registry, job_id, task_id, ("w", "0"))
        lifecycle.request_preempt(registry, leases, job_id, "test", "supervisor", hold=hold)
        jobs.append(job_id)
    # When recovery requeues both (their worker died before it could yield: nobody passes hold)
    for job_id in jobs:
        lifecycle.requeue(registry, leases, dispatch, registry.get(job_id), reason="lease expired", by="recovery")  # type: ignore[arg-type]
    # Then the reclaimed one waits held, off the queues (its team is over quota without the loan); the other is queued
    assert [registry.get(j).state for j in jobs] == [JobState.HELD, JobState.QUEUED]
    assert dispatch.sent == [jobs[1]]


class StartsAfterFirstRead:
    """A Redis client on which a worker starts a job right after the first read of a state index, whether read on its
    own or in a pipeline: the interleaving that counted a job in two states."""

    def __init__(self, real: Any, start: Callable[[], None]) -> None:
        self._real, self._start, self._fired = real, start, False

    def _fire(self) -> None:
        if not self._fired:
            self._fired = True
            self._start()

    def smembers(self, key: str) -> Any:
        members = self._real.smembers(key)
        self._fire()
        return members

    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        pipe, fire = self._real.pipeline(*args, **kwargs), self._fire
        execute = pipe.execute

        def execute_then_start(*a: Any, **kw: Any) -> Any:
            out = execute(*a, **kw)
            fire()
            return out

        pipe.execute = execute_then_start
        return pipe

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def test_a_job_that_starts_while_the_active_jobs_are_read_is_counted_once(registry):
    """The CI run that found it: a borrower resumed while its lender's usage was read one state at a time, so it was
    counted queued and running; the lender "lent 2" and reclaimed the loan with no job of its own to run."""
    spec = ProbeSpec(seconds=1, tier="high", team="lab")
    job_id, task_id = new_job_id(), lifecycle.new_task_id()
    lifecycle.register(registry, job_id, spec, route(spec.tier, spec.memory_mib()), task_id, borrowed_from="risk")
    racing = RedisRegistry(StartsAfterFirstRead(registry.client, lambda: lifecycle.record_start(
        registry, job_id, task_id, ("w", "0"))))  # fmt: skip
    assert admission.ledger(racing) == Ledger(own={}, lent={("risk", Tier.HIGH): 1})
    assert registry.get(job_id).state is JobState.RUNNING  # the start did land between the reads
    assert [(r.job_id, r.state) for r in registry.in_states(admission.ACTIVE)] == [(job_id, JobState.RUNNING)]
