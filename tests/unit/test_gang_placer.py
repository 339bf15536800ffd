"""The gang placer's judgements on one hold (workers/gangs.py): when a hold must go, which loans still hold a GPU."""

from __future__ import annotations

import pytest

from routing.tiers import Tier
from tasks.records import Attempt, Event, JobRecord
from tasks.states import JobState
from workers.gangs import _active_loans, _stale

pytestmark = pytest.mark.unit

LIVE = {("h", 0), ("h", 1)}


def _job(state: JobState, task: str = "t1", worker: str | None = None, job_id: str = "g") -> JobRecord:
    attempt = Attempt(n=1, task_id=task, queue="yoloq.high.gang", created_at="2026-12-05T00:00:00Z")
    return JobRecord.model_construct(job_id=job_id, state=state, attempts=[attempt], worker=worker, tier=Tier.HIGH)


def _hold(task: str = "", **extra: object) -> dict[str, object]:
    return {"job_id": "g", "host": "h", "gpus": [0, 1], "task_id": task, **extra}


@pytest.mark.parametrize(
    ("hold", "record", "live", "why"),
    [
        (_hold(), _job(JobState.QUEUED), LIVE, ""),  # waiting to start
        (_hold("t1"), _job(JobState.QUEUED), LIVE, ""),  # handed to its device queue
        (_hold("t1"), _job(JobState.RUNNING), LIVE, ""),  # running
        (_hold(""), _job(JobState.RUNNING), LIVE, ""),  # a leader died between the move and recording it
        (_hold("t1"), _job(JobState.PREEMPTING), LIVE, ""),  # checkpointing: its GPUs are still in use
        (_hold("t0"), _job(JobState.RUNNING), LIVE, "another attempt of it runs"),
        (_hold("t1"), _job(JobState.QUEUED, task="t2"), LIVE, "its attempt ended (preempted or requeued)"),
        (_hold(), _job(JobState.SUCCEEDED), LIVE, "the job is succeeded"),
        (_hold(), _job(JobState.HELD), LIVE, "the job is held"),
        (_hold(), None, LIVE, "the job is gone"),
        (_hold(), _job(JobState.QUEUED), {("h", 0)}, "a held GPU no longer takes work"),
        (_hold("t1", dispatched_at="100.0"), _job(JobState.QUEUED), LIVE, ""),  # handed over 59 s ago
        (_hold("t1", dispatched_at="80.0"), _job(JobState.QUEUED), LIVE, "handed to its first GPU 60 s ago"),
    ],
)
def test_a_hold_lives_exactly_while_its_attempt_needs_it(hold, record, live, why) -> None:
    found = _stale(hold, record, live, now=159.0)
    assert found.startswith(why) and (why != "") == bool(found)


def test_a_preempted_gang_waits_for_the_job_it_made_room_for() -> None:
    from workers.gangs import _made_room_for

    preempted = JobRecord.model_construct(preemptions=[Event(at="t", type="preempted", for_job="urgent")])
    assert _made_room_for(preempted) == "urgent"
    assert _made_room_for(JobRecord.model_construct(preemptions=[])) == ""
    assert _made_room_for(JobRecord.model_construct(preemptions=[Event(at="t", type="preempted")])) == ""


def test_a_loan_holds_its_gpu_while_it_waits_for_it_or_runs_on_it() -> None:
    loans = {"0": {"job_id": "a", "task_id": "ta"}, "1": {"job_id": "b", "task_id": "tb"}}
    hold = _hold(loans={**loans, "2": {"job_id": "gone", "task_id": "x"}})
    jobs = {"a": _job(JobState.QUEUED, "ta", job_id="a"), "b": _job(JobState.RUNNING, "tb", "gpu1@h", job_id="b")}
    assert set(_active_loans(hold, jobs)) == {"0", "1"}
    # run elsewhere (taken before the move), a later attempt, or ended: the GPU is free to lend again
    jobs = {"a": _job(JobState.RUNNING, "ta", "gpu5@h", job_id="a"), "b": _job(JobState.QUEUED, "tb2", job_id="b")}
    assert _active_loans(hold, jobs) == {}
    assert _active_loans(hold, {"a": _job(JobState.SUCCEEDED, "ta", job_id="a")}) == {}
    assert _active_loans(_hold(), jobs) == {}
