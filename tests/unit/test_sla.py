"""routing/sla.py: nearest-rank percentiles and compliance with a tier's target."""

from __future__ import annotations

import pytest

from routing.sla import DEFAULT_TARGETS, SlaTarget, history, percentile, summarize
from routing.tiers import TIERS, Tier

pytestmark = pytest.mark.unit

HUNDRED = [float(v) for v in range(1, 101)]


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 0.5, None),
        ([], 0.0, None),
        ([7.0], 0.0, 7.0),
        ([7.0], 0.5, 7.0),
        ([7.0], 0.99, 7.0),
        ([1.0, 2.0, 3.0, 4.0], 0.5, 2.0),  # nearest rank: ceil(0.5 × 4) = 2, no interpolation
        ([4.0, 1.0, 3.0, 2.0], 0.75, 3.0),  # unsorted input
        ([4.0, 1.0, 3.0, 2.0], 0.76, 4.0),
        ([4.0, 1.0, 3.0, 2.0], 1.0, 4.0),
        ([5.0, 1.0], 0.0, 1.0),  # q = 0 is the minimum, never rank 0
        ([1.0, 2.0, 3.0], 0.34, 2.0),
        ([1.0, 2.0, 3.0], 0.33, 1.0),
        (HUNDRED, 0.5, 50.0),
        (HUNDRED, 0.95, 95.0),
        (HUNDRED, 0.99, 99.0),
        (HUNDRED, 1.0, 100.0),
        (list(reversed(HUNDRED)), 0.95, 95.0),
        ([3.0, 3.0, 3.0, 10.0], 0.75, 3.0),  # duplicates
    ],
)
def test_percentile_nearest_rank(values: list[float], q: float, expected: float | None) -> None:
    assert percentile(values, q) == expected


@pytest.mark.parametrize("pct", range(1, 101))
def test_percentile_rank_is_exact_despite_float_products(pct: int) -> None:
    # 0.07 × 100 == 7.000000000000001 in floats: the rank must still be 7, not 8
    assert percentile(HUNDRED, pct / 100) == float(pct)
    assert percentile(HUNDRED * 2, pct / 100) == float(pct)


def test_percentile_does_not_reorder_its_input() -> None:
    values = [3.0, 1.0, 2.0]
    percentile(values, 0.5)
    assert values == [3.0, 1.0, 2.0]


def test_no_data_counts_as_compliant() -> None:
    doc = summarize([], SlaTarget(0.95, 1800))
    assert doc == {
        "count": 0,
        "waiting_past_target": 0,
        "p50_s": None,
        "p95_s": None,
        "p99_s": None,
        "target_quantile": 0.95,
        "target_s": 1800,
        "within_target": None,
        "compliant": True,
    }


@pytest.mark.parametrize(
    ("within", "compliant"),
    [(100, True), (96, True), (95, True), (94, False), (50, False), (0, False)],
)
def test_compliance_at_q_095(within: int, compliant: bool) -> None:
    times = [60.0] * within + [1801.0] * (100 - within)
    doc = summarize(times, SlaTarget(0.95, 1800))
    assert doc["count"] == 100
    assert doc["within_target"] == pytest.approx(within / 100)
    assert doc["compliant"] is compliant


def test_a_start_exactly_at_the_target_counts_as_within() -> None:
    doc = summarize([1800.0] * 95 + [1800.001] * 5, SlaTarget(0.95, 1800))
    assert doc["within_target"] == 0.95
    assert doc["compliant"] is True


@pytest.mark.parametrize(("late", "compliant"), [(5, True), (6, False)])
def test_critical_target_is_95_percent_within_30_minutes(late: int, compliant: bool) -> None:
    times = [60.0] * (100 - late) + [1801.0] * late
    doc = summarize(times, DEFAULT_TARGETS[Tier.CRITICAL])
    assert doc["compliant"] is compliant
    assert doc["p50_s"] == 60.0
    assert doc["target_s"] == 1800
    assert doc["target_quantile"] == 0.95


def test_summary_percentiles() -> None:
    doc = summarize(list(reversed(HUNDRED)), SlaTarget(0.9, 90))
    assert (doc["p50_s"], doc["p95_s"], doc["p99_s"]) == (50.0, 95.0, 99.0)
    assert doc["within_target"] == 0.9
    assert doc["compliant"] is True


def test_one_late_job_out_of_one_is_not_compliant() -> None:
    doc = summarize([3600.0], DEFAULT_TARGETS[Tier.CRITICAL])
    assert doc["within_target"] == 0.0
    assert doc["compliant"] is False


def test_every_tier_has_a_target() -> None:
    assert set(DEFAULT_TARGETS) == set(TIERS)
    for target in DEFAULT_TARGETS.values():
        assert 0 < target.quantile <= 1
        assert target.within_s > 0


def test_targets_get_looser_with_lower_tiers() -> None:
    limits = [DEFAULT_TARGETS[t].within_s for t in TIERS]
    assert limits == sorted(limits)
    assert DEFAULT_TARGETS[Tier.CRITICAL] == SlaTarget(0.95, 30 * 60)


def test_history_buckets_by_start_time_with_the_share_within_target() -> None:
    target = SlaTarget(0.95, 60)
    now = 10 * 3600.0
    samples = [(now - 30, 10.0), (now - 40, 100.0), (now - 3 * 3600 + 5, 5.0), (now - 30 * 3600, 1.0), (now + 1, 1.0)]
    rows = history(samples, target, now, bucket_s=3600, buckets=4)
    assert [r["start"] for r in rows] == [now - 4 * 3600, now - 3 * 3600, now - 2 * 3600, now - 3600]
    assert [(r["count"], r["within_target"]) for r in rows] == [(0, None), (1, 1.0), (0, None), (2, 0.5)]


@pytest.mark.parametrize(
    ("started", "waiting", "count", "late", "share", "compliant"),
    [
        # Issue 15 item 9b: a job waiting past the target is a miss now, not when it starts
        ([], [1860.0], 0, 1, 0.0, False),
        ([], [60.0, 1799.0], 0, 0, None, True),  # still inside the target: not counted yet
        ([10.0] * 19, [1801.0], 19, 1, 0.95, True),
        ([10.0] * 18, [1801.0, 5000.0], 18, 2, 0.9, False),
        ([10.0, 3600.0], [], 2, 0, 0.5, False),
    ],
)
def test_jobs_waiting_past_the_target_count_as_misses(started, waiting, count, late, share, compliant) -> None:
    doc = summarize(started, SlaTarget(0.95, 1800), waiting)
    assert (doc["count"], doc["waiting_past_target"], doc["within_target"], doc["compliant"]) == (
        count, late, share, compliant,
    )  # fmt: skip


def test_an_overdue_wait_enters_the_percentiles_as_a_lower_bound() -> None:
    doc = summarize([5.0], SlaTarget(0.95, 1800), [7200.0, 60.0])
    assert (doc["p50_s"], doc["p99_s"]) == (5.0, 7200.0)
