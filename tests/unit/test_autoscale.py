"""Autoscaling policy (routing/autoscale.py): scale up on a burst, memory fit, delays, safe scale-in, table-driven."""

from __future__ import annotations

import pytest

from routing.autoscale import Config, Context, Decision, Device, State, Worker, desired, replicas_for
from routing.tiers import Tier

pytestmark = pytest.mark.unit

G16, G40, G80 = 15_360, 39_936, 80_896
NOW = 1_000.0


def _ctx(
    waiting: dict[int, int], workers: tuple[Worker, ...] = (), free: tuple[Device, ...] = (), **cfg: int
) -> Context:
    return Context(NOW, waiting, workers, free, Config(**cfg))  # type: ignore[arg-type]


def _dev(name: str, mib: int) -> Device:
    return Device(name, mib)


@pytest.mark.parametrize(
    ("ctx", "start", "reason"),
    [
        # nothing waits, nothing runs: nothing to do
        (_ctx({}), (), "steady: 0 workers"),
        # a burst on an empty fleet: one worker per waiting job, smallest fitting device first
        (
            _ctx({8_192: 2}, free=(_dev("g80", G80), _dev("g16", G16), _dev("g40", G40))),
            ("g16", "g40"),
            "2 waiting jobs fit no idle worker: start 2",
        ),
        # an idle worker takes the waiting job: no new worker
        (_ctx({8_192: 1}, (Worker("w0", G16),), (_dev("g40", G40),)), (), "steady: 1 workers"),
        # memory-aware: a 30 GB job needs the 40 GB device, not the free 16 GB one, nor the idle 16 GB worker
        (
            _ctx({G40: 1}, (Worker("w0", G16),), (_dev("g16", G16), _dev("g40", G40))),
            ("g40",),
            "1 waiting jobs fit no idle worker: start 1",
        ),
        # the biggest need is placed first, so the small job does not take the only big device
        (
            _ctx({G16: 1, G80: 1}, free=(_dev("g80", G80), _dev("g16", G16))),
            ("g80", "g16"),
            "2 waiting jobs fit no idle worker: start 2",
        ),
        # two jobs per worker: three waiting jobs justify two workers
        (
            _ctx({8_192: 3}, free=(_dev("a", G16), _dev("b", G16), _dev("c", G16)), jobs_per_worker=2),
            ("a", "b"),
            "3 waiting jobs fit no idle worker: start 2",
        ),
        # max_workers caps the start; the rest is said
        (
            _ctx({8_192: 3}, (Worker("w0", G16, Tier.LOW),), (_dev("a", G16), _dev("b", G16)), max_workers=2),
            ("a",),
            "3 waiting jobs fit no idle worker: start 1; 2 waiting jobs fit no free device or exceed max_workers",
        ),
        # a job bigger than every free device starts nothing
        (_ctx({G80: 1}, free=(_dev("g40", G40),)), (), "steady: 0 workers; 1 waiting jobs fit no free device"),
        # busy workers are not idle: a waiting job needs a new one
        (
            _ctx({8_192: 1}, (Worker("w0", G40, Tier.LOW),), (_dev("g16", G16),)),
            ("g16",),
            "1 waiting jobs fit no idle worker: start 1",
        ),
    ],
    ids=[
        "idle",
        "burst",
        "idle-worker-takes-it",
        "memory-fit",
        "big-first",
        "jobs-per-worker",
        "max-workers",
        "fits-nothing",
        "busy-not-idle",
    ],
)
def test_scale_up(ctx: Context, start: tuple[str, ...], reason: str) -> None:
    decision, state = desired(ctx, State())
    assert decision.start == start and decision.stop == () and decision.drain == ()
    assert decision.reason.startswith(reason), decision.reason
    assert state == State()


def test_scale_up_waits_for_the_up_delay_then_starts() -> None:
    ctx = _ctx({8_192: 1}, free=(_dev("a", G16),), up_delay_s=10)
    first, state = desired(ctx, State())
    assert (first.start, state.short_since) == ((), NOW) and "up delay not reached" in first.reason
    later = Context(NOW + 9.9, ctx.waiting, (), ctx.free_devices, ctx.config)
    assert desired(later, state)[0].start == ()
    done = Context(NOW + 10, ctx.waiting, (), ctx.free_devices, ctx.config)
    decision, state = desired(done, state)
    assert decision.start == ("a",) and state == State()


def test_a_shortage_that_ends_resets_the_up_delay() -> None:
    _, state = desired(_ctx({8_192: 1}, free=(_dev("a", G16),), up_delay_s=10), State())
    _, state = desired(_ctx({}, free=(_dev("a", G16),), up_delay_s=10), state)
    assert state == State()


def test_idle_workers_stop_after_the_down_delay_largest_first_keeping_min_workers() -> None:
    workers = (Worker("small", G16), Worker("big", G80), Worker("busy", G40, Tier.BATCH))
    ctx = _ctx({}, workers, down_delay_s=300, min_workers=2)
    first, state = desired(ctx, State())
    assert first.stop == () and state.surplus_since == NOW and "down delay not reached" in first.reason
    later = Context(NOW + 300, {}, workers, (), ctx.config)
    decision, state = desired(later, state)
    assert decision.stop == ("big",), "3 workers, min 2: one stops, the biggest idle one"
    assert decision.drain == () and state == State()
    assert "idle for 300 s" in decision.reason


def test_demand_returning_cancels_a_pending_scale_down() -> None:
    workers = (Worker("w0", G16),)
    _, state = desired(_ctx({}, workers, down_delay_s=300), State())
    decision, state = desired(_ctx({8_192: 1}, workers, down_delay_s=300), state)
    assert not decision.changes and state == State()


def test_busy_workers_are_never_stopped_for_a_surplus() -> None:
    workers = (Worker("w0", G16, Tier.LOW), Worker("w1", G16, Tier.BATCH))
    decision, _ = desired(_ctx({}, workers, down_delay_s=0), State())
    assert not decision.changes and decision.reason == "steady: 2 workers"


def test_above_max_workers_idle_stop_first_then_busy_drain_lowest_tier_first() -> None:
    workers = (Worker("hi", G16, Tier.HIGH), Worker("idle", G40), Worker("lo", G16, Tier.LOW),
               Worker("batch", G16, Tier.BATCH))  # fmt: skip
    decision, state = desired(_ctx({}, workers, max_workers=1), State())
    assert decision.stop == ("idle",) and decision.drain == ("batch", "lo")
    assert decision.reason == "4 workers exceed max_workers 1" and state == State()


def test_above_max_workers_with_enough_idle_drains_nothing() -> None:
    workers = (Worker("a", G16), Worker("b", G80), Worker("c", G16, Tier.LOW))
    decision, _ = desired(_ctx({}, workers, max_workers=2), State())
    assert (decision.stop, decision.drain) == (("b",), ())


def test_decision_changes() -> None:
    assert not Decision().changes
    assert Decision(start=("a",)).changes and Decision(stop=("a",)).changes and Decision(drain=("a",)).changes


@pytest.mark.parametrize(
    ("depth", "per", "low", "high", "expected"),
    [(0, 1, 0, 10, 0), (7, 1, 0, 10, 7), (7, 2, 0, 10, 4), (50, 1, 0, 10, 10), (0, 1, 2, 10, 2), (-3, 0, 0, 5, 0)],
)
def test_replicas_for_is_the_plain_queue_length_formula(
    depth: int, per: int, low: int, high: int, expected: int
) -> None:
    assert replicas_for(depth, per, low, high) == expected
