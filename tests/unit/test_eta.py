"""routing/eta.py: the written order inside a tier and queue positions / ETAs with known answers."""

from __future__ import annotations

import math

import pytest

from routing.eta import JUMP_BOUND_S, Device, Queued, Standing, arrival_shares, in_submit_order, pick, standings
from routing.tiers import Tier

pytestmark = pytest.mark.unit

G80, G40, G16 = 81_920, 40_960, 16_384


@pytest.mark.parametrize(
    ("gpu_mib", "heads", "chosen"),
    [
        (G80, {}, None),
        # nothing this GPU fits
        (G16, {"yoloq.high.80g": 0.0}, None),
        (1_000, {"yoloq.high.8g": 0.0}, None),  # a GPU under every class bound
        # tier first, even when the lower tier's job is older
        (G80, {"yoloq.low.24g": 0.0, "yoloq.high.8g": 100.0}, "yoloq.high.8g"),
        # issue 18 item 10: two 20 GB jobs (24g) before a 79 GB one (80g) submitted long after them
        (G80, {"yoloq.medium.24g": 0.0, "yoloq.medium.80g": JUMP_BOUND_S + 1}, "yoloq.medium.24g"),
        # ... but a job only this GPU size holds may pass them within the bound
        (G80, {"yoloq.medium.24g": 0.0, "yoloq.medium.80g": JUMP_BOUND_S}, "yoloq.medium.80g"),
        # the exception is for the GPU's own largest class only: on a 40 GB card 40g is the big class
        (G40, {"yoloq.medium.8g": 0.0, "yoloq.medium.24g": 5.0}, "yoloq.medium.8g"),
        (G40, {"yoloq.medium.8g": 0.0, "yoloq.medium.40g": 5.0}, "yoloq.medium.40g"),
        # oldest first among the smaller classes; a tie goes to the larger class
        (G80, {"yoloq.low.8g": 10.0, "yoloq.low.16g": 5.0, "yoloq.low.24g": 7.0}, "yoloq.low.16g"),
        (G80, {"yoloq.low.8g": 5.0, "yoloq.low.16g": 5.0}, "yoloq.low.16g"),
        # a queue this GPU cannot consume does not hide the one it can
        (G40, {"yoloq.batch.80g": 0.0, "yoloq.batch.8g": 1e6}, "yoloq.batch.8g"),
        # the big class is oldest anyway
        (G80, {"yoloq.batch.80g": 0.0, "yoloq.batch.8g": 1.0}, "yoloq.batch.80g"),
    ],
)
def test_pick_follows_the_written_order(gpu_mib: int, heads: dict[str, float], chosen: str | None) -> None:
    assert pick(gpu_mib, heads) == chosen


def q(job_id: str, queue: str, ts: float, runtime: float | None = 100.0) -> Queued:
    return Queued(job_id, f"yoloq.{queue}", ts, runtime)


def table(result: dict[str, Standing]) -> dict[str, tuple[int | None, float | None]]:
    return {j: (s.queue_position, s.eta_start_s) for j, s in result.items()}


def test_the_issue_scenario_two_older_20gb_jobs_start_first_on_the_80gb_card() -> None:
    # Given one 80 GB card busy for 60 s more, two 20 GB medium jobs and, 15 min later, a 79 GB medium one
    jobs = [q("a", "medium.24g", 0.0, 100.0), q("b", "medium.24g", 1.0, 200.0), q("big", "medium.80g", 900.0, 50.0)]
    got = standings([Device("g0", G80, 60.0)], in_submit_order(jobs))
    # Then they start in submit order, each when the one before it ends
    assert table(got) == {"a": (1, 60.0), "b": (2, 160.0), "big": (3, 360.0)}
    assert got["big"].gpu_id == "g0"


def test_a_big_job_within_the_bound_passes_older_small_ones_on_its_card_only() -> None:
    # Given a free 80 GB and a free 40 GB card; two 20 GB jobs, then a 79 GB one 1 min later
    jobs = [q("a", "low.24g", 0.0, 100.0), q("b", "low.24g", 1.0, 100.0), q("big", "low.80g", 60.0, 500.0)]
    devices = [Device("g80", G80), Device("g40", G40, 10.0)]
    got = standings(devices, in_submit_order(jobs))
    # Then the 80 GB card takes the big job now, the 40 GB card the small ones in turn
    assert table(got) == {"big": (1, 0.0), "a": (2, 10.0), "b": (3, 110.0)}
    assert (got["a"].gpu_id, got["b"].gpu_id) == ("g40", "g40")


def test_positions_count_only_starts_on_gpus_the_job_can_use() -> None:
    # Given a 16 GB card and an 80 GB card, both busy; an 8 GB job and a 70 GB job, both high
    jobs = [q("small", "high.8g", 0.0, 10.0), q("large", "high.80g", 5.0, 10.0)]
    devices = [Device("g16", G16, 30.0), Device("g80", G80, 20.0)]
    got = standings(devices, in_submit_order(jobs))
    # Then the 80 GB card frees first and takes the large job (its class); the small job waits for the 16 GB card:
    # the large job started before it on a GPU it could use, so the small job is second
    assert table(got) == {"large": (1, 20.0), "small": (2, 30.0)}


def test_tiers_come_first_and_runtime_chains_on_one_gpu() -> None:
    jobs = [q("l1", "low.8g", 0.0, 30.0), q("c1", "critical.8g", 50.0, 10.0), q("h1", "high.16g", 40.0, 20.0)]
    got = standings([Device("g", G40, 5.0)], in_submit_order(jobs))
    assert table(got) == {"c1": (1, 5.0), "h1": (2, 15.0), "l1": (3, 35.0)}


def test_the_queue_lists_order_is_kept_inside_a_queue() -> None:
    # Given a preempted job requeued at the tail although it was submitted first
    queues = {"yoloq.low.8g": [q("new", "low.8g", 10.0), q("old", "low.8g", 0.0)]}
    got = standings([Device("g", G16)], queues)
    assert table(got) == {"new": (1, 0.0), "old": (2, 100.0)}


@pytest.mark.parametrize(
    ("devices", "reason"),
    [
        ([], "no live GPU can hold it"),
        ([Device("g", G16)], "no live GPU can hold it"),
        ([Device("g", G80, math.inf)], "the GPUs that fit it are held by jobs that never end"),
    ],
)
def test_a_job_no_gpu_will_take_has_no_position(devices: list[Device], reason: str) -> None:
    got = standings(devices, in_submit_order([q("big", "medium.80g", 0.0)]))
    assert got["big"] == Standing("big", None, None, None, reason)


def test_a_job_that_never_ends_holds_its_gpu_for_good() -> None:
    # Given a serving replica (no runtime) queued before a probe on the only GPU
    jobs = [q("serve", "high.8g", 0.0, None), q("probe", "high.8g", 1.0)]
    got = standings([Device("g", G16)], in_submit_order(jobs))
    assert table(got) == {"serve": (1, 0.0), "probe": (None, None)}


def test_an_empty_queue_list_is_ignored() -> None:
    assert standings([Device("g", G16)], {"yoloq.low.8g": []}) == {}


C, H, M, L, B = Tier.CRITICAL, Tier.HIGH, Tier.MEDIUM, Tier.LOW, Tier.BATCH


@pytest.mark.parametrize(
    ("recent", "window_s", "gpus", "shares"),
    [
        ([], 3600.0, 4, {C: 0.0, H: 0.0, M: 0.0, L: 0.0, B: 0.0}),
        ([(C, 3600.0)], 0.0, 4, {C: 0.0, H: 0.0, M: 0.0, L: 0.0, B: 0.0}),  # no window: no load known
        ([(C, 3600.0)], 3600.0, 0, {C: 0.0, H: 0.0, M: 0.0, L: 0.0, B: 0.0}),
        # one critical GPU-hour per hour on 4 GPUs: every lower tier loses a quarter of the fleet to it
        ([(C, 3600.0)], 3600.0, 4, {C: 0.0, H: 0.25, M: 0.25, L: 0.25, B: 0.25}),
        # a tier's own and lower tiers' arrivals do not pass it
        ([(C, 1800.0), (M, 3600.0), (B, 9e9)], 3600.0, 2, {C: 0.0, H: 0.25, M: 0.25, L: 0.75, B: 0.75}),
        # capped
        ([(H, 1e9)], 3600.0, 1, {C: 0.0, H: 0.0, M: 0.9, L: 0.9, B: 0.9}),
    ],
)
def test_arrival_shares(
    recent: list[tuple[Tier, float]], window_s: float, gpus: int, shares: dict[Tier, float]
) -> None:
    assert arrival_shares(recent, window_s, gpus) == pytest.approx(shares)


def test_shares_stretch_eta_by_tier_but_keep_positions() -> None:
    jobs = [q("h", "high.8g", 0.0, 100.0), q("l", "low.8g", 1.0, 100.0)]
    plain = standings([Device("g", G16, 50.0)], in_submit_order(jobs))
    stretched = standings([Device("g", G16, 50.0)], in_submit_order(jobs), {Tier.LOW: 0.5, Tier.HIGH: 0.0})
    assert table(plain) == {"h": (1, 50.0), "l": (2, 150.0)}
    assert table(stretched) == {"h": (1, 50.0), "l": (2, 300.0)}
