"""Victim selection (routing/preemption.py): every rule and tie-break, table-driven, no broker."""

from __future__ import annotations

import pytest

from routing.preemption import (
    Gpu,
    Policy,
    Running,
    Snapshot,
    Waiting,
    _refusal,
    decide,
    is_urgent,
    reserved_gpus,
    restart_cost_s,
    victim_order,
)
from routing.sla import SlaTarget
from routing.tiers import Tier

pytestmark = pytest.mark.unit

C, H, M, L, B = Tier.CRITICAL, Tier.HIGH, Tier.MEDIUM, Tier.LOW, Tier.BATCH
NOW = 100_000.0


def _fleet(*jobs: str | None, mib: int = 40_960) -> tuple[Gpu, ...]:
    return tuple(Gpu(str(i), mib, job) for i, job in enumerate(jobs))


def _run(job_id: str, tier: Tier, gpu: int, **extra: object) -> Running:
    return Running(job_id, tier, str(gpu), **extra)  # type: ignore[arg-type]


def _wait(job_id: str, tier: Tier, need: int = 4096, at: float = NOW - 10) -> Waiting:
    return Waiting(job_id, tier, need, at)


def _victims(snap: Snapshot) -> list[tuple[str, str]]:
    return [(p.victim, p.for_job) for p in decide(snap).preemptions]


@pytest.mark.parametrize(
    ("fleet", "running", "waiting", "expected"),
    [
        # a free GPU that fits: no preemption
        (_fleet("a", None), [_run("a", L, 0)], [_wait("w", C)], []),
        # a free GPU too small for the job: preempt the low job on the big one
        ((Gpu("0", 40_960, "a"), Gpu("1", 15_360, None)), [_run("a", L, 0)], [_wait("w", C, need=20_000)],
         [("a", "w")]),
        # only strictly lower tiers are victims
        (_fleet("a"), [_run("a", C, 0)], [_wait("w", C)], []),
        (_fleet("a"), [_run("a", H, 0)], [_wait("w", H)], []),
        (_fleet("a"), [_run("a", M, 0)], [_wait("w", H)], [("a", "w")]),
        # lowest tier first
        (_fleet("a", "b", "c"), [_run("a", M, 0), _run("b", B, 1), _run("c", L, 2)], [_wait("w", C)], [("b", "w")]),
        # the victim's GPU must fit the waiting job
        ((Gpu("0", 15_360, "a"), Gpu("1", 40_960, "b")), [_run("a", B, 0), _run("b", L, 1)],
         [_wait("w", C, need=20_000)], [("b", "w")]),
        # one victim per waiting job; never more than the waiting work needs
        (_fleet("a", "b", "c"), [_run("a", L, 0), _run("b", L, 1), _run("c", L, 2)], [_wait("w", C)], [("a", "w")]),
        (_fleet("a", "b", "c"), [_run("a", L, 0), _run("b", L, 1), _run("c", L, 2)],
         [_wait("w1", C, at=1), _wait("w2", H, at=0)], [("a", "w1"), ("b", "w2")]),
        # frozen jobs and jobs already being preempted are never victims; a preempting job's GPU is used instead
        (_fleet("a", "b"), [_run("a", L, 0, frozen=True), _run("b", M, 1)], [_wait("w", C)], [("b", "w")]),
        (_fleet("a", "b"), [_run("a", L, 0, preempting=True), _run("b", L, 1)], [_wait("w", C)], []),
        (_fleet("a", "b"), [_run("a", L, 0, preempting=True), _run("b", L, 1)],
         [_wait("w1", C), _wait("w2", C, at=NOW - 5)], [("b", "w2")]),
        # no waiting work, no preemption
        (_fleet("a"), [_run("a", B, 0)], [], []),
    ],
)  # fmt: skip
def test_victim_selection(fleet, running, waiting, expected):
    snap = Snapshot(NOW, fleet, tuple(waiting), tuple(running), Policy(reserved_share=0))
    assert _victims(snap) == expected


@pytest.mark.parametrize(
    ("a", "b", "first"),
    [
        (dict(tier=L), dict(tier=B), "b"),  # lowest tier first
        (dict(since_checkpoint_s=5), dict(since_checkpoint_s=50), "a"),  # least work lost
        (dict(restart_cost_s=9), dict(restart_cost_s=3), "b"),  # cheapest restart
        (dict(remaining_s=100), dict(remaining_s=900), "b"),  # most remaining time
        (dict(), dict(), "a"),  # job id breaks the tie
        (dict(tier=B, since_checkpoint_s=999), dict(tier=L, since_checkpoint_s=0), "a"),  # tier beats work lost
        (dict(since_checkpoint_s=1, restart_cost_s=99), dict(since_checkpoint_s=2), "a"),  # work lost beats cost
        (dict(restart_cost_s=1, remaining_s=0), dict(restart_cost_s=2, remaining_s=999), "a"),  # cost beats remaining
    ],
)
def test_victim_order_tie_breaks(a, b, first):
    ja = Running("a", a.pop("tier", L), "0", **a)
    jb = Running("b", b.pop("tier", L), "1", **b)
    assert min([ja, jb], key=victim_order).job_id == first
    snap = Snapshot(NOW, _fleet("a", "b"), (_wait("w", C),), (ja, jb), Policy(reserved_share=0))
    assert _victims(snap) == [(first, "w")]


@pytest.mark.parametrize(
    ("preempted_at", "urgent", "expected"),
    [
        ((), False, [("a", "w")]),
        ((NOW - 3600,), False, []),  # once within 24 h: protected
        ((NOW - 25 * 3600,), False, [("a", "w")]),  # outside the window
        ((NOW - 3600,), True, [("a", "w")]),  # SLA urgency overrides the budget
    ],
)
def test_budget_and_sla_urgency(preempted_at, urgent, expected):
    waited = 29 * 60 if urgent else 60  # critical target 30 min; urgent at 80 % = 24 min
    snap = Snapshot(NOW, _fleet("a"), (_wait("w", C, at=NOW - waited),), (_run("a", L, 0, preempted_at=preempted_at),),
                    Policy(reserved_share=0))  # fmt: skip
    decision = decide(snap)
    assert [(p.victim, p.for_job) for p in decision.preemptions] == expected
    if not expected:
        assert "preemption budget used (1 in 24 h)" in dict(decision.notes)["w"]
    if urgent:
        assert "SLA-urgent" in decision.preemptions[0].reason


def test_budget_of_two_allows_a_second_preemption():
    snap = Snapshot(NOW, _fleet("a"), (_wait("w", C),), (_run("a", L, 0, preempted_at=(NOW - 60,)),),
                    Policy(max_preemptions=2, reserved_share=0))  # fmt: skip
    assert _victims(snap) == [("a", "w")]


@pytest.mark.parametrize(
    ("fleet", "share", "expected"),
    [
        (0, 0.1, 0),
        (1, 0.1, 0),
        (3, 0.1, 0),
        (4, 0.1, 1),
        (10, 0.1, 1),
        (11, 0.1, 1),
        (20, 0.1, 2),
        (20, 0.25, 5),
        (8, 0.0, 0),
    ],
)
def test_reserved_gpus(fleet, share, expected):
    assert reserved_gpus(fleet, share) == expected


def test_reserved_share_holds_under_a_flood_of_high_tier_work():
    # Given 4 GPUs all running low jobs (reserve = 1 GPU) and 10 high jobs waiting
    fleet = _fleet("a", "b", "c", "d")
    running = tuple(_run(j, L, i) for i, j in enumerate("abcd"))
    waiting = tuple(_wait(f"w{i}", H, at=NOW - 100 + i) for i in range(10))
    decision = decide(Snapshot(NOW, fleet, waiting, running))
    # Then three are preempted and one GPU keeps its low job
    assert len(decision.preemptions) == 3
    assert sum("reserved share" in why for _, why in decision.notes) == 7


def test_low_job_may_preempt_batch_even_at_the_reserve():
    fleet = _fleet("a", "b", "c", "d")
    running = (_run("a", B, 0), _run("b", H, 1), _run("c", H, 2), _run("d", H, 3))
    assert _victims(Snapshot(NOW, fleet, (_wait("w", L),), running)) == [("a", "w")]
    assert _victims(Snapshot(NOW, fleet, (_wait("w", M),), running)) == []


def test_notes_say_why_nothing_happened():
    fleet = (Gpu("0", 15_360, "a"), Gpu("1", 40_960, "c"))
    snap = Snapshot(NOW, fleet, (_wait("w", C, need=20_000),), (_run("a", L, 0), _run("c", C, 1)),
                    Policy(reserved_share=0))  # fmt: skip
    assert decide(snap).notes == (("w", "no lower-tier job runs on a GPU that fits it"),)
    frozen = Snapshot(NOW, _fleet("a"), (_wait("w", C),), (_run("a", L, 0, frozen=True),), Policy(reserved_share=0))
    assert decide(frozen).notes == (("w", "every candidate is protected: frozen"),)


def test_reason_names_both_jobs_and_the_gpu():
    snap = Snapshot(NOW, _fleet("a"), (_wait("w", C),), (_run("a", L, 0),), Policy(reserved_share=0))
    (p,) = decide(snap).preemptions
    assert p.gpu_id == "0"
    assert p.reason == "critical job w needs 4096 MiB and no free GPU fits; low job a on GPU 0 is first in victim order"


@pytest.mark.parametrize(("waited", "urgent"), [(0, False), (23 * 60, False), (24 * 60, True), (3600, True)])
def test_is_urgent_at_80_percent_of_the_target(waited, urgent):
    assert is_urgent(_wait("w", C, at=NOW - waited), NOW, Policy()) is urgent


def test_tier_without_a_target_is_never_urgent():
    policy = Policy(targets={C: SlaTarget(0.95, 60)})
    assert is_urgent(_wait("w", B, at=0), NOW, policy) is False


def test_a_smaller_later_job_is_not_refused_by_an_earlier_failure():
    fleet = (Gpu("0", 40_960, "a"), Gpu("1", 81_920, "c"))
    waiting = (_wait("big", H, need=60_000, at=1), _wait("small", H, need=4096, at=2))
    running = (_run("a", L, 0), _run("c", C, 1))
    decision = decide(Snapshot(NOW, fleet, waiting, running, Policy(reserved_share=0)))
    assert [(p.victim, p.for_job) for p in decision.preemptions] == [("a", "small")]
    assert dict(decision.notes)["big"] == "no lower-tier job runs on a GPU that fits it"


def test_a_job_no_gpu_can_hold_gets_its_own_reason_not_a_smaller_jobs():
    # Given a 40 GB fleet whose only low job has used its preemption budget, and two waiting high jobs:
    # one that fits (and is refused for the budget), then one that no GPU of the fleet can hold
    fleet = (Gpu("0", 40_960, "a"),)
    waiting = (_wait("small", H, need=4096, at=NOW - 20), _wait("huge", H, need=102_400, at=NOW - 10))
    running = (_run("a", L, 0, preempted_at=(NOW - 60,)),)
    notes = dict(decide(Snapshot(NOW, fleet, waiting, running, Policy(reserved_share=0))).notes)
    # Then the small one is told about the budget and the huge one why it can never start here
    assert notes["small"].startswith("every candidate is protected: preemption budget used")
    assert (
        notes["huge"]
        == "no live GPU can hold it: needs 102400 MiB of GPU memory; the largest GPU running now has 40960 MiB"
    )


def test_a_job_too_big_for_a_free_gpu_is_not_placed_on_it():
    notes = dict(decide(Snapshot(NOW, (Gpu("0", 15_360),), (_wait("w", M, need=20_000),), ())).notes)
    assert notes == {
        "w": "no live GPU can hold it: needs 20000 MiB of GPU memory; the largest GPU running now has 15360 MiB"
    }


def test_buckets_of_other_sizes_are_searched_when_one_holds_no_lower_tier():
    fleet = (Gpu("0", 40_960, "c"), Gpu("1", 81_920, "l"))
    running = (_run("c", C, 0), _run("l", L, 1))
    assert _victims(Snapshot(NOW, fleet, (_wait("w", H, need=30_000),), running, Policy(reserved_share=0))) == [
        ("l", "w")
    ]


def test_second_job_waits_behind_a_victim_already_yielding():
    running = (_run("a", L, 0, preempting=True),)
    waiting = (_wait("w1", C, at=1), _wait("w2", C, at=2))
    decision = decide(Snapshot(NOW, _fleet("a"), waiting, running, Policy(reserved_share=0)))
    assert decision.preemptions == ()
    assert decision.notes == (
        ("w1", "fits free GPU 0"),
        ("w2", "every candidate is protected: already being preempted"),
    )


def test_refusal_is_none_for_an_eligible_victim():
    snap = Snapshot(NOW, _fleet("a"), (), (), Policy(reserved_share=0))
    assert _refusal(_run("a", L, 0), _wait("w", C), snap, urgent=False, low_running=1) is None


def test_the_unexamined_tail_of_a_long_queue_gets_one_note():
    waiting = tuple(_wait(f"w{i}", B, at=i) for i in range(5))
    decision = decide(Snapshot(NOW, _fleet("a"), waiting, (_run("a", C, 0),), Policy(reserved_share=0)))
    assert decision.notes == (("*", "5 more waiting jobs not examined: no free GPU and no lower-tier job left"),)


@pytest.mark.parametrize(
    ("size", "publish_s", "expected"),
    [(0, 0.0, 0.0), (200_000_000, 0.5, 1.5), (30_000_000, 0.44, 0.59), (-5, -1.0, 0.0)],
    ids=["probe (no file)", "200 MB", "yolov8n 30 MB", "garbage clamps to 0"],
)
def test_restart_cost_is_publishing_again_plus_fetching(size: int, publish_s: float, expected: float) -> None:
    assert restart_cost_s(size, publish_s) == pytest.approx(expected)


def test_a_bigger_checkpoint_yields_later_when_work_lost_ties() -> None:
    big = _run("a", L, 0, since_checkpoint_s=10.0, restart_cost_s=restart_cost_s(500_000_000, 2.0))
    small = _run("b", L, 1, since_checkpoint_s=10.0, restart_cost_s=restart_cost_s(30_000_000, 0.4))
    snap = Snapshot(NOW, _fleet("a", "b"), (_wait("w", C),), (big, small))
    assert _victims(snap) == [("b", "w")]
