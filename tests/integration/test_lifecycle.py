"""Probe checkpoints and resume, preempt and cancel, registry durability across kill -9 of a worker."""

from __future__ import annotations

import os

import pytest

from infra.presence import GpuClaims
from infra.redis_client import connect
from infra.s3 import S3Store
from tasks.runner import probe_checkpoint_key
from tasks.specs import ProbeSpec
from tasks.states import JobState
from tests.fleet import poll, yoloq_cli

pytestmark = pytest.mark.integration


def _step(client, job_id: str) -> int:
    return int(client.job(job_id).progress.get("step", 0))


def test_preempted_probe_requeues_with_new_task_id_and_resumes_from_checkpoint(fleet, client, services):
    # Given a running probe that has checkpointed a few steps
    fleet.start("0:A100:40,1:A100:40")
    handle = client.submit(ProbeSpec(seconds=5, tier="low", team="ops"))
    poll(lambda: _step(client, handle.job_id) >= 2, 30, "two probe steps")
    # When an operator preempts it
    client.preempt(handle.job_id, reason="drill")
    record = handle.wait(timeout_s=60)
    # Then it yielded, was requeued under a new task id, and resumed from its checkpoint, not from step 0
    assert record.state is JobState.SUCCEEDED
    assert [a.outcome for a in record.attempts] == ["preempted", "succeeded"]
    assert record.attempts[0].task_id != record.attempts[1].task_id
    assert record.result["resumed_from"] >= 2
    assert [(p.reason, p.by) for p in record.preemptions] == [("drill", client.actor)]  # the request, not the worker
    assert S3Store(services.settings).get_json(probe_checkpoint_key(handle.job_id)) == {"step": 5}
    assert record.checkpoint.endswith(probe_checkpoint_key(handle.job_id))


def test_cancel_queued_job_never_runs_and_running_job_stops(fleet, client):
    fleet.start("0:A100:40")
    running = client.submit(ProbeSpec(seconds=30, tier="low", team="ops"))
    queued = client.submit(ProbeSpec(seconds=0, tier="low", team="ops"))
    running.wait({JobState.RUNNING}, timeout_s=30)
    # When both are cancelled
    assert client.cancel(queued.job_id) is JobState.CANCELLED
    client.cancel(running.job_id)
    # Then the running one stops at its next step and the queued one never starts
    assert running.wait(timeout_s=15).state is JobState.CANCELLED
    assert queued.refresh().started_at is None
    result = yoloq_cli(fleet.services, "cancel", queued.job_id)
    assert result.returncode == 1 and "already cancelled" in result.stderr


def test_registry_survives_kill_9_of_worker_and_job_resumes_from_checkpoint(fleet, client):
    # Given a worker running a probe that has checkpointed, with three more jobs queued behind it
    fleet.start("0:A100:40")
    running = client.submit(ProbeSpec(seconds=5, tier="low", team="ops"))
    poll(lambda: _step(client, running.job_id) >= 2, 30, "two probe steps")
    queued = [client.submit(ProbeSpec(seconds=0, tier="high", team="ops")) for _ in range(3)]
    # When the worker is killed with -9 and started again (its stale GPU claim must not block the restart)
    fleet.kill9(0)
    fleet.restart(0)
    # Then every submitted job is still listed with its history, and the queued ones run
    listed = {r.job_id for r in client.jobs()}
    assert {running.job_id, *(h.job_id for h in queued)} <= listed
    assert [e.type for e in client.job(running.job_id).events][:2] == ["submitted", "started"]
    assert all(h.wait(timeout_s=30).state is JobState.SUCCEEDED for h in queued)
    # And the killed job's lease expires, it is requeued under a new task id and resumes from its checkpoint
    record = running.wait(timeout_s=60)
    assert record.state is JobState.SUCCEEDED
    assert [a.outcome for a in record.attempts] == ["preempted", "succeeded"]
    assert record.preemptions[0].by == "recovery" and "lease expired" in record.preemptions[0].reason
    assert record.result["resumed_from"] >= 2


def test_second_worker_for_same_gpu_is_refused(fleet):
    fleet.start("0:A100:40")
    env = fleet.services.env(YOLOQ_GPUS="0:A100:40")
    result = yoloq_cli(fleet.services, "worker", "--gpu", "0", env=env)
    assert result.returncode == 1
    assert "already has a live worker" in result.stderr and "Traceback" not in result.stderr
    missing = yoloq_cli(fleet.services, "worker", "--gpu", "5", env=env)
    assert missing.returncode == 1 and "no GPU 5" in missing.stderr


def test_a_claim_left_by_a_previous_incarnation_with_our_pid_is_stale(services):
    # A restarted container keeps its hostname and often its pid: the old claim names a "live" pid, ours
    claims = GpuClaims(connect(services.settings.redis_url), services.settings.redis_url)
    client = connect(services.settings.redis_url)
    client.hset("yoloq:gpu:old-container:9", mapping={"node": "gpu9@old-container", "pid": str(os.getpid()),
                                                      "owner": "previous"})  # fmt: skip
    client.pexpire("yoloq:gpu:old-container:9", 15_000)
    token = claims.claim("old-container", 9, {"node": "gpu9@old-container", "pid": os.getpid()}, ttl_s=15)
    assert client.hget("yoloq:gpu:old-container:9", "owner") == token != "previous"
    claims.release("old-container", 9, token)


def test_stopping_the_workers_requeues_a_running_probe_instead_of_stranding_it(fleet, client, services):
    # Given a probe running (its steps run in the pool child itself, with no SIGTERM handler of its own)
    fleet.start("0:A100:40")
    job = client.submit(ProbeSpec(seconds=60, tier="low", team="vision"))
    job.wait({JobState.RUNNING}, timeout_s=30)
    poll(lambda: job.refresh().progress.get("step", 0) >= 1, 30, "a step done")
    # When the stack warm-stops its workers
    services.stop_workers(grace_s=30)
    # Then the job was preempted and is back in its queue at once (not left running until its lease expires)
    record = job.refresh()
    assert record.state is JobState.QUEUED, record.events[-2:]
    assert record.attempts[0].outcome == "preempted" and "shutting down" in record.events[-1].reason
    client.cancel(job.job_id)


def test_a_cancelled_queued_job_leaves_the_queue_depth_at_once(services, client):
    """Issue 15 item 9a: a job no GPU consumes, cancelled, kept counting in the depth KEDA and the autoscaler read."""
    # Given a queued job nobody consumes (no worker runs)
    handle = client.submit(ProbeSpec(seconds=5, tier="medium", team="ops", memory_gb=100))
    assert client.queues()["tiers"]["medium"]["depth"] == 1
    # When it is cancelled
    assert client.cancel(handle.job_id) is JobState.CANCELLED
    # Then no queue counts it any more, and its history says it was cancelled while queued
    assert client.queues()["tiers"]["medium"]["depth"] == 0
    assert client.status()["queues"]["medium"] == 0
    assert client.job(handle.job_id).events[-1].reason == "cancelled while queued"
