"""`yoloq autoscaler` with real worker processes: 0 → 2 workers on a burst, back to 0 after the down delay, no job
lost; a busy worker above max is drained through a checkpoint, not killed."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.fleet_ceiling import FleetCeiling
from infra.presence import GpuClaims
from infra.processes import ManagedProcess
from infra.redis_client import connect
from tasks.records import parse_iso
from tasks.specs import ProbeSpec
from tasks.states import JobState
from tests.fleet import poll, stop_supervisors

pytestmark = pytest.mark.integration

GPUS = "0:A100:40,1:A100:40"


@pytest.fixture
def autoscaler(services: Any, fleet: Any) -> Iterator[Any]:
    started: list[ManagedProcess] = []

    def start(*args: str) -> tuple[ManagedProcess, Path]:
        log = services.settings.home / "logs" / f"autoscaler{len(started)}.log"
        log.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "yoloq", "autoscaler", "--interval", "0.3", *args]
        proc = ManagedProcess("autoscaler", argv, log, services.env(YOLOQ_GPUS=GPUS))
        started.append(proc)
        return proc, log

    yield start
    for proc in started:
        proc.stop(60)


def _live(services: Any) -> int:
    claims = GpuClaims(connect(services.settings.redis_url), services.settings.redis_url)
    return sum(1 for c in claims.live() if c.get("ready_at"))


def test_burst_scales_zero_to_two_and_back_to_zero_without_losing_a_job(services, client, autoscaler):
    _, log = autoscaler("--down-delay", "2")
    poll(lambda: log.exists() and "steady: 0 workers" in log.read_text(), 30, "the autoscaler's first poll")
    assert _live(services) == 0
    # And with no worker live, the GPUs it may start already count as the fleet's at the door (issue 15 item 5)
    assert set(FleetCeiling(connect(services.settings.redis_url)).seen()) == {40_960}
    # When a burst of 6 jobs arrives
    burst = [client.submit(ProbeSpec(seconds=2, tier="low", team="vision")) for _ in range(6)]
    # Then two workers start (one per device; the burst is bigger than the fleet) and every job succeeds
    poll(lambda: _live(services) == 2, 60, "two autoscaled workers consuming")
    records = [h.wait(timeout_s=120) for h in burst]
    assert [r.state for r in records] == [JobState.SUCCEEDED] * 6
    assert {r.gpu for r in records} == {"0", "1"}
    # And once idle for the down delay, both stop
    poll(lambda: _live(services) == 0, 60, "the idle workers to stop")
    text = log.read_text()
    assert "start worker for GPU 0" in text and "start worker for GPU 1" in text
    assert "stop worker for GPU 0" in text and "stop worker for GPU 1" in text


def test_draining_a_busy_worker_checkpoints_and_requeues_its_job(services, client, autoscaler):
    # Given a job running on a worker the autoscaler started
    proc, _ = autoscaler("--down-delay", "600")
    job = client.submit(ProbeSpec(seconds=60, tier="low", team="vision"))
    job.wait({JobState.RUNNING}, timeout_s=60)
    poll(lambda: job.refresh().progress.get("step", 0) >= 2, 30, "two steps done")
    # When the autoscaler stops, it drains what it started: a checkpoint and a requeue, not a kill
    proc.stop(60)
    record = poll(lambda: (r := job.refresh()).state is JobState.QUEUED and r, 60, "the drained job back in its queue")
    assert [a.outcome for a in record.attempts][:1] == ["preempted"]
    assert any(e.type == "preempted" and "shutting down" in e.reason for e in record.events), record.events[-3:]
    assert _live(services) == 0
    client.cancel(job.job_id)


def test_a_waiting_gang_scales_out_and_its_held_idle_gpus_are_not_scaled_in(services, client, autoscaler):
    # Given no worker yet, an autoscaler that stops an idle worker after 1 s, and a supervisor (it places gangs)
    _, log = autoscaler("--down-delay", "1")
    poll(lambda: log.exists() and "steady: 0 workers" in log.read_text(), 30, "the autoscaler's first poll")
    services.start_supervisor("--interval", "0.2", "--leader-ttl", "3")
    try:
        # When a gang of 2 GPUs arrives (its queue is one no worker consumes)
        gang = client.submit(ProbeSpec(seconds=2, tier="low", team="vision", gpus=2))
        record = gang.wait(timeout_s=120)
    finally:
        stop_supervisors(services)
    # Then both GPUs got a worker, and neither was stopped while held for it and idle (the 2.5 s settle > 1 s delay)
    assert record.state is JobState.SUCCEEDED, (record.state, record.error)
    assert str(record.attempts[-1].gpu).split(",") == ["0", "1"], record.attempts
    text = log.read_text()
    assert "start worker for GPU 0" in text and "start worker for GPU 1" in text
    started = parse_iso(str(record.attempts[-1].started_at)).timestamp()
    assert len(record.attempts) == 1 and started - parse_iso(record.submitted_at).timestamp() < 60
