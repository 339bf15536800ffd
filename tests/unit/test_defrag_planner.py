"""The supervisor's side of defragmentation (workers/defrag.py, workers/supervisor.py): how running jobs become
tenants, how a shared GPU looks to the preemption rules, and why a move spends no budget."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from infra.metrics import preemption_reason
from routing.preemption import Gpu, Policy, Running
from routing.tiers import Tier
from tasks.budget import budget_preemptions
from tasks.records import Attempt, Event, JobRecord, iso
from tasks.states import JobState
from workers.defrag import MOVED_WITHIN_S, _spent, _tenant, as_gpu, due

pytestmark = pytest.mark.unit

NOW = 1000.0


def _record(job_id: str = "j", mib: int = 20_480, kind: str = "probe", **spec: object) -> JobRecord:
    return JobRecord.model_construct(job_id=job_id, tier=Tier.LOW, memory_mib=mib, kind=kind, spec=dict(spec),
                                     state=JobState.RUNNING, preemptions=[])  # fmt: skip


def _victim(job_id: str = "j", **extra: object) -> Running:
    fields: dict[str, object] = {"remaining_s": 600.0, "restart_cost_s": 4.0, **extra}
    return Running(job_id, Tier.LOW, "gpu0@h", **fields)  # type: ignore[arg-type]


def test_a_running_job_becomes_a_movable_tenant_with_its_expected_end_and_restart_cost():
    tenant = _tenant(_record(), _victim(), NOW)
    assert (tenant.need_mib, tenant.expected_end, tenant.move_cost_s, tenant.frozen) == (20_480, 1600.0, 4.0, False)


@pytest.mark.parametrize(
    ("record", "victim"),
    [
        (_record(kind="serve"), _victim(remaining_s=math.inf)),  # a replica drains requests: never moved
        (_record(gpus=2), _victim()),  # a gang member never moves alone
        (_record(), _victim(frozen=True)),
        (_record(), _victim(preempting=True)),  # already leaving
        (_record(), None),  # not judged this tick: left alone
    ],
)
def test_what_never_moves(record, victim):
    assert _tenant(record, victim, NOW).frozen


def test_a_moved_job_is_not_moved_again_within_the_hour():
    at = iso(datetime.fromtimestamp(NOW - 1800, UTC))
    event = Event(at=at, type="preempted", by="supervisor", moved_to="yoloq-device.h.0")
    moved = _record().model_copy(update={"preemptions": [event]})
    tenant = _tenant(moved, _victim(), NOW)
    assert tenant.pinned and not tenant.frozen  # not moved again; still requeued when the rules let it go
    assert not _tenant(moved, _victim(), NOW + MOVED_WITHIN_S).pinned
    requeued = _record().model_copy(update={"preemptions": [Event(at=at, type="preempted", by="supervisor")]})
    assert not _tenant(requeued, _victim(), NOW).pinned  # requeued: the budget decides, not this rule


def test_the_budget_is_spent_by_one_preemption_within_the_window():
    policy = Policy()
    assert not _spent(_victim(), NOW, policy)
    assert _spent(_victim(preempted_at=(NOW - 60,)), NOW, policy)
    assert not _spent(_victim(preempted_at=(NOW - policy.window_s - 1,)), NOW, policy)


def _claim(node: str = "gpu0@h", index: int = 0, shared: str = "1") -> dict[str, object]:
    return {"node": node, "host": "h", "gpu": {"index": index, "memory_mib": 81_920}, "shared": shared}


def test_a_shared_gpu_is_a_free_gpu_the_size_of_its_room_to_the_preemption_rules():
    on = {"gpu0@h": [_record("a", 20_480), _record("b", 20_480)]}  # 36 GiB of room: the 24g class's 22 GiB jobs
    assert as_gpu(_claim(), on, {}) == Gpu("gpu0@h", 22_528)  # what its worker consumes (a 40g job is not taken)
    small = {"gpu0@h": [_record("a", 76_000)]}  # 1824 MiB of room: no class that small
    assert as_gpu(_claim(), small, {}) is None
    full = {"gpu0@h": [_record(str(i), 20_480) for i in range(4)]}  # the tenant limit
    assert as_gpu(_claim(), full, {}) is None
    assert as_gpu(_claim(), on, {("h", 0): "big"}) is None  # held for a defragmentation or a gang


def test_a_whole_gpu_shows_its_job_and_only_its_gangs_leader_sees_it_held():
    on = {"gpu0@h": [_record("g")]}
    assert as_gpu(_claim(shared=""), on, {}) == Gpu("gpu0@h", 81_920, "g")
    assert as_gpu(_claim(shared=""), on, {("h", 0): "g"}) == Gpu("gpu0@h", 81_920, "g")
    assert as_gpu(_claim(shared=""), {}, {("h", 0): "g"}) is None


def test_a_move_given_back_at_its_destination_went_to_the_queue_after_all_and_spends_the_budget():
    move = Event(at="2026-12-06T00:00:05Z", type="preempted", by="supervisor", moved_to="yoloq-device.h.0")
    started = Event(at="2026-12-06T00:00:06Z", type="started")
    back = Event(at="2026-12-06T00:00:07Z", type="given-back")
    resumed = JobRecord.model_construct(preemptions=[move], events=[move, started, back])  # a later give-back
    failed = JobRecord.model_construct(preemptions=[move], events=[move, back, started])
    assert budget_preemptions(resumed) == [] and budget_preemptions(failed) == [move]
    assert budget_preemptions(JobRecord.model_construct(preemptions=[move], events=[move])) == []  # on its way


def test_a_move_spends_no_budget_and_is_labelled_apart():
    moved = Event(at="t", type="preempted", reason="defragmentation for x: moved to GPU 0 of h", by="supervisor",
                  moved_to="q.h.0")  # fmt: skip
    requeued = Event(at="t", type="preempted", reason="defragmentation for x: requeued back to its queue",
                     by="supervisor")  # fmt: skip
    record = JobRecord.model_construct(preemptions=[moved, requeued], events=[moved, requeued])
    assert budget_preemptions(record) == [requeued]
    assert preemption_reason("supervisor", moved.reason) == "defrag"
    assert preemption_reason("supervisor", requeued.reason) == "priority"  # a requeue is a preemption like any
    assert preemption_reason("supervisor", "priority: for x") == "priority"


def _on(job_id: str, node: str, state: JobState = JobState.RUNNING, asked: bool = False) -> JobRecord:
    attempt = Attempt(n=1, task_id="t", queue="q", created_at="2026-12-06T00:00:00Z", started_at="2026-12-06T00:00:01Z")
    events = [Event(at="2026-12-06T00:00:02Z", type="preempt-requested")] if asked else []
    return JobRecord.model_construct(job_id=job_id, worker=node, state=state, attempts=[attempt], events=events)


def test_a_displacement_moves_the_protected_job_only_once_the_requeued_one_has_left():
    moves = [["v", "h/1", ""], ["s", "h/0", "h/1"]]  # requeue v from GPU 1, then move s from GPU 0 into its place
    both = {"v": _on("v", "gpu1@h"), "s": _on("s", "gpu0@h")}
    assert due(moves, both) == (2, [("v", "")])  # s waits: GPU 1 still holds v
    assert due(moves, {"v": _on("v", "gpu1@h", JobState.PREEMPTING), "s": both["s"]}) == (2, [])  # v is leaving
    assert due(moves, {"s": both["s"]}) == (1, [("s", "h/1")])  # v left: now s
    assert due(moves, {"s": _on("s", "gpu0@h", asked=True)}) == (1, [])  # asked already (a new leader never asks twice)
    assert due(moves, {"s": _on("s", "gpu1@h")}) == (0, [])  # s runs on GPU 1: the plan is done
