"""GPU sharing and defragmentation (routing/sharing.py): the memory model, best fit, ready times and move plans."""

from __future__ import annotations

import pytest

from routing.memory import CUDA_CONTEXT_MIB, placement_mib
from routing.sharing import (
    Defrag,
    Device,
    SharePolicy,
    Tenant,
    defragment,
    fits,
    margin_mib,
    pick,
    ready_at,
    room_for,
    room_mib,
    spread_moves,
)
from routing.tiers import Tier

pytestmark = pytest.mark.unit

C, H, M, L, B = Tier.CRITICAL, Tier.HIGH, Tier.MEDIUM, Tier.LOW, Tier.BATCH
GIB = 1024
P = SharePolicy()
NOW = 1000.0


def _t(job_id: str, gib: int, tier: Tier = L, end: float = NOW + 600, **extra: object) -> Tenant:
    return Tenant(job_id, tier, gib * GIB, end, **extra)  # type: ignore[arg-type]


def _d(gpu: str, gib: int, *tenants: Tenant, shared: bool = True) -> Device:
    return Device(gpu, gib * GIB, "h0", shared, tenants)


def test_margin_is_five_percent_or_one_gib():
    assert margin_mib(80 * GIB, P) == 4096
    assert margin_mib(16 * GIB, P) == 1024


def test_the_cuda_context_is_counted_once_per_job():
    # Given two jobs whose torch peaks are 38 GiB each on an 80 GiB card
    peak = 38 * GIB
    need = placement_mib(peak)
    assert need == peak + CUDA_CONTEXT_MIB
    # When the first runs, the second's need (its own context included) plus the margin must still fit
    card = Device("g", 80 * GIB, shared=True, tenants=(Tenant("a", L, need, NOW + 60),))
    assert room_mib(card, P) == 80 * GIB - need - 4096
    assert fits(card, need, P) == (2 * need + 4096 <= 80 * GIB)


@pytest.mark.parametrize(
    ("device", "need_gib", "expected"),
    [
        (_d("g", 40), 40, True),  # alone: the whole-GPU rule, no margin
        (_d("g", 40), 41, False),
        (_d("g", 80, _t("a", 40)), 36, True),  # 40 + 36 + 4 (margin) = 80
        (_d("g", 80, _t("a", 40)), 37, False),
        (_d("g", 80, _t("a", 8), shared=False), 8, False),  # not shared: one job only
        (_d("g", 80, _t("a", 8), _t("b", 8), _t("c", 8), _t("d", 8)), 8, False),  # max_tenants
        (_d("g", 80, _t("a", 70), _t("b", 8)), 1, False),  # over-full: no room, never negative
        (_d("g", 80), 0, False),  # a zero need is not a job
    ],
)  # fmt: skip
def test_fits(device, need_gib, expected):
    assert fits(device, need_gib * GIB, P) is expected


@pytest.mark.parametrize(
    ("devices", "need_gib", "expected"),
    [
        # best fit: the shared card with 20 GiB room left beats the idle 40 GiB card
        ((_d("a", 40), _d("b", 80, _t("x", 56))), 16, "b"),
        # the idle small card beats a fresh big shared one
        ((_d("a", 80), _d("b", 40)), 16, "b"),
        # ties: GPU id
        ((_d("b", 40), _d("a", 40)), 16, "a"),
        # nothing fits
        ((_d("a", 40, _t("x", 30)), _d("b", 80, _t("y", 70))), 16, None),
    ],
)  # fmt: skip
def test_pick_is_best_fit(devices, need_gib, expected):
    spot = pick(devices, need_gib * GIB, P)
    assert (spot.gpu_id if spot else None) == expected


@pytest.mark.parametrize(
    ("device", "need_gib", "expected"),
    [
        (_d("g", 80), 70, NOW),  # idle: now
        (_d("g", 40), 70, None),  # never: too small
        (_d("g", 80, _t("a", 8, end=NOW + 100), _t("b", 30, end=NOW + 50)), 38, NOW),  # room now: 8 + 30 + 38 + 4
        # the 30 GiB job leaves first and then 8 + 60 + 4 fits
        (_d("g", 80, _t("a", 8, end=NOW + 100), _t("b", 30, end=NOW + 50)), 60, NOW + 50),
        # 70 GiB needs both gone (8 + 70 + margin > 80)
        (_d("g", 80, _t("a", 8, end=NOW + 100), _t("b", 30, end=NOW + 50)), 70, NOW + 100),
        # a loan counts as free at once; an overdue job as leaving now
        (_d("g", 80, _t("a", 40, end=NOW + 900, loan_until=NOW + 900)), 70, NOW),
        (_d("g", 80, _t("a", 40, end=NOW - 5), shared=False), 70, NOW),
        # not shared: the last job's end
        (_d("g", 80, _t("a", 8, end=NOW + 70), shared=False), 8, NOW + 70),
    ],
)  # fmt: skip
def test_ready_at(device, need_gib, expected):
    assert ready_at(device, need_gib * GIB, NOW, P) == expected


def _plan(devices, need_gib, tier=H):
    return defragment("big", tier, need_gib * GIB, devices, P)


def test_defrag_moves_the_cheapest_jobs_so_one_gpu_takes_the_big_one():
    # Given two 80 GiB shared cards each half full of small jobs: 46 GiB free on each, 92 in all
    a = _d("a", 80, _t("a1", 16, move_cost_s=30), _t("a2", 16, move_cost_s=5))
    b = _d("b", 80, _t("b1", 16, move_cost_s=10), _t("b2", 16, move_cost_s=10))
    # When a 60 GiB job fits neither
    plan = _plan((a, b), 60)
    # Then one move is enough (16 + 60 + 4 = 80 fits), and a2 is the cheapest job to move
    assert isinstance(plan, Defrag)
    assert [(m.job_id, m.from_gpu, m.to_gpu) for m in plan.moves] == [("a2", "a", "b")]
    assert plan.gpu_id == "a" and plan.cost_s == 5
    assert "a2 → b" in plan.reason and "checkpoint cost 5 s" in plan.reason


def test_defrag_frees_a_whole_gpu_when_nothing_may_stay():
    # Given a 70 GiB job and two cards holding 8 GiB jobs: only an empty card takes it
    a = _d("a", 80, _t("a1", 8, move_cost_s=3), _t("a2", 8, move_cost_s=4))
    b = _d("b", 80, _t("b1", 8, move_cost_s=1))
    plan = _plan((a, b), 70)
    assert isinstance(plan, Defrag)
    assert plan.gpu_id == "b" and [m.job_id for m in plan.moves] == ["b1"] and plan.moves[0].to_gpu == "a"


def test_defrag_moves_the_largest_first_into_the_remaining_room():
    # Given room elsewhere for a 30 GiB and an 8 GiB job together on c, and 8 GiB of room on d
    a = _d("a", 80, _t("a1", 30), _t("a2", 8))
    c = _d("c", 48, _t("c1", 1))  # 48 - 1 - 2.4 (margin): 44.6 GiB of room
    d = _d("d", 16, _t("d1", 6))  # 16 - 6 - 1: 9 GiB of room
    plan = _plan((a, c, d), 70)
    # Then the 30 GiB job is placed first (on c), the 8 GiB job by best fit (on d)
    assert isinstance(plan, Defrag)
    assert [(m.job_id, m.to_gpu) for m in plan.moves] == [("a1", "c"), ("a2", "d")]


@pytest.mark.parametrize(
    ("devices", "need_gib", "tier", "reason"),
    [
        ((_d("a", 80),), 70, H, "fits GPU a now"),
        ((_d("a", 40, _t("x", 8)),), 70, H, "no shared GPU of 71680 MiB or more"),
        ((_d("a", 80, _t("x", 8), shared=False), _d("b", 80, _t("y", 8), shared=False)), 70, H, "no shared GPU"),
        # the room exists but the only movable job has nowhere to go
        ((_d("a", 80, _t("x", 40)), _d("b", 40, _t("y", 36))), 70, H, "no set of movable jobs"),
        # never a job of a higher tier than the big job, never a frozen one
        ((_d("a", 80, _t("x", 8, tier=C)), _d("b", 80, _t("y", 8, frozen=True))), 70, H, "no set of movable jobs"),
    ],
)  # fmt: skip
def test_no_defrag(devices, need_gib, tier, reason):
    answer = _plan(devices, need_gib, tier)
    assert isinstance(answer, str) and reason in answer


def test_defrag_may_move_same_and_lower_tiers():
    a = _d("a", 80, _t("x", 8, tier=H))
    b = _d("b", 80, _t("y", 8, tier=H))
    plan = _plan((a, b), 70, H)
    assert isinstance(plan, Defrag) and plan.moves[0].job_id == "x"  # equal cost: GPU id


def test_a_packed_card_is_cleared_for_urgent_work_by_requeueing_the_evictable():
    # Given two cards packed with low jobs and no room anywhere for them to move
    a = _d("a", 80, _t("a1", 30, move_cost_s=2), _t("a2", 30, move_cost_s=2))
    b = _d("b", 80, _t("b1", 30, move_cost_s=1), _t("b2", 30, move_cost_s=1), _t("b3", 8, move_cost_s=5))
    assert isinstance(_plan((a, b), 70, C), str)  # without evictions: nothing can move
    # When the preemption rules allow a1, a2, b1, b2 and b3 to go
    plan = defragment("big", C, 70 * GIB, (a, b), P, evictable=frozenset({"a1", "a2", "b1", "b2", "b3"}))
    # Then both cards need 2 requeues (b3 could move to a), and a is the cheaper: 2 + 2 s against 1 + 1 + 5 s
    assert isinstance(plan, Defrag) and plan.gpu_id == "a"
    assert [(m.job_id, m.to_gpu) for m in plan.moves] == [("a1", ""), ("a2", "")]
    assert "a1 → queue (preempted)" in plan.reason


def test_moves_are_preferred_to_requeues():
    # Given b's small job can move to c (dear), while clearing a would requeue its big job (cheap)
    a = _d("a", 80, _t("a1", 60, move_cost_s=1))
    b = _d("b", 80, _t("b1", 20, move_cost_s=50))
    c = _d("c", 40, _t("c1", 16))  # 22 GiB of room
    plan = defragment("big", C, 70 * GIB, (a, b, c), P, evictable=frozenset({"a1", "b1"}))
    assert isinstance(plan, Defrag) and [(m.job_id, m.to_gpu) for m in plan.moves] == [("b1", "c")]


def test_pick_spreading_prefers_an_idle_device():
    # Given a shared card with room for 50 GiB and an idle card: best fit packs, spreading takes the idle one
    devices = (_d("a", 80, _t("x", 8)), _d("b", 80))
    assert pick(devices, 50 * GIB, P).gpu_id == "a"
    assert pick(devices, 50 * GIB, P, spread=True).gpu_id == "b"
    assert pick(devices[:1], 50 * GIB, P, spread=True).gpu_id == "a"  # no idle card: it still packs


# A card to clear for a 70 GiB critical job: p has used its budget (not evictable), e may be requeued.
TARGET = _d("a", 80, _t("p", 30, move_cost_s=1), _t("e", 30, move_cost_s=1))
# Elsewhere, a full card whose low and batch tenants may be requeued (b3 is frozen), and a card of high work.
FULL = _d("b", 80, _t("b1", 30, tier=B, move_cost_s=9), _t("b2", 30, move_cost_s=1), _t("b3", 14, frozen=True))
HIGH = _d("c", 80, _t("c1", 70, tier=H))


def test_without_displacement_a_protected_tenant_with_nowhere_to_go_blocks_the_card():
    answer = defragment("big", C, 70 * GIB, (TARGET, FULL, HIGH), P, evictable=frozenset({"e", "b1", "b2"}))
    assert isinstance(answer, str) and "no set of movable jobs" in answer


def test_a_protected_tenant_takes_the_place_of_an_evictable_one_which_is_requeued_instead():
    # When critical work may displace
    plan = defragment("big", C, 70 * GIB, (TARGET, FULL, HIGH), P, evictable=frozenset({"e", "b1", "b2"}),
                      displace=True)  # fmt: skip
    # Then e is requeued, and p moves into b1's place (batch: lowest tier first, though dearer than b2)
    assert isinstance(plan, Defrag) and plan.gpu_id == "a"
    assert [(m.job_id, m.from_gpu, m.to_gpu) for m in plan.moves] == [("e", "a", ""), ("b1", "b", ""), ("p", "a", "b")]
    assert plan.cost_s == 11  # two requeues, one move: nobody is preempted twice


def test_displacement_needs_an_evictable_tenant_whose_place_fits():
    small = _d("b", 80, _t("b1", 8, tier=B), _t("b2", 30, tier=H), _t("b3", 30, tier=H))  # 8 GiB freed: < 30
    answer = defragment("big", C, 70 * GIB, (TARGET, small), P, evictable=frozenset({"e", "b1"}), displace=True)
    assert isinstance(answer, str) and "no set of movable jobs" in answer


LATE = NOW + 4 * 3600


@pytest.mark.parametrize(
    ("devices", "keep_idle", "moves"),
    [
        # the co-tenant expected to run longest goes to the idle whole card
        ((_d("s", 80, _t("x", 8, end=NOW + 3600, move_cost_s=60), _t("y", 16, end=LATE, move_cost_s=60)),
          _d("w", 40, shared=False)), frozenset(), [("y", "s", "w")]),
        # an idle shared card is kept whole (for a big job or a gang), and a reservation's card too
        ((_d("s", 80, _t("x", 8, end=LATE), _t("y", 8, end=LATE)), _d("t", 80)), frozenset(), []),
        ((_d("s", 80, _t("x", 8, end=LATE), _t("y", 8, end=LATE)), _d("w", 40, shared=False)), frozenset({"w"}), []),
        # a lone tenant gains nothing; a frozen one, one too big, or one ending too soon to pay its move stays
        ((_d("s", 80, _t("x", 8, end=LATE)), _d("w", 40, shared=False)), frozenset(), []),
        ((_d("s", 80, _t("x", 8, end=LATE, frozen=True), _t("y", 60, end=LATE),
             _t("z", 4, end=NOW + 300, move_cost_s=60)), _d("w", 40, shared=False)), frozenset(), []),
        # two idle cards, one candidate: one move per job; the smallest idle card is served first
        ((_d("s", 80, _t("x", 8, end=LATE, frozen=True), _t("y", 8, end=LATE)), _d("w2", 40, shared=False),
          _d("w1", 24, shared=False)), frozenset(), [("y", "s", "w1")]),
    ],
)  # fmt: skip
def test_spread_moves(devices, keep_idle, moves):
    got = spread_moves(devices, NOW, P, keep_idle=keep_idle)
    assert [(m.job_id, m.from_gpu, m.to_gpu) for m in got] == moves


def test_room_from_needs_alone_is_the_devices_room():
    card = _d("g", 80, _t("a", 20), _t("b", 20))
    assert room_for(80 * GIB, [20 * GIB, 20 * GIB], P) == room_mib(card, P) == 80 * GIB - 40 * GIB - 4096
    assert room_for(80 * GIB, [], P) == 80 * GIB  # alone: the whole card, no margin
