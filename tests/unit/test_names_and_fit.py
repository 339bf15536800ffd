"""routing.names (what a team name and a job label may hold) and routing.fleet_fit (a job no GPU can hold)."""

from __future__ import annotations

import pytest

from routing.fleet_fit import SEEN_WINDOW_S, largest_seen, too_big
from routing.names import LABEL_MAX, label_problem, team_problem

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("team", ["a", "vision", "team-1", "ml_ops", "0team", "a" * 63])
def test_slug_team_names_are_accepted(team: str) -> None:
    assert team_problem(team) is None


@pytest.mark.parametrize(
    "team", ["", "Bad Team", "Vision", "-x", "_x", "a" * 64, "vision\n", "ré", "a.b", "a/b", "a:b", "team\u200b"]
)
def test_other_team_names_are_refused_with_the_rule(team: str) -> None:
    problem = team_problem(team)
    assert problem is not None and "a-z 0-9 - _" in problem


def test_a_refused_team_name_is_quoted_short() -> None:
    problem = team_problem("x" * 10_000)
    assert problem is not None and len(problem) < 200


@pytest.mark.parametrize("label", ["", "coco m", "Grüße 🚀", "x" * LABEL_MAX])
def test_printable_labels_are_accepted(label: str) -> None:
    assert label_problem(label) is None


@pytest.mark.parametrize(
    ("label", "says"),
    [
        ("x" * (LABEL_MAX + 1), "at most 128"),
        ("two\nlines", "printable"),
        ("tab\there", "printable"),
        ("bell\x07", "printable"),
        ("evil\u202ecod.exe", "printable"),  # a bidi override disguises what an operator reads
        ("zero\u200bwidth", "printable"),
        ("del\x7f", "printable"),
    ],
)
def test_unprintable_or_long_labels_are_refused(label: str, says: str) -> None:
    problem = label_problem(label)
    assert problem is not None and says in problem


@pytest.mark.parametrize(
    ("need", "largest", "refused"),
    [(1024, 0, False), (10**6, 0, False), (40_960, 40_960, False), (40_961, 40_960, True), (102_400, 40_960, True)],
)
def test_too_big_only_when_the_fleet_is_known_and_smaller(need: int, largest: int, refused: bool) -> None:
    reason = too_big(need, largest)
    assert (reason is not None) is refused
    if reason:
        assert f"needs {need} MiB" in reason and f"has {largest} MiB" in reason


def test_too_big_says_where_the_largest_gpu_was_seen() -> None:
    assert too_big(2048, 1024, "running now") == (
        "needs 2048 MiB of GPU memory; the largest GPU running now has 1024 MiB"
    )


def test_the_largest_size_seen_within_the_window_counts_and_older_ones_do_not() -> None:
    now = 1_000_000.0
    seen = {16_384: now - 10, 81_920: now - SEEN_WINDOW_S, 143_360: now - SEEN_WINDOW_S - 1}
    # A pool scaled to zero a day ago still counts; one gone for longer does not
    assert largest_seen(seen, now) == 81_920
    assert largest_seen(seen, now, window_s=60) == 16_384
    assert largest_seen({}, now) == 0
    assert largest_seen({40_960: now - 7200}, now, window_s=3600) == 0
