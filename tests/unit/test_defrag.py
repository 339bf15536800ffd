"""When to defragment shared GPUs and for whom (routing/defrag.py): the head, who may be evicted, the cost gate."""

from __future__ import annotations

import pytest

from routing.defrag import blocked, choose, evictable, order
from routing.preemption import Policy, Waiting
from routing.sharing import Defrag, Device, Move, SharePolicy, Tenant
from routing.tiers import Tier

pytestmark = pytest.mark.unit

C, H, M, L = Tier.CRITICAL, Tier.HIGH, Tier.MEDIUM, Tier.LOW
GIB = 1024
NOW = 10_000.0
P = SharePolicy()


def _t(job_id: str, gib: int, tier: Tier = L, cost: float = 30.0, **extra: object) -> Tenant:
    return Tenant(job_id, tier, gib * GIB, NOW + 600, move_cost_s=cost, **extra)  # type: ignore[arg-type]


def _d(gpu: str, gib: int, *tenants: Tenant, shared: bool = True) -> Device:
    return Device(gpu, gib * GIB, "h0", shared, tenants)


def _w(job_id: str, gib: int, tier: Tier = M, waited_s: float = 60.0) -> Waiting:
    return Waiting(job_id, tier, gib * GIB, NOW - waited_s)


def _scattered(cost: float = 30.0) -> tuple[Device, ...]:
    """Two 80 GB shared cards with 26 and 51 GB of room: 55 GB fits neither, but would after one move."""
    return (_d("g0", 80, _t("a", 25, cost=cost), _t("b", 25, cost=cost)), _d("g1", 80, _t("c", 25, cost=cost)))


def test_order_is_tier_then_age_then_id():
    jobs = (_w("z", 1, M, 10), _w("y", 1, H, 5), _w("x", 1, M, 10), _w("w", 1, M, 99))
    assert [j.job_id for j in order(jobs)] == ["y", "w", "x", "z"]


def test_blocked_jobs_are_those_a_shared_gpu_could_hold_but_no_gpu_takes_now():
    devices = (*_scattered(), _d("big", 141, _t("x", 100), shared=False))  # a busy 141 GB whole card
    waiting = (_w("fits", 20, H), _w("huge", 100, H), _w("blocked", 55, M), _w("later", 60, L))
    # 'huge' waits for the whole 141 GB card: no shared GPU could hold it, so moving jobs cannot help it
    assert [w.job_id for w in blocked(waiting, devices, P)] == ["blocked", "later"]
    assert blocked((_w("fits", 20),), devices, P) == []
    assert blocked((_w("any", 1),), (_d("whole", 80, shared=False),), P) == []  # no shared GPU at all


def test_a_blocked_job_no_plan_helps_does_not_stop_the_ones_behind_it():
    # Given medium tenants whose budgets are used (moves only), dear to move on the 80 GB cards, cheap on a 60 GB one
    fleet = (_d("g0", 80, _t("a", 25, M, cost=400), _t("b", 25, M, cost=400)), _d("g1", 80, _t("c", 25, M, cost=1000)),
             _d("g2", 60, _t("d", 10, M, cost=30)))  # fmt: skip
    spent = frozenset("abcd")
    stuck, alike = _w("stuck", 79, H, waited_s=90), _w("alike", 79, H, waited_s=80)  # only an 80 GB card holds 79
    behind = _w("behind", 55, M)
    # When a high 79 GB job's every plan costs more than its wait, it is told why (and a job just like it is not
    # planned again)
    answer = choose((stuck, alike), fleet, NOW, spent=spent)
    assert answer == "stuck: moving costs 800 s, not less than its expected wait 600 s"
    # Then the medium 55 GB job behind it still gets the 60 GB card cleared by one cheap move
    answer = choose((stuck, alike, behind), fleet, NOW, spent=spent)
    assert isinstance(answer, Defrag) and answer.for_job == "behind", answer
    assert answer.moves == (Move("d", "g2", "g0", 30.0),)


def test_a_pinned_tenant_is_never_moved_only_requeued_when_evictable():
    pinned = (_d("g0", 80, _t("a", 25, frozen=True), _t("b", 25, frozen=True)), _d("g1", 80, _t("c", 25, pinned=True)))
    # The low tenant moved lately is not moved again; a medium job may still requeue it (the rules let it go) ...
    answer = choose((_w("big", 55, M),), pinned, NOW)
    assert isinstance(answer, Defrag) and answer.moves == (Move("c", "g1", "", 30.0),), answer
    # ... but a low job may not (same tier: not evictable) and gets no plan
    assert isinstance(choose((_w("big", 55, L),), pinned, NOW), str)


def test_moves_run_when_they_cost_less_than_the_heads_wait():
    answer = choose((_w("big", 55),), _scattered(cost=30.0), NOW)
    assert isinstance(answer, Defrag)
    assert answer.gpu_id == "g1" and answer.moves == (Move("c", "g1", "g0", 30.0),)


def test_moves_that_cost_more_than_waiting_do_not_run():
    answer = choose((_w("big", 55),), _scattered(cost=700.0), NOW)  # tenants end in 600 s
    assert answer == "big: moving costs 700 s, not less than its expected wait 600 s"


def test_the_heads_reservation_sets_its_wait_and_another_jobs_does_not():
    devices = _scattered(cost=700.0)
    assert isinstance(choose((_w("big", 55),), devices, NOW, reservation=("big", NOW + 800)), Defrag)
    assert isinstance(choose((_w("big", 55),), devices, NOW, reservation=("other", NOW + 800)), str)


def test_nobody_blocked_gives_a_reason():
    answer = choose((_w("small", 10),), _scattered(), NOW)
    assert answer.startswith("no waiting job is blocked")  # type: ignore[union-attr]


def _packed() -> tuple[Device, ...]:
    """Two 80 GB cards each holding one 40 GB low job: a 60 GB job fits neither and no tenant fits elsewhere."""
    return _d("g0", 80, _t("a", 40, cost=5.0)), _d("g1", 80, _t("b", 40, cost=9.0))


def test_a_requeue_the_rules_allow_runs_whatever_it_costs():
    answer = choose((_w("big", 60, H),), _packed(), NOW)
    assert isinstance(answer, Defrag)
    assert answer.moves == (Move("a", "g0", "", 5.0),)


def test_spent_budgets_protect_tenants_unless_the_head_is_urgent():
    spent = frozenset({"a", "b"})
    assert choose((_w("big", 60, C),), _packed(), NOW, spent=spent).startswith("no set of movable")  # type: ignore[union-attr]
    urgent = _w("big", 60, C, waited_s=0.8 * 1800)
    answer = choose((urgent,), _packed(), NOW, spent=spent)
    assert isinstance(answer, Defrag) and answer.moves == (Move("a", "g0", "", 5.0),)


@pytest.mark.parametrize(
    ("tenant", "expected"),
    [
        (_t("low", 10, L), {"low"}),
        (_t("same", 10, M), set()),  # the same tier is moved, never requeued
        (_t("frozen", 10, L, frozen=True), set()),
        (_t("spent", 10, L), set()),
    ],
)
def test_evictable_means_strictly_lower_not_frozen_budget_left(tenant, expected):
    devices = (_d("g0", 80, tenant),)
    assert evictable(_w("head", 70, M), devices, frozenset({"spent"}), NOW, Policy()) == expected


def _displacing() -> tuple[Device, ...]:
    """g0 80 GB holds a low job with no budget left; g1 40 GB holds an evictable 20 GB low job."""
    return _d("g0", 80, _t("a", 40)), _d("g1", 40, _t("b", 20))


def test_a_critical_head_moves_a_spent_tenant_into_an_evictable_ones_place():
    answer = choose((_w("big", 60, C),), _displacing(), NOW, spent=frozenset({"a"}))
    assert isinstance(answer, Defrag)
    assert answer.gpu_id == "g0" and answer.moves == (Move("b", "g1", "", 30.0), Move("a", "g0", "g1", 30.0))


def test_a_high_head_does_not_displace():
    answer = choose((_w("big", 60, H),), _displacing(), NOW, spent=frozenset({"a"}))
    assert isinstance(answer, str) and answer.startswith("no set of movable")
