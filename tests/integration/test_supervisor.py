"""The supervisor with real workers: preemption for waiting critical work, the 24 h budget, dry run, failover."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import time

import pytest

from bench.harness.stack import active_queues
from infra.leader import LeaderLease
from infra.leases import Flag, Leases
from infra.redis_client import connect
from infra.registry import RedisRegistry
from routing.tiers import Tier
from tasks import lifecycle
from tasks.app import create_app
from tasks.specs import ProbeSpec
from tasks.states import JobState
from tests.fleet import poll, yoloq_cli
from tests.integration.test_registry import StartsAfterFirstRead
from workers.supervisor import Options, build_supervisor

pytestmark = pytest.mark.integration


def _probe(seconds: int, tier: str) -> ProbeSpec:
    return ProbeSpec(seconds=seconds, tier=tier, team="ops", memory_gb=8)


def _step(client, job_id: str) -> int:
    return int(client.job(job_id).progress.get("step", 0))


def _requests(client, job_id: str) -> list:
    return [e for e in client.job(job_id).events if e.type == "preempt-requested"]


def test_critical_job_preempts_one_low_job_which_resumes_and_finishes(fleet, client, supervised):
    # Given a full fleet of low-tier jobs that have checkpointed a few steps
    fleet.start("0:A100:40,1:A100:40")
    low = [client.submit(_probe(8, "low")) for _ in range(2)]
    poll(lambda: all(_step(client, h.job_id) >= 2 for h in low), 60, "both low jobs running")
    supervised()
    # When a critical job arrives
    urgent = client.submit(_probe(1, "critical"))
    # Then exactly one low job yields (for that job, by the supervisor), the critical job runs, and the victim resumes
    assert urgent.wait(timeout_s=60).state is JobState.SUCCEEDED
    records = [h.wait(timeout_s=90) for h in low]
    assert all(r.state is JobState.SUCCEEDED for r in records)
    victims = [r for r in records if r.preemptions]
    assert len(victims) == 1 and len(victims[0].preemptions) == 1
    event = victims[0].preemptions[0]
    assert event.by == "supervisor" and getattr(event, "for_job", None) == urgent.job_id
    assert "critical job" in event.reason and "first in victim order" in event.reason
    assert victims[0].result["resumed_from"] >= 2
    audit = client.audit(job_id=victims[0].job_id)
    assert [(e["type"], e["by"], e["for_job"]) for e in audit] == [("preempt-requested", "supervisor", urgent.job_id)]


def test_second_critical_job_within_24h_does_not_preempt_the_same_victim(fleet, client, supervised):
    fleet.start("0:A100:40")
    victim = client.submit(_probe(6, "low"))
    poll(lambda: _step(client, victim.job_id) >= 1, 60, "the low job running")
    supervised()
    first = client.submit(_probe(1, "critical"))
    assert first.wait(timeout_s=60).state is JobState.SUCCEEDED
    victim.wait({JobState.RUNNING}, timeout_s=30)
    # When a second critical job arrives while the victim runs again
    second = client.submit(_probe(1, "critical"))
    done = victim.wait(timeout_s=60)
    # Then the victim was preempted once only, and the second critical job waited for it to finish
    assert done.state is JobState.SUCCEEDED and len(done.preemptions) == 1
    later = second.wait(timeout_s=60)
    assert later.state is JobState.SUCCEEDED and later.started_at > done.finished_at


def test_a_job_that_starts_waiting_wakes_the_supervisor_between_ticks(fleet, client, services, supervised):
    # Given a low job on the only GPU, and a supervisor past its first tick that would tick again only in a minute
    fleet.start("0:A100:40")
    low = client.submit(_probe(30, "low"))
    poll(lambda: _step(client, low.job_id) >= 1, 60, "the low job running")
    supervised("--interval", "60", "--leader-ttl", "120")
    poll(LeaderLease(connect(services.settings.redis_url), "supervisor", "probe", 3).holder, 30, "the first tick")
    time.sleep(1)  # not for the outcome: only so the submission cannot fall inside that first tick (milliseconds)
    # When a critical job is submitted
    urgent = client.submit(_probe(1, "critical"))
    # Then the supervisor asks the low job to yield at once (woken by the submission), not at its next tick
    poll(lambda: _requests(client, low.job_id), 20, "a preempt request long before the next tick")
    assert urgent.wait(timeout_s=40).state is JobState.SUCCEEDED


def test_a_queued_job_whose_message_was_lost_is_published_again_and_runs_once(fleet, client, services, supervised):
    # Given a queued job whose message is gone (as if its publisher died between the registry write and the send)
    handle = client.submit(_probe(1, "low"))
    record = handle.refresh()
    task_id, redis = record.attempts[-1].task_id, connect(services.settings.redis_url)
    mine = [m for m in redis.lrange(record.queue, 0, -1) if json.loads(m)["headers"]["id"] == task_id]
    assert len(mine) == 1 and redis.lrem(record.queue, 1, mine[0]) == 1
    # When a worker and a supervisor run
    fleet.start("0:A100:40")
    supervised("--resend-grace", "2")
    # Then the supervisor publishes the same attempt again, and the job runs once and succeeds
    done = handle.wait(timeout_s=60)
    assert done.state is JobState.SUCCEEDED, done.events[-1]
    resent = [e for e in done.events if e.type == "resent"]
    assert len(resent) == 1 and resent[0].by == "recovery" and "published again" in (resent[0].reason or "")
    assert [a.task_id for a in done.attempts] == [task_id]
    assert [e["type"] for e in client.audit(job_id=done.job_id)] == ["resent"]


def test_a_victim_whose_flag_is_already_cleared_still_counts_as_yielding(fleet, client, services):
    # Given a running low job asked to yield, whose flag its requeue has just cleared while the snapshot is read
    # (the record still says running: the race that once made a second victim for one critical job)
    handle = client.submit(_probe(30, "low"))
    record = handle.refresh()
    lifecycle.record_start(client.rt.registry, handle.job_id, record.attempts[-1].task_id, ("gpu0@h", "0"))
    client.preempt(handle.job_id, reason="test: for a critical job", by="supervisor")
    Leases(connect(services.settings.redis_url)).clear_flag(handle.job_id)
    # When the supervisor takes its snapshot
    snap, _, flagged = build_supervisor(services.settings, Options(dry_run=True), lambda _: None).snapshot(time.time())
    # Then the job is still a victim on its way out (a soon-free GPU), not a candidate for another request
    assert handle.job_id not in flagged
    assert [(v.job_id, v.preempting) for v in snap.running] == [(handle.job_id, True)]


def test_a_job_that_starts_while_the_snapshot_is_read_is_not_also_waiting(fleet, client, services):
    # Given a queued high job that a worker starts right after the supervisor has read the queued index
    handle = client.submit(_probe(30, "high"))
    task_id = handle.refresh().attempts[-1].task_id
    supervisor = build_supervisor(services.settings, Options(dry_run=True), lambda _: None)
    real = supervisor.rt.registry
    racing = StartsAfterFirstRead(real.client, lambda: lifecycle.record_start(real, handle.job_id, task_id,
                                                                               ("gpu0@h", "0")))  # fmt: skip
    supervisor.rt = dataclasses.replace(supervisor.rt, registry=RedisRegistry(racing, real.url))
    # When the supervisor takes its snapshot
    snap, running, _ = supervisor.snapshot(time.time())
    # Then the job is running, and not also a waiting job that a low job could be preempted for
    assert [r.job_id for r in running] == [handle.job_id] and client.job(handle.job_id).state is JobState.RUNNING
    assert snap.waiting == () and [r.job_id for r in supervisor.seen.queued] == []


def test_dry_run_prints_the_decision_and_applies_none(fleet, client, services):
    fleet.start("0:A100:40")
    low = client.submit(_probe(20, "low"))
    low.wait({JobState.RUNNING}, timeout_s=30)
    urgent = client.submit(_probe(1, "critical"))
    result = yoloq_cli(services, "supervisor", "--dry-run", "--once")
    assert result.returncode == 0, result.stderr
    assert f"would preempt {low.job_id} for {urgent.job_id}: critical job" in result.stdout
    assert Leases(connect(services.settings.redis_url)).flag(low.job_id) is None and not _requests(client, low.job_id)
    client.cancel(low.job_id)


def test_standby_takes_over_when_the_leader_is_killed_and_preempts_exactly_once(fleet, client, services, supervised):
    # Given two supervisors, one of them leading, and a low job on the only GPU
    fleet.start("0:A100:40")
    low = client.submit(_probe(8, "low"))
    poll(lambda: _step(client, low.job_id) >= 1, 60, "the low job running")
    procs = [supervised(), supervised()]
    lease = LeaderLease(connect(services.settings.redis_url), "supervisor", "probe", 3)
    leader = poll(lease.holder, 15, "a leader")
    leading = next(p for p in procs if leader.endswith(f":{p.pid}"))
    # When the leader is killed with -9 and a critical job arrives
    os.kill(leading.pid, signal.SIGKILL)
    urgent = client.submit(_probe(1, "critical"))
    # Then the standby takes over within the lease TTL and the victim is preempted exactly once
    poll(lambda: (lease.holder() or leader) != leader, 10, "the standby to lead")
    assert urgent.wait(timeout_s=60).state is JobState.SUCCEEDED
    record = low.wait(timeout_s=60)
    assert record.state is JobState.SUCCEEDED
    assert len(_requests(client, low.job_id)) == 1 and len(record.preemptions) == 1
    assert Leases(connect(services.settings.redis_url)).flag(low.job_id) is not Flag.PREEMPT


def test_promoted_queued_job_starts_before_the_tier_it_left_behind(fleet, client, services):
    fleet.start("0:A100:40")
    busy = client.submit(_probe(2, "low"))
    busy.wait({JobState.RUNNING}, timeout_s=30)
    medium = client.submit(_probe(0, "medium"))
    lifted = client.submit(_probe(0, "low"))
    result = yoloq_cli(services, "promote", lifted.job_id, "--tier", "high", "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["queue"].startswith("yoloq.high.")
    a, b = lifted.wait(timeout_s=30), medium.wait(timeout_s=30)
    assert a.state is JobState.SUCCEEDED and a.tier.value == "high" and a.started_at < b.started_at
    assert [t.outcome for t in a.attempts] == ["promoted", "succeeded"]


def test_promoted_queued_job_keeps_its_place_by_submit_time_in_its_new_queue(fleet, client, services):
    # Given a busy GPU, and queued: high H1, then low L, then high H2 and H3 (in submit order)
    fleet.start("0:A100:40")
    client.submit(_probe(2, "low")).wait({JobState.RUNNING}, timeout_s=30)
    h1 = client.submit(_probe(0, "high"))
    lifted = client.submit(_probe(0, "low"))
    h2, h3 = client.submit(_probe(0, "high")), client.submit(_probe(0, "high"))
    # When L is promoted to high
    client.promote(lifted.job_id, Tier.HIGH)
    # Then it runs after H1 (submitted before it) and before H2 and H3 (submitted after it), not at the tail
    starts = {name: h.wait(timeout_s=60).started_at for name, h in (("h1", h1), ("l", lifted), ("h2", h2), ("h3", h3))}
    assert sorted(starts, key=lambda name: starts[name]) == ["h1", "l", "h2", "h3"]


def test_promoted_running_job_is_no_longer_a_victim(fleet, client, services):
    fleet.start("0:A100:40")
    running = client.submit(_probe(30, "low"))
    running.wait({JobState.RUNNING}, timeout_s=30)
    urgent = client.submit(_probe(1, "critical"))
    assert f"would preempt {running.job_id}" in yoloq_cli(services, "supervisor", "--dry-run", "--once").stdout
    client.promote(running.job_id, Tier.CRITICAL)
    after = yoloq_cli(services, "supervisor", "--dry-run", "--once").stdout
    assert "would preempt" not in after and "1 more waiting jobs not examined: no free GPU and no lower-tier" in after
    assert urgent.refresh().state is JobState.QUEUED
    client.cancel(running.job_id)


def test_a_cordoned_free_gpu_is_not_counted_as_room(fleet, client, services):
    # Given one GPU busy with a low job and the other free but cordoned (it takes no work)
    fleet.start("0:A100:40,1:A100:40")
    low = client.submit(_probe(30, "low"))
    busy = low.wait({JobState.RUNNING}, timeout_s=30).gpu
    idle = "1" if busy == "0" else "0"
    device = f"{socket.gethostname()}:{idle}"
    assert yoloq_cli(services, "cordon", device, "--reason", "test: ECC errors").returncode == 0
    app = create_app(services.settings)
    poll(lambda: active_queues(app, f"gpu{idle}@{socket.gethostname()}") == [], 30, "the cordoned worker to stop")
    try:
        client.submit(_probe(1, "critical"))
        # Then the supervisor makes room on the busy GPU instead of waiting for the cordoned one
        result = yoloq_cli(services, "supervisor", "--dry-run", "--once")
        assert f"would preempt {low.job_id}" in result.stdout, result.stdout + result.stderr
    finally:
        yoloq_cli(services, "uncordon", device)
        client.cancel(low.job_id)
