"""Strict tier order and memory-aware placement with real worker processes on a simulated fleet."""

from __future__ import annotations

import pytest

from tasks.records import parse_iso
from tasks.specs import ProbeSpec
from tasks.states import JobState

pytestmark = pytest.mark.integration


def test_waiting_jobs_start_in_strict_tier_order(fleet, client):
    # Given one GPU, busy with a probe
    fleet.start("0:A100:40")
    blocker = client.submit(ProbeSpec(seconds=2, tier="batch", team="ops"))
    blocker.wait({JobState.RUNNING}, timeout_s=30)
    # When two probes of each tier are queued in reverse order while it is busy (two per tier, so that a
    # round-robin consumer, which rotates a queue to the back after each message, would interleave tiers)
    tiers = ("batch", "low", "medium", "high", "critical")
    handles = [client.submit(ProbeSpec(seconds=0, tier=t, team="ops")) for t in tiers for _ in range(2)]
    assert blocker.refresh().state is JobState.RUNNING, "the GPU freed before every tier was queued"
    records = [h.wait(timeout_s=60) for h in handles]
    # Then, once the GPU frees, they start critical, high, medium, low, batch (by the registry's started_at)
    assert all(r.state is JobState.SUCCEEDED for r in records)
    order = [r.tier.value for r in sorted(records, key=lambda r: parse_iso(r.started_at))]
    assert order == [
        "critical",
        "critical",
        "high",
        "high",
        "medium",
        "medium",
        "low",
        "low",
        "batch",
        "batch",
    ]
    freed = parse_iso(blocker.refresh().finished_at)
    assert all(parse_iso(r.started_at) >= freed for r in records)


def test_job_larger_than_small_gpu_never_runs_there(fleet, client):
    # Given a T4 (16 GB) and an A100 (40 GB), the A100 busy with a 20 GB job
    fleet.start("0:T4:16,1:A100:40")
    first = client.submit(ProbeSpec(seconds=2, tier="low", team="ops", memory_gb=20))
    first.wait({JobState.RUNNING}, timeout_s=30)
    # When a second 20 GB job arrives while the T4 is idle
    second = client.submit(ProbeSpec(seconds=0, tier="critical", team="ops", memory_gb=20))
    done = [first.wait(timeout_s=30), second.wait(timeout_s=30)]
    # Then both ran on the A100 only, the second after the first freed it
    assert [r.gpu for r in done] == ["1", "1"]
    assert parse_iso(done[1].started_at) >= parse_iso(done[0].finished_at)
    assert done[1].queue == "yoloq.critical.24g"


def test_small_job_uses_small_gpu_while_big_one_is_busy(fleet, client):
    # Given the A100 busy with a big job
    fleet.start("0:T4:16,1:A100:40")
    big = client.submit(ProbeSpec(seconds=4, tier="low", team="ops", memory_gb=30))
    big.wait({JobState.RUNNING}, timeout_s=30)
    # When a small job arrives
    small = client.submit(ProbeSpec(seconds=0, tier="low", team="ops", memory_gb=2))
    record = small.wait(timeout_s=30)
    # Then it runs on the T4 at once, without waiting for the A100
    assert record.gpu == "0"
    assert big.refresh().state is JobState.RUNNING
    big.wait(timeout_s=30)
