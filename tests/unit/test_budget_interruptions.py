"""The 24 h preemption budget counts decisions, not failures (found by the broker-restart drill, issue 17 item 3).

Every job running through a Redis restart is cut off ("Redis unreachable", requeued ``by`` its worker); before the
fix that counted as its one preemption of the day, so after a broker restart no running job was an eligible victim
and a critical job waited for one to finish by itself. The same held after a worker crash (``by`` recovery).
"""

from __future__ import annotations

import time

import pytest

from routing.preemption import Gpu, Policy, Snapshot, Waiting, decide
from routing.tiers import Tier
from tasks.budget import budget_preemptions
from tasks.records import Attempt, Event, JobRecord, iso, utc_now
from tasks.states import JobState
from workers.supervisor import _running

pytestmark = pytest.mark.unit


def _low_job(preempted_by: list[str]) -> JobRecord:
    """A running low job on gpu0 that was requeued once by each of ``preempted_by`` earlier today."""
    now = iso(utc_now())
    events = [Event(at=now, type="preempted", state=JobState.QUEUED, reason="earlier", by=by) for by in preempted_by]
    attempts = [Attempt(n=1, task_id="t1", queue="yoloq.low.8g", created_at=now, started_at=now, worker="gpu0@h")]
    return JobRecord(
        job_id="jlow", kind="probe", name=None, tier=Tier.LOW, team="t", state=JobState.RUNNING, queue="yoloq.low.8g",
        memory_mib=8192, spec={}, attempts=attempts, preemptions=events, worker="gpu0@h", gpu="0",
        progress={"step": 1, "steps": 60}, checkpoint=None, submitted_at=now, started_at=now, finished_at=None,
        heartbeat_at=now, result=None, error=None, events=events,
    )  # fmt: skip


def _victims_for_a_critical_job(record: JobRecord) -> list[str]:
    now = time.time()
    snap = Snapshot(now, (Gpu("gpu0@h", 40_960, record.job_id),), (Waiting("jcrit", Tier.CRITICAL, 8192, now),),
                    (_running(record, False, now),), Policy(reserved_share=0))  # fmt: skip
    return [p.victim for p in decide(snap).preemptions]


@pytest.mark.parametrize("cut_off_by", [["worker"], ["recovery"], ["worker", "recovery", "worker"]])
def test_a_job_cut_off_by_a_failure_is_still_a_victim(cut_off_by: list[str]) -> None:
    record = _low_job(cut_off_by)
    assert budget_preemptions(record) == []
    assert _victims_for_a_critical_job(record) == ["jlow"]


@pytest.mark.parametrize("decided_by", ["supervisor", "cli:ops"])
def test_a_job_the_supervisor_or_an_operator_preempted_has_spent_its_budget(decided_by: str) -> None:
    record = _low_job(["worker", decided_by])
    assert [e.by for e in budget_preemptions(record)] == [decided_by]
    assert _victims_for_a_critical_job(record) == []
