"""The load drill's checks (bench/drills/load.py) catch what they claim to, and what the drill found stays fixed."""

from __future__ import annotations

import time
from typing import Any, cast

import pytest

from bench.drills import load
from bench.drills.outcome import Outcome
from infra.prometheus import YoloqCollector
from routing.tiers import Tier, all_queues
from tasks.specs import ProbeSpec
from tasks.states import JobState
from yoloq.client import Client

pytestmark = pytest.mark.integration


def _submitted(client: Client, count: int) -> list[str]:
    for team in load.PRE_APPROVED:
        client.preapprove(team, by="test")
    return [client.submit(load._spec(n)).job_id for n in range(count)]


def test_the_loss_check_passes_on_an_intact_queue(wiped: Client) -> None:
    ids = _submitted(wiped, 12)
    outcome = Outcome(name="load", faults="", jobs=len(ids))
    states = load.check_nothing_lost(outcome, wiped, ids)
    assert outcome.passed, outcome.problems
    assert states == {"queued": 11, "held": 1}  # job 10 is critical for a team without pre-approval


def test_the_loss_check_sees_a_lost_and_a_duplicated_message(wiped: Client) -> None:
    ids = _submitted(wiped, 12)
    redis = wiped.registry.client
    queue = next(q for q in all_queues() if redis.llen(q) >= 2)
    first, second = redis.lrange(queue, 0, 1)
    redis.lrem(queue, 1, first)  # one job's message vanishes
    redis.rpush(queue, second)  # another's is there twice
    outcome = Outcome(name="load", faults="", jobs=len(ids))
    load.check_nothing_lost(outcome, wiped, ids)
    assert (outcome.lost, outcome.duplicated) == (1, 1)
    assert not outcome.passed


def test_the_loss_check_sees_a_job_missing_from_the_registry(wiped: Client) -> None:
    ids = _submitted(wiped, 6)
    outcome = Outcome(name="load", faults="", jobs=len(ids) + 1)
    load.check_nothing_lost(outcome, wiped, [*ids, "j-never-registered"])
    assert outcome.lost == 1 and any("submitted" in p for p in outcome.problems)


def test_sla_counts_held_jobs_without_reading_their_records(wiped: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """Drill load: with 1,000 of 10,000 jobs held, status took 145 ms (p50) and /metrics 450 ms, because the SLA
    read every held job's whole record with its history; now one index read and one field per job."""
    held = wiped.submit(ProbeSpec(seconds=0, tier=Tier.CRITICAL, team="nobody-approved"))
    assert held.state is JobState.HELD
    assert [t for t, _ in wiped.registry.submit_times(JobState.HELD)] == ["critical"]
    later = time.time() + 31 * 60

    def no_records(*_: object, **__: object) -> None:
        raise AssertionError("the SLA read job records")

    monkeypatch.setattr(wiped.registry, "many", no_records)
    assert wiped.sla(later)["critical"]["waiting_past_target"] == 1


def test_submit_times_are_the_submit_times(wiped: Client) -> None:
    before = time.time()
    wiped.submit(ProbeSpec(seconds=0, tier=Tier.HIGH, team="vision", memory_gb=1))
    ((tier, submitted),) = wiped.registry.submit_times(JobState.QUEUED)
    assert tier == "high" and before <= submitted <= time.time()
    assert wiped.registry.submit_times(JobState.HELD) == []


def test_a_scrape_reads_the_histograms_without_scanning_the_keyspace(wiped: Client) -> None:
    """Drill load: with 10,000 jobs queued each /metrics scrape took 0.3 s, SCANning every key for the few
    histogram keys; now it reads the labels recorded with the observations (and the tiers, for older data)."""
    redis = wiped.registry.client
    wiped.registry.observe("checkpoint_upload_seconds", "", 1.5)
    wiped.registry.observe("time_to_start_seconds", "high", 2.0)
    redis.hset("yoloq:metrics:hist:time_to_start_seconds:low", mapping={"count": 1, "sum": 7.0, "le:30": 1})  # old

    def no_scan(*_: object, **__: object) -> None:
        raise AssertionError("the scrape scanned the keyspace")

    views = {"queues": wiped.queues(), "status": wiped.status(), "serving": {"deployments": {}}}
    collector = YoloqCollector(cast(Any, ScanFree(redis, no_scan)), lambda: views)
    families = {f.name: f for f in collector.collect()}
    names = ("yoloq_time_to_start_seconds", "yoloq_checkpoint_upload_seconds")
    counts = {
        s.labels.get("tier", ""): s.value for f in names for s in families[f].samples if s.name.endswith("_count")
    }
    assert counts == {"high": 1.0, "low": 1.0, "": 1.0}


class ScanFree:
    """A Redis client whose SCAN fails the test; everything else passes through."""

    def __init__(self, client: Any, scan: Any) -> None:
        self._client, self.scan_iter, self.scan, self.keys = client, scan, scan, scan

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)
