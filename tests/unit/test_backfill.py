"""Backfill with a reservation (routing/backfill.py): the head keeps its start time, idle GPUs still work."""

from __future__ import annotations

import pytest

from routing.backfill import BackfillPolicy, Job, order, plan, room_for_all
from routing.sharing import Device, Tenant
from routing.tiers import Tier

pytestmark = pytest.mark.unit

C, H, M, L, B = Tier.CRITICAL, Tier.HIGH, Tier.MEDIUM, Tier.LOW, Tier.BATCH
GIB = 1024
NOW = 10_000.0
ON = BackfillPolicy()
NO_LOANS = BackfillPolicy(loans=False)
GREEDY = BackfillPolicy(reserve=False)


def _job(job_id: str, tier: Tier, gib: int, hours: float = 1.0, at: float = 0.0, **extra: object) -> Job:
    return Job(job_id, tier, gib * GIB, at, hours * 3600, **extra)  # type: ignore[arg-type]


def _busy(gpu: str, gib: int, job: str, ends_in_h: float, host: str = "h0", **extra: object) -> Device:
    tenant = Tenant(job, L, 8 * GIB, NOW + ends_in_h * 3600, **extra)  # type: ignore[arg-type]
    return Device(gpu, gib * GIB, host, tenants=(tenant,))


def _idle(gpu: str, gib: int, host: str = "h0", shared: bool = False) -> Device:
    return Device(gpu, gib * GIB, host, shared)


def _starts(p):
    return [(s.job_id, s.gpu_ids, s.loan_until is not None) for s in p.starts]


# A fleet where the 80 GiB card frees in 2 h and a 40 GiB card is idle: a 70 GiB high job is the head.
FLEET = (_busy("big", 80, "r", 2), _idle("small", 40))


@pytest.mark.parametrize(
    ("devices", "jobs", "policy", "starts", "reserved"),
    [
        # the head fits nothing: reserved on the card that frees first; a short low job takes the idle small card
        (FLEET, [_job("head", H, 70), _job("lo", L, 16, hours=5)], ON, [("lo", ("small",), False)], ("head", ("big",))),
        # jobs that fit before the head start first, in order
        (FLEET, [_job("a", C, 8), _job("head", H, 70)], ON, [("a", ("small",), False)], ("head", ("big",))),
        # greedy (no reservation): nothing reserved, the rest fills what fits
        (FLEET, [_job("head", H, 70), _job("lo", L, 16)], GREEDY, [("lo", ("small",), False)], None),
        # a head no GPU can ever hold gets no reservation: the next blocked job is the head
        (FLEET, [_job("huge", C, 90), _job("head", H, 70)], ON, [], ("head", ("big",))),
    ],
)  # fmt: skip
def test_reservation_and_backfill(devices, jobs, policy, starts, reserved):
    p = plan(NOW, devices, tuple(jobs), policy)
    assert _starts(p) == starts
    assert (None if p.reservation is None else (p.reservation.job_id, p.reservation.gpu_ids)) == reserved


def test_the_reservation_is_on_the_gpu_that_frees_first_and_says_when():
    devices = (_busy("g1", 80, "r1", 3), _busy("g2", 80, "r2", 1), _busy("g3", 40, "r3", 0.5))
    p = plan(NOW, devices, (_job("head", H, 70),), ON)
    assert p.reservation is not None and p.reservation.gpu_ids == ("g2",) and p.reservation.start_at == NOW + 3600
    assert "expected to take it first, at +3600 s" in p.reservation.reason
    assert p.notes == (("head", p.reservation.reason),)


# Two hosts of 2 GPUs; a gang of 2 waits for host a (frees in 1 h and 2 h), host b has one idle card.
GANG_FLEET = (_busy("a0", 80, "r0", 1, "a"), _busy("a1", 80, "r1", 2, "a"), _idle("b0", 80, "b"),
              _busy("b1", 80, "r2", 3, "b"))  # fmt: skip


@pytest.mark.parametrize(
    ("jobs", "policy", "starts", "why"),
    [
        # a job that ends before the reservation may use the reserved host's idle card ...
        ([_job("gang", H, 40, gpus=2), _job("short", L, 8, hours=0.5)], ON, [("short", ("b0",), False)],
         "backfill on GPUs outside"),
    ],
)  # fmt: skip
def test_gang_head_reserves_k_devices_of_one_host(jobs, policy, starts, why):
    p = plan(NOW, GANG_FLEET, tuple(jobs), policy)
    assert p.reservation is not None and p.reservation.gpu_ids == ("a0", "a1")
    assert p.reservation.start_at == NOW + 2 * 3600
    assert _starts(p) == starts and why in p.starts[0].reason


# Host a: a0 idle, a1 busy for 2 h; host b: busy for 3 h. The gang is reserved on a0 + a1 from +2 h.
HELD = (_idle("a0", 80, "a"), _busy("a1", 80, "r1", 2, "a"), _busy("b0", 80, "r2", 3, "b"),
        _busy("b1", 80, "r3", 3, "b"))  # fmt: skip


@pytest.mark.parametrize(
    ("later", "policy", "starts", "note"),
    [
        # ends before the reservation: backfilled on the reserved idle card
        (_job("short", L, 8, hours=1), ON, [("short", ("a0",), False)], None),
        # would end after it: on loan (reclaimed at the reservation, its cost said)
        (_job("long", L, 8, hours=5, move_cost_s=42), ON, [("long", ("a0",), True)], None),
        # loans off, or the job cannot be preempted: it waits, with the reason
        (_job("long", L, 8, hours=5), NO_LOANS, [], "would delay the reservation of gang"),
        (_job("long", L, 8, hours=5, preemptible=False), ON, [], "would delay the reservation of gang"),
        # nothing fits at all
        (_job("fat", L, 90), ON, [], "no GPU fits it now"),
    ],
)  # fmt: skip
def test_jobs_behind_the_head_never_delay_it(later, policy, starts, note):
    p = plan(NOW, HELD, (_job("gang", H, 40, gpus=2), later), policy)
    assert p.reservation is not None and p.reservation.gpu_ids == ("a0", "a1")
    assert _starts(p) == starts
    if note:
        assert note in dict(p.notes)[later.job_id]
    if starts and starts[0][2]:
        assert p.starts[0].loan_until == NOW + 2 * 3600
        assert "reclaimed then at its checkpoint cost of 42 s" in p.starts[0].reason


def test_a_job_that_fits_nowhere_now_behind_the_head_waits():
    devices = (_busy("a0", 80, "r0", 1, "a"), _busy("a1", 80, "r1", 2, "a"))
    p = plan(NOW, devices, (_job("gang", H, 40, gpus=2), _job("x", L, 8)), ON)
    assert dict(p.notes)["x"] == "no GPU fits it now"


def test_loans_are_reclaimed_when_the_reservation_comes():
    # Given the reserved host holds only loans now (one cheap, one dear) on a0 and a1
    a0 = _busy("a0", 80, "loan0", 4, "a", loan_until=NOW, move_cost_s=5)
    a1 = _busy("a1", 80, "loan1", 4, "a", loan_until=NOW, move_cost_s=9)
    # When the gang is planned
    p = plan(NOW, (a0, a1, _busy("b0", 80, "r", 3, "b")), (_job("gang", H, 40, gpus=2),), ON)
    # Then its time is now and both loans are reclaimed, each with the reason
    assert p.reservation is not None and p.reservation.start_at == NOW
    assert [(r.job_id, r.gpu_id) for r in p.reclaims] == [("loan0", "a0"), ("loan1", "a1")]
    assert "reserved for gang from now" in p.reclaims[0].reason


def test_no_new_loan_on_a_reservation_that_is_due():
    # Given the reserved host holds a loan and the reservation is due now
    a0 = _busy("a0", 80, "loan0", 4, "a", loan_until=NOW)
    p = plan(NOW, (a0, _idle("a1", 80, "a")), (_job("gang", H, 40, gpus=2), _job("next", L, 8, hours=5)), ON)
    # Then the loan is reclaimed and no other job takes the idle reserved card on loan meanwhile
    assert [r.job_id for r in p.reclaims] == ["loan0"] and p.starts == ()
    assert "would delay the reservation of gang" in dict(p.notes)["next"]


def test_only_the_loans_in_the_way_are_reclaimed_on_a_shared_card():
    # Given a shared 80 GiB card with a 30 GiB job (ends in 1 h) and two 16 GiB loans; a 40 GiB head
    card = Device("s", 80 * GIB, "h", True, (Tenant("keep", L, 30 * GIB, NOW + 3600),
                  Tenant("l1", L, 16 * GIB, NOW + 9000, 3.0, loan_until=NOW),
                  Tenant("l2", L, 16 * GIB, NOW + 9000, 1.0, loan_until=NOW)))  # fmt: skip
    p = plan(NOW, (card,), (_job("head", H, 40),), ON)
    # Then the loans go cheapest first until the head fits: 30 + 16 + 40 + 4 = 90 > 80, so both
    assert [r.job_id for r in p.reclaims] == ["l2", "l1"]


def test_a_shared_reserved_card_takes_small_jobs_that_leave_room_for_the_head():
    # Given the head (50 GiB) reserved on a shared card whose 30 GiB job ends in 1 h
    card = Device("s", 80 * GIB, "h", True, (Tenant("r", L, 30 * GIB, NOW + 3600),))
    jobs = (_job("head", H, 50), _job("tiny", L, 8, hours=9), _job("mid", L, 24, hours=9, at=1))
    p = plan(NOW, (card,), jobs, NO_LOANS)
    assert p.reservation is not None and p.reservation.start_at == NOW + 3600
    # Then an 8 GiB job fits beside it for good (8 + 50 + 4 after r ends); a 24 GiB one would delay the head
    assert _starts(p) == [("tiny", ("s",), False)]
    assert "would delay the reservation of head" in dict(p.notes)["mid"]


def test_order_is_tier_then_submit_then_id():
    jobs = (_job("b", L, 8, at=1), _job("a", L, 8, at=1), _job("c", C, 8, at=9), _job("d", L, 8, at=0))
    assert [j.job_id for j in order(jobs)] == ["c", "d", "a", "b"]


def test_a_gang_no_host_can_hold_gets_no_reservation():
    # Given hosts with one 80 GiB card each and a 16 GiB card: a gang of 2 × 70 GiB fits no host, ever
    devices = (_idle("a0", 80, "a"), _idle("a1", 16, "a"), _idle("b0", 80, "b"))
    p = plan(NOW, devices, (_job("gang", H, 70, gpus=2), _job("x", L, 70)), ON)
    # Then it is noted and the next job is planned as if it were not there
    assert p.reservation is None and dict(p.notes)["gang"] == "fits no GPU now"
    assert _starts(p) == [("x", ("a0",), False)]


SPREAD = BackfillPolicy(spread=True)
# A shared 80 GiB card holding one 8 GiB job, an idle shared 80 GiB card and an idle 40 GiB card.
HALF = Device("s0", 80 * GIB, "h0", True, (Tenant("r", L, 8 * GIB, NOW + 3600),))
MIXED = (HALF, _idle("s1", 80, shared=True), _idle("w", 40))


@pytest.mark.parametrize(
    ("jobs", "policy", "starts"),
    [
        # packing (the default): best fit joins the shared card (50 GiB leaves 18 there, 30 on the idle one)
        ([_job("a", L, 50)], ON, [("a", ("s0",), False)]),
        # spreading: an idle card of its own, the smallest that fits
        ([_job("a", L, 50)], SPREAD, [("a", ("s1",), False)]),
        ([_job("a", L, 16), _job("b", L, 40)], SPREAD, [("a", ("w",), False), ("b", ("s1",), False)]),
        # three waiting jobs, two idle cards: every job cannot have its own, so they pack by best fit
        ([_job("a", L, 16), _job("b", L, 16), _job("c", L, 8)], SPREAD,
         [("a", ("w",), False), ("b", ("s0",), False), ("c", ("s0",), False)]),
        # a 70 GiB job and a 40 GiB one: the 40 GB card cannot take the 70, the 80 can; largest against largest
        ([_job("a", L, 40), _job("big", L, 70)], SPREAD, [("a", ("w",), False), ("big", ("s1",), False)]),
    ],
)  # fmt: skip
def test_spread_gives_each_job_an_idle_card_while_there_is_one_for_everyone(jobs, policy, starts):
    assert _starts(plan(NOW, MIXED, tuple(jobs), policy)) == starts


@pytest.mark.parametrize(
    ("jobs", "expected"),
    [
        ([], True),
        ([_job("a", L, 40), _job("b", L, 70)], True),
        ([_job("a", L, 70), _job("b", L, 70)], False),  # two 70 GiB jobs, one idle card that holds one
        ([_job("a", L, 8), _job("b", L, 8), _job("c", L, 8)], False),  # three jobs, two idle cards
        ([_job("g", H, 8, gpus=2)], False),  # a gang waits to gather idle cards: never spread
    ],
)  # fmt: skip
def test_room_for_all(jobs, expected):
    assert room_for_all(MIXED, tuple(jobs)) is expected
