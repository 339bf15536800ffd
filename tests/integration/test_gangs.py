"""Multi-GPU jobs (gangs) with real workers on a simulated host and a real supervisor: K GPUs together or not at all,
never shared, freed together by a preemption, and a reservation that drains (docs/placement.md, gangs)."""

from __future__ import annotations

import itertools
import json
import time

import pytest

from infra.gang_holds import GANGS_KEY
from routing.tiers import Tier
from tasks.records import JobRecord, parse_iso
from tasks.specs import ProbeSpec
from tasks.states import JobState
from tests.fleet import poll
from yoloq.standing import job_document

pytestmark = pytest.mark.integration


def _probe(seconds: int, tier: str, gpus: int = 1) -> ProbeSpec:
    return ProbeSpec(seconds=seconds, tier=tier, team="ops", memory_gb=8, gpus=gpus)


def _runs(records: list[JobRecord]) -> list[tuple[str, set[str], float, float]]:
    """Every attempt that started: (job, the GPUs it held, start, end)."""
    out = []
    for record in records:
        for a in record.attempts:
            if a.started_at:
                end = parse_iso(a.ended_at).timestamp() if a.ended_at else float("inf")
                out.append((record.job_id, set(str(a.gpu).split(",")), parse_iso(a.started_at).timestamp(), end))
    return out


def _assert_never_shared(records: list[JobRecord]) -> None:
    """The attempt log: no two jobs' attempts overlapping in time ever held the same GPU."""
    for (j1, g1, s1, e1), (j2, g2, s2, e2) in itertools.combinations(_runs(records), 2):
        if j1 != j2 and s1 < e2 and s2 < e1:
            assert not g1 & g2, f"{j1} on {g1} and {j2} on {g2} overlapped in time"


def test_two_competing_gangs_each_start_whole_one_after_the_other(fleet, client, supervised):
    # Given a host of three GPUs and two gangs of two submitted together, plus a single job
    fleet.start("0:A100:40,1:A100:40,2:A100:40")
    gangs = [client.submit(_probe(3, "medium", gpus=2)) for _ in range(2)]
    doc = job_document(client, client.job(gangs[0].job_id))  # no supervisor yet: waiting to be placed
    assert doc["queue_position"] is None and "a gang of 2 GPUs" in doc["queue_note"], doc
    too_big = client.submit(_probe(1, "medium", gpus=4))  # no host of this fleet has four: it says so, and waits
    assert "no live host has that many (at most 3)" in job_document(client, client.job(too_big.job_id))["queue_note"]
    supervised()
    single = client.submit(_probe(2, "medium"))
    # Then both gangs finish, each attempt on two GPUs of the host at once, never one
    records = [h.wait(timeout_s=90) for h in gangs]
    assert all(r.state is JobState.SUCCEEDED for r in records), [(r.state, r.error) for r in records]
    for record in records:
        assert [len(str(a.gpu).split(",")) for a in record.attempts if a.started_at] == [2]
        assert any(e.type == "gang-held" for e in record.events) and any(
            e.type == "gang-started" for e in record.events
        )
    # And no GPU ever ran two jobs at once (the gangs ran one after the other: 2 + 2 > 3)
    done = single.wait(timeout_s=60)
    assert done.state is JobState.SUCCEEDED
    assert client.job(too_big.job_id).state is JobState.QUEUED  # never started on fewer than four
    client.cancel(too_big.job_id)
    _assert_never_shared([*records, done])
    first, second = sorted(_runs(records), key=lambda r: r[2])
    assert second[2] >= first[3]


def test_preempting_a_gang_frees_all_its_gpus_and_it_resumes_whole(fleet, client, supervised):
    # Given a low gang holding both GPUs of the host, a few steps in
    fleet.start("0:A100:40,1:A100:40")
    supervised()
    gang = client.submit(_probe(12, "low", gpus=2))
    poll(lambda: int(client.job(gang.job_id).progress.get("step", 0)) >= 2, 60, "the gang running")
    # When a critical single job arrives
    urgent = client.submit(_probe(2, "critical"))
    # Then the gang is preempted once for it, the critical job runs, and the gang resumes on both GPUs again
    assert urgent.wait(timeout_s=60).state is JobState.SUCCEEDED
    record = gang.wait(timeout_s=120)
    assert record.state is JobState.SUCCEEDED, record.error
    assert [getattr(p, "for_job", None) for p in record.preemptions] == [urgent.job_id]
    assert record.result["resumed_from"] >= 2
    assert [len(str(a.gpu).split(",")) for a in record.attempts if a.started_at] == [2, 2]
    done = client.job(urgent.job_id)
    _assert_never_shared([record, done])
    # and the gang did not take its GPUs back before the job it yielded them to had started
    assert parse_iso(done.attempts[-1].started_at) <= parse_iso(record.attempts[-1].started_at)


def _reserved_behind(fleet, client, supervised, busy_s: int) -> tuple:
    """Two GPUs, one busy for ``busy_s`` with a low job; a high gang of two, once it has reserved both."""
    fleet.start("0:A100:40,1:A100:40")
    first = client.submit(_probe(busy_s, "low"))
    first.wait({JobState.RUNNING}, timeout_s=60)
    supervised()
    gang = client.submit(_probe(2, "high", gpus=2))
    poll(lambda: any(e.type == "gang-held" for e in client.job(gang.job_id).events), 30, "the gang's reservation")
    return first, gang


def test_a_reserved_gang_drains_its_gpus_and_no_single_job_lands_on_them(fleet, client, supervised):
    # Given one GPU busy with a low job and one idle; when a high gang of two arrives, it reserves both (the idle one
    # stays idle while the other drains)
    first, gang = _reserved_behind(fleet, client, supervised, 10)
    doc = job_document(client, client.job(gang.job_id))  # where it stands: the held GPUs and when they free together
    if doc["state"] == "queued":
        assert "GPUs 0,1 of" in doc["queue_note"] and doc["eta_start"] is not None, doc
    later = client.submit(_probe(12, "low"))  # expected to outlast the reservation: never lent its GPU
    eta = job_document(client, client.job(later.job_id))["eta_start"]  # not on the idle held GPU now: after the gang
    assert eta is not None and parse_iso(eta).timestamp() - time.time() >= 4, eta
    # Then the later single job does not take the idle held GPU: it starts only after the gang ran
    records = [h.wait(timeout_s=90) for h in (first, gang, later)]
    assert all(r.state is JobState.SUCCEEDED for r in records), [(r.state, r.error) for r in records]
    _assert_never_shared(records)
    starts = {r.job_id: parse_iso(r.attempts[-1].started_at).timestamp() for r in records}
    ends = {r.job_id: parse_iso(r.attempts[-1].ended_at).timestamp() for r in records}
    assert starts[gang.job_id] >= ends[first.job_id] and starts[later.job_id] >= starts[gang.job_id]
    assert "reserved" in next(e.reason for e in client.job(gang.job_id).events if e.type == "gang-held")
    # And the held idle GPU's worker stopped taking tier-queue jobs: at most the one it had taken was given back
    assert sum(e.type == "given-back" for e in client.job(later.job_id).events) <= 1


def test_a_gang_whose_worker_is_killed_resumes_whole_from_its_checkpoint(fleet, client, supervised):
    # Given a gang running on both GPUs of the host, a few steps in
    fleet.start("0:A100:40,1:A100:40")
    supervised()
    gang = client.submit(_probe(8, "medium", gpus=2))
    poll(lambda: int(client.job(gang.job_id).progress.get("step", 0)) >= 2, 60, "the gang running")
    leader = int(str(client.job(gang.job_id).gpu).split(",")[0])
    # When the worker running it is killed with -9 (a lost machine) and comes back
    fleet.kill9(leader)
    fleet.restart(leader)
    # Then its lease expires, the hold is released, it is held again and resumes on two GPUs from its checkpoint
    record = gang.wait(timeout_s=120)
    assert record.state is JobState.SUCCEEDED, record.error
    assert record.result["resumed_from"] >= 2
    assert [len(str(a.gpu).split(",")) for a in record.attempts if a.started_at] == [2, 2]


def test_a_draining_reservation_lends_its_idle_gpu_to_a_short_job_and_reclaims_it_when_due(fleet, client, supervised):
    # Given one GPU busy for ~15 s with a low job, and a high gang of two that reserves both GPUs meanwhile
    first, gang = _reserved_behind(fleet, client, supervised, 15)
    long_job = client.submit(_probe(30, "medium"))  # expected 30 s: would still run when the gang is due
    loan = client.submit(_probe(8, "low"))  # expected 8 s: ends before the reservation, with its margin
    # Then the idle reserved GPU is lent to the job expected to end in time, not to the longer higher-tier one
    poll(lambda: any(e.type == "backfilled" for e in client.job(loan.job_id).events), 30, "the backfill loan")
    poll(lambda: int(client.job(loan.job_id).progress.get("step", 0)) >= 2, 30, "the loan running")
    assert not any(e.type == "backfilled" for e in client.job(long_job.job_id).events)
    # When the reservation falls due while the loan still runs (its estimate was wrong: we move the due time to now)
    redis = client.registry.client
    hold = json.loads(redis.hget(GANGS_KEY, gang.job_id))
    redis.hset(GANGS_KEY, gang.job_id, json.dumps({**hold, "start_at": time.time() - 1}))
    # Then the loan is reclaimed at its checkpoint for the gang, the gang runs whole once the first job ends, and the
    # loan resumes later from its checkpoint; no GPU ever ran two jobs at once
    records = [h.wait(timeout_s=180) for h in (first, gang, loan, long_job)]
    assert all(r.state is JobState.SUCCEEDED for r in records), [(r.state, r.error) for r in records]
    lent = client.job(loan.job_id)
    assert [getattr(p, "for_job", None) for p in lent.preemptions] == [gang.job_id]
    assert "backfill loan reclaimed" in lent.preemptions[0].reason and lent.result["resumed_from"] >= 2
    _assert_never_shared(records)
    starts = {r.job_id: parse_iso(r.attempts[-1].started_at).timestamp() for r in records}
    assert parse_iso(lent.attempts[0].started_at).timestamp() < starts[gang.job_id] <= starts[long_job.job_id]


def test_a_promoted_waiting_gang_leaves_nothing_behind_in_its_old_gang_queue(wiped):
    # Given a medium gang waiting (no worker, no supervisor)
    gang = wiped.submit(_probe(1, "medium", gpus=2))
    depth = wiped.registry.client.llen
    assert (depth("yoloq.medium.gang"), depth("yoloq.high.gang")) == (1, 0)
    # When it is promoted, its message moves: no consumer would ever pop the old one from a gang queue
    wiped.promote(gang.job_id, Tier.HIGH, by="test")
    assert (depth("yoloq.medium.gang"), depth("yoloq.high.gang")) == (0, 1)
    assert wiped.job(gang.job_id).queue == "yoloq.high.gang"
