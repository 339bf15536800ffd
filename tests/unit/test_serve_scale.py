"""Serving autoscale policy (routing/serve_scale.py): each signal, the bounds, the delays, scale to and from zero,
and healing's back-off."""

from __future__ import annotations

import pytest

from routing.serve_scale import (
    HEAL_MAX_S,
    P99_MIN_REQUESTS,
    Heal,
    Load,
    Pending,
    Targets,
    decide,
    heal,
    judge_anew,
    judged_p99,
    wanted,
)

pytestmark = pytest.mark.unit

T = Targets(min_replicas=1, max_replicas=4, rps_per_replica=50, p99_ms=200, max_batch=8, up_delay_s=10,
            down_delay_s=60)  # fmt: skip
ZERO = Targets(min_replicas=0, max_replicas=4, rps_per_replica=50, p99_ms=200, down_delay_s=60)
NOW = 1_000.0


@pytest.mark.parametrize(
    ("load", "targets", "count", "why"),
    [
        (Load(1, 0, 40, 100), T, 1, "40.0 req/s"),  # within target
        (Load(1, 0, 120, 100), T, 3, "120.0 req/s"),  # throughput: ceil(120 / 50)
        (Load(2, 0, 60, 350), T, 3, "p99 350 ms over 200 ms"),  # latency: one more than now
        (Load(2, 17, 60, 100), T, 3, "17 requests queued"),  # backlog beyond one batch per replica
        (Load(2, 16, 60, 100), T, 2, "60.0 req/s"),  # exactly one batch each: no backlog
        (Load(2, 0, 60, 100, gpu_util=0.9), T, 3, "GPU 90% busy over 70%"),
        (Load(2, 0, 60, 100, gpu_util=0.5), T, 2, "60.0 req/s"),
        (Load(3, 0, 0, None), T, 1, "the minimum is 1"),  # idle: back to the minimum
        (Load(1, 0, 900, 100), T, 4, "900.0 req/s, capped at the maximum 4"),
        (Load(0, 3, 0, None), ZERO, 1, "a request waits and no replica runs"),  # wake from zero
        (Load(0, 0, 0, None), ZERO, 0, "0.0 req/s"),  # idle at zero stays there
        (Load(0, 0, 0, 900, gpu_util=0.99), ZERO, 0, "0.0 req/s"),  # stale latency/GPU figures with no replica
    ],
)
def test_each_signal_asks_for_its_count(load: Load, targets: Targets, count: int, why: str) -> None:
    assert wanted(load, targets) == (count, why)


@pytest.mark.parametrize(
    ("p99_ms", "counted", "rps", "judged"),
    [
        (900.0, P99_MIN_REQUESTS, 5.0, 900.0),
        (900.0, P99_MIN_REQUESTS - 1, 5.0, None),  # too few requests since the deployment last changed
        (900.0, 5_000, 0.0, None),  # no traffic now: an old p99 says nothing
        (None, 0, 5.0, None),
    ],
)
def test_a_p99_is_judged_with_traffic_and_enough_requests_since_the_last_change(
    p99_ms: float | None, counted: int, rps: float, judged: float | None
) -> None:
    assert judged_p99(p99_ms, counted, rps) == judged


@pytest.mark.parametrize(
    ("known", "replicas", "ready", "unplaced", "answered", "anew"),
    [
        (None, 2, 2, 0, 500, True),  # first seen
        ((2, 400), 2, 2, 0, 500, False),  # steady: keep counting from 400
        ((2, 400), 3, 2, 1, 500, True),  # scaled (by the scaler or by hand)
        ((3, 400), 3, 2, 1, 500, False),  # only a replica waiting for a GPU is missing: the placed ones are judged
        ((3, 400), 3, 1, 1, 500, True),  # a placed replica warming up
        ((2, 400), 2, 2, 0, 100, True),  # the request counter went back (Redis restored from an older snapshot)
    ],
)
def test_the_p99_counts_anew_after_any_change_of_the_deployment(
    known: tuple[int, int] | None, replicas: int, ready: int, unplaced: int, answered: int, anew: bool
) -> None:
    assert judge_anew(known, replicas=replicas, ready=ready, unplaced=unplaced, answered=answered) is anew


def test_scale_out_waits_for_sustained_demand_then_goes_at_once() -> None:
    first = decide(Load(1, 0, 120, 100), T, Pending(), NOW)
    assert (first.replicas, first.pending) == (1, Pending(up_since=NOW))
    assert first.reason.startswith("wait to scale out")
    still = decide(Load(1, 0, 120, 100), T, first.pending, NOW + 5)
    assert (still.replicas, still.pending) == (1, Pending(up_since=NOW))
    done = decide(Load(1, 0, 120, 100), T, still.pending, NOW + 10)
    assert (done.replicas, done.pending, done.reason) == (3, Pending(), "scale out to 3: 120.0 req/s")


def test_a_wake_from_zero_never_waits() -> None:
    verdict = decide(Load(0, 1, 0, None), Targets(0, 4, 50, 200, up_delay_s=30), Pending(), NOW)
    assert verdict.replicas == 1
    assert verdict.reason == "scale out to 1: a request waits and no replica runs"


def test_scale_in_steps_down_one_replica_after_the_delay() -> None:
    first = decide(Load(3, 0, 10, 50), T, Pending(), NOW)
    assert (first.replicas, first.pending) == (3, Pending(down_since=NOW))
    early = decide(Load(3, 0, 10, 50), T, first.pending, NOW + 59)
    assert early.replicas == 3
    late = decide(Load(3, 0, 10, 50), T, early.pending, NOW + 60)
    assert (late.replicas, late.pending, late.reason) == (2, Pending(), "scale in to 2: 10.0 req/s")


def test_an_idle_scale_to_zero_deployment_reaches_zero() -> None:
    verdict = decide(Load(1, 0, 0, None), ZERO, Pending(down_since=NOW - 60), NOW)
    assert verdict.replicas == 0


def test_demand_that_stops_resets_the_pending_state() -> None:
    steady = decide(Load(2, 0, 60, 100), T, Pending(up_since=NOW - 5), NOW)
    assert (steady.replicas, steady.pending, steady.reason) == (2, Pending(), "steady: 60.0 req/s")


def test_while_replicas_warm_only_throughput_counts_and_nothing_shrinks() -> None:
    # 1 of 2 replicas ready, a cold start's p99, a backlog and busy GPUs: none of them asks for a third
    warming = Load(2, 40, 60, 900, gpu_util=0.99, ready=1)
    assert warming.warming and wanted(warming, T) == (2, "60.0 req/s")
    # throughput still scales out
    assert wanted(Load(2, 0, 160, None, ready=1), T) == (4, "160.0 req/s")
    # silence during a cold start never scales in, however long it lasts
    quiet = decide(Load(2, 0, 0, None, ready=0), ZERO, Pending(down_since=NOW - 600), NOW)
    assert (quiet.replicas, quiet.reason, quiet.pending) == (2, "replicas still warming up", Pending())
    # all ready (or unknown) is not warming; zero replicas is a wake, not a cold start
    assert not Load(2, 0, 0, None, ready=2).warming and not Load(2, 0, 0, None).warming
    assert not Load(0, 1, 0, None, ready=0).warming


def test_a_surplus_replica_still_waiting_for_a_gpu_is_withdrawn_once_nothing_waits() -> None:
    # 1 of 2 replicas ready, the other's job queued for a GPU the fleet does not have free, no request waiting
    surplus = Load(2, 0, 0, None, ready=1, unplaced=1)
    first = decide(surplus, T, Pending(), NOW)
    assert (first.replicas, first.pending) == (2, Pending(down_since=NOW))
    late = decide(surplus, T, first.pending, NOW + 60)
    assert (late.replicas, late.reason) == (1, "scale in to 1: the minimum is 1")
    # not while a request waits (a wake from zero keeps its replica in the GPU queue), nor one warming on its GPU
    for kept in (Load(2, 3, 0, None, ready=1, unplaced=1), Load(1, 1, 0, None, ready=0, unplaced=1),
                 Load(2, 0, 0, None, ready=1, unplaced=0)):  # fmt: skip
        verdict = decide(kept, ZERO, Pending(down_since=NOW - 600), NOW)
        assert (verdict.replicas, verdict.reason) == (kept.replicas, "replicas still warming up"), kept


def test_a_replica_waiting_for_a_gpu_is_kept_while_the_placed_ones_still_ask_for_it() -> None:
    # 2 placed and ready, the third (asked for on their p99) queued for a GPU: their p99 is still over target
    waiting = decide(Load(3, 0, 15, 400, ready=2, unplaced=1), T, Pending(down_since=NOW - 600), NOW)
    assert (waiting.replicas, waiting.reason) == (3, "a replica waits for a GPU: p99 400 ms over 200 ms")
    assert waiting.pending == Pending()  # withdrawn and asked for again at every down delay, it would flap
    # once their p99 is back under target, it is withdrawn after the delay
    met = decide(Load(3, 0, 15, 100, ready=2, unplaced=1), T, Pending(down_since=NOW - 60), NOW)
    assert met.replicas == 2
    # and while a placed one still warms up, nothing is withdrawn at all
    warm = decide(Load(3, 0, 0, None, ready=1, unplaced=1), T, Pending(down_since=NOW - 600), NOW)
    assert (warm.replicas, warm.reason) == (3, "replicas still warming up")


def test_healing_replaces_at_once_then_backs_off_doubling_up_to_the_cap() -> None:
    go, state, why = heal(Heal(), missing=1, all_ready=False, now=NOW)
    assert (go, state, why) == (True, Heal(1, NOW), "replace 1 ended replica(s)")
    # The replacement failed too: the next one waits 10 s, then 20 s, 40 s ...
    assert heal(state, missing=1, all_ready=False, now=NOW + 9)[:2] == (False, state)
    assert heal(state, missing=1, all_ready=False, now=NOW + 9)[2] == "replacement 2 waits 1 s (back-off)"
    go, state, why = heal(state, missing=1, all_ready=False, now=NOW + 10)
    assert (go, state, why) == (True, Heal(2, NOW + 10), "replace 1 ended replica(s), try 2")
    assert heal(state, missing=1, all_ready=False, now=NOW + 29)[0] is False
    assert heal(state, missing=1, all_ready=False, now=NOW + 30)[0] is True
    # ... never more than HEAL_MAX_S
    late = Heal(30, NOW)
    assert heal(late, missing=2, all_ready=False, now=NOW + HEAL_MAX_S - 1)[0] is False
    assert heal(late, missing=2, all_ready=False, now=NOW + HEAL_MAX_S)[:2] == (True, Heal(31, NOW + HEAL_MAX_S))


def test_all_replicas_ready_resets_the_back_off_and_nothing_missing_does_nothing() -> None:
    assert heal(Heal(5, NOW), missing=0, all_ready=True, now=NOW) == (False, Heal(), "")
    assert heal(Heal(5, NOW), missing=0, all_ready=False, now=NOW) == (False, Heal(5, NOW), "")
    assert heal(Heal(5, NOW), missing=1, all_ready=True, now=NOW + 1) == (True, Heal(1, NOW + 1),
                                                                           "replace 1 ended replica(s)")  # fmt: skip
