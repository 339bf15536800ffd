"""Gang placement (routing/gang.py): K devices of one host, all or nothing, and no deadlock between racing gangs."""

from __future__ import annotations

import itertools

import pytest

from routing.gang import Slot, choose, claim, claim_order, claim_step, members, release

pytestmark = pytest.mark.unit

NOW = 500.0
GIB = 1024


def _host(host: str, *free_at: float, gib: int = 80) -> tuple[Slot, ...]:
    return tuple(Slot(f"{host}-{i}", host, gib * GIB, at) for i, at in enumerate(free_at))


@pytest.mark.parametrize(
    ("slots", "k", "need_gib", "now", "expected"),
    [
        # start now: only free devices; best fit = the host with fewest free fitting devices
        (_host("a", NOW, NOW, NOW, NOW) + _host("b", NOW, NOW, 900, 900), 2, 40, NOW, ("b", ("b-0", "b-1"), NOW)),
        # ties on free count: host name
        (_host("b", NOW, NOW) + _host("a", NOW, NOW), 2, 40, NOW, ("a", ("a-0", "a-1"), NOW)),
        # never across hosts, never partial: 2 + 2 free on two hosts cannot hold a gang of 3
        (_host("a", NOW, NOW, 900) + _host("b", NOW, NOW, 900), 3, 40, NOW, None),
        # memory per device counts: the 40 GiB host has more free devices but cannot hold 70 GiB
        (_host("a", NOW, NOW, NOW, gib=40) + _host("b", NOW, NOW, 900), 2, 70, NOW, ("b", ("b-0", "b-1"), NOW)),
        (_host("a", NOW, NOW, NOW, gib=40), 2, 70, None, None),
        # reservation: the earliest K-th free time, then fewest fitting devices, then host name
        (_host("a", 100, 700, 800) + _host("b", 300, 600), 2, 40, None, ("b", ("b-0", "b-1"), 600)),
        (_host("a", 100, 600, 800) + _host("b", 300, 600), 2, 40, None, ("b", ("b-0", "b-1"), 600)),
        (_host("a", 300, 600) + _host("b", 300, 600), 2, 40, None, ("a", ("a-0", "a-1"), 600)),
        # inside a host: earliest free devices first
        (_host("a", 900, 100, 200), 2, 40, None, ("a", ("a-1", "a-2"), 200)),
        ((), 1, 8, None, None),
    ],
)  # fmt: skip
def test_choose(slots, k, need_gib, now, expected):
    got = choose(slots, k, need_gib * GIB, now)
    assert (None if got is None else (got.host, got.gpu_ids, got.start_at)) == expected


def test_a_gang_needs_one_gpu_at_least():
    with pytest.raises(ValueError, match="at least one GPU"):
        choose(_host("a", NOW), 0, 8)


def test_claim_takes_all_or_none():
    # Given GPU a-2 already held by another job
    owners = {"a-2": "other"}
    # When a gang of three claims a-0..a-2
    lost = claim(owners, "g", "a", ("a-0", "a-1", "a-2"))
    # Then it holds nothing (a-0 and a-1 were given back) and says who was in the way
    assert not lost.granted and lost.owners == owners and "GPU a-2 held by other" in lost.reason
    won = claim({}, "g", "a", ("a-2", "a-0", "a-1"))
    assert won.granted and members(won.owners, "g") == ("a-0", "a-1", "a-2")


def test_preempting_one_member_frees_all_k():
    owners = {"a-0": "g", "a-1": "g", "a-2": "solo", "a-3": "g"}
    assert members(owners, "g") == ("a-0", "a-1", "a-3")
    assert release(owners, "g") == {"a-2": "solo"}


def test_claim_order_is_global():
    assert claim_order(("a-3", "a-1"), "a") == [("a", "a-1"), ("a", "a-3")]


GANGS = {"A": ("h", ("h-0", "h-1", "h-2")), "B": ("h", ("h-1", "h-2", "h-3")), "C": ("h", ("h-3", "h-0"))}


def _explore(names: tuple[str, ...]) -> tuple[set[tuple], set[tuple]]:
    """Every state reachable when the gangs' claim steps interleave in any order (a backed-off gang retries)."""
    start = (frozenset(), frozenset())  # (owners as items, granted gangs)
    seen, edges, todo = {start}, {}, [start]
    while todo:
        state = todo.pop()
        owners, granted = dict(state[0]), state[1]
        nexts = []
        for name in names:
            if name in granted:
                continue
            host, gpus = GANGS[name]
            after, what = claim_step(owners, name, host, gpus)
            nexts.append((frozenset(after.items()), granted | {name} if what == "granted" else granted))
        edges[state] = nexts
        for nxt in nexts:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen, edges


@pytest.mark.parametrize("names", [("A", "B"), ("A", "C"), ("A", "B", "C")])
def test_competing_gangs_never_deadlock_nor_start_partially(names):
    # Given gangs that want overlapping devices of one host, claiming step by step in every interleaving
    states, edges = _explore(names)
    for owners, granted in states:
        held = dict(owners)
        # Then a granted gang holds all its devices (never a partial start) ...
        for name in granted:
            assert set(members(held, name)) == set(GANGS[name][1])
        # ... and from every state some gang can still be granted, or one already is (no deadlock)
    granted_states = {s for s in states if s[1]}
    can_reach = set(granted_states)
    changed = True
    while changed:
        changed = False
        for state, nexts in edges.items():
            if state not in can_reach and any(n in can_reach for n in nexts):
                can_reach.add(state)
                changed = True
    assert can_reach == states
    # And overlapping gangs are never granted together
    for _, granted in states:
        for x, y in itertools.combinations(sorted(granted), 2):
            assert not set(GANGS[x][1]) & set(GANGS[y][1])


def test_a_gang_that_meets_a_held_device_backs_off_holding_nothing():
    # Given B holds h-2 (its first device in global order) and A holds h-1
    owners = {"h-1": "A", "h-2": "B"}
    # When B takes its next step towards h-1
    after, what = claim_step(owners, "B", "h", ("h-2", "h-1"))
    # Then B gives back h-2 instead of waiting on A while holding it
    assert what == "backed off: h-1 held by A" and after == {"h-1": "A"}


# --- plan: the holds the supervisor takes in one tick (workers/gangs.py acts on them) ---
from routing.gang import GangJob, Hold, plan  # noqa: E402


def _job(job_id: str, k: int, rank: int = 2, at: float = 0.0, need_gib: int = 20) -> GangJob:
    return GangJob(job_id, rank, at, k, need_gib * GIB)


def _held(holds: tuple[Hold, ...]) -> list[tuple[str, str, tuple[str, ...], float]]:
    return [(h.job_id, h.host, h.gpu_ids, h.start_at) for h in holds]


def test_plan_starts_every_gang_idle_devices_can_take_in_scheduling_order() -> None:
    # Given one host with 4 idle GPUs and three gangs of 2: a low one submitted first, a high one, a later low one
    slots = _host("a", NOW, NOW, NOW, NOW)
    jobs = (_job("low-old", 2, rank=3, at=1), _job("high", 2, rank=1, at=5), _job("low-new", 2, rank=3, at=2))
    # Then the high gang is held first, the older low gang next, and the third finds nothing (not even a reservation:
    # every device is held now and none has an expected free time of its own)
    holds = plan(NOW, jobs, slots, reserving=False)
    assert _held(holds)[:2] == [("high", "a", ("a-0", "a-1"), NOW), ("low-old", "a", ("a-2", "a-3"), NOW)]
    assert len(holds) == 2
    assert "2 idle GPUs of a (a-0, a-1) held together" in holds[0].reason


def test_plan_reserves_for_the_first_blocked_gang_only_and_never_splits_hosts() -> None:
    # Given host a: 1 idle + 1 busy until +600 s; host b: 2 busy until +900 s and +1200 s
    slots = _host("a", NOW, NOW + 600) + _host("b", NOW + 900, NOW + 1200)
    jobs = (_job("g1", 2, at=1), _job("g2", 2, at=2))
    # Then g1 reserves a's two devices (both free at +600 s, before b's +1200 s); g2 gets nothing (one at a time)
    holds = plan(NOW, jobs, slots, reserving=False)
    assert _held(holds) == [("g1", "a", ("a-0", "a-1"), NOW + 600)]
    assert "head of the gangs" in holds[0].reason and "+600 s" in holds[0].reason
    # And while a reservation already drains, no second one is taken
    assert plan(NOW, jobs, slots, reserving=True) == ()


def test_plan_lets_a_later_gang_start_on_devices_the_reservation_does_not_take() -> None:
    # Given a gang of 4 that must wait on host a (one busy) and a gang of 2 that fits host b now
    slots = _host("a", NOW, NOW, NOW, NOW + 300) + _host("b", NOW, NOW)
    holds = plan(NOW, (_job("big", 4, rank=1), _job("small", 2, rank=3)), slots, reserving=False)
    # Then big reserves a (free at +300 s) and small starts on b now
    assert _held(holds) == [("big", "a", ("a-0", "a-1", "a-2", "a-3"), NOW + 300), ("small", "b", ("b-0", "b-1"), NOW)]


def test_plan_skips_a_gang_no_host_can_ever_hold() -> None:
    # A gang of 3 on hosts of 2, and one needing more memory than any device: no hold, no reservation
    slots = _host("a", NOW, NOW) + _host("b", NOW, NOW)
    assert plan(NOW, (_job("three", 3), _job("huge", 2, need_gib=100)), slots, reserving=False) == ()


# --- backfill: a reserved, idle GPU lends itself to a job expected to end before the reservation ---
from routing.gang import Candidate, backfill  # noqa: E402


def test_backfill_lends_to_the_first_job_in_order_that_fits_and_ends_in_time() -> None:
    waiting = (
        Candidate("unknown", 0, 1.0, 10 * GIB, None),  # no expected runtime: never lent
        Candidate("too-big", 0, 2.0, 90 * GIB, 10.0),  # does not fit the GPU
        Candidate("too-long", 1, 3.0, 10 * GIB, 600.0),  # would still run when the reservation is due
        Candidate("later", 3, 0.5, 10 * GIB, 30.0),  # fits, but a lower tier than the next one
        Candidate("fits", 2, 9.0, 10 * GIB, 100.0),
    )
    chosen = backfill(NOW, NOW + 300, 80 * GIB, waiting)
    assert chosen is not None and chosen[0] == "fits"
    assert chosen[1] == "backfill: expected to end at +100 s, before the reservation due at +300 s"
    # the margin counts: 20 % of the wait, at most 60 s (100 s + 25 s > 120 s; 100 s + 60 s <= 1000 s)
    assert backfill(NOW, NOW + 120, 80 * GIB, waiting[4:]) is None
    assert backfill(NOW, NOW + 125, 80 * GIB, waiting[4:]) is not None
    assert backfill(NOW, NOW + 159, 80 * GIB, (Candidate("j", 0, 0.0, GIB, 100.0),)) is not None
    assert backfill(NOW, NOW + 1000, 80 * GIB, (Candidate("j", 0, 0.0, GIB, 941.0),)) is None
    assert backfill(NOW, NOW + 300, 80 * GIB, ()) is None
