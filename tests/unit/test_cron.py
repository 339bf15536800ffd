"""routing/cron.py: strict parsing with one-line errors, and the previous/next occurrence of an expression (UTC)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from routing.cron import MACROS, CronError, parse_cron

pytestmark = pytest.mark.unit


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("expr", "field", "expected"),
    [
        ("* * * * *", "minutes", tuple(range(60))),
        ("*/15 * * * *", "minutes", (0, 15, 30, 45)),
        ("5/20 * * * *", "minutes", (5, 25, 45)),  # a/n: from a to the end in steps of n
        ("1-5/2 * * * *", "minutes", (1, 3, 5)),
        ("0,30,15 * * * *", "minutes", (0, 15, 30)),
        ("0 9-17 * * *", "hours", tuple(range(9, 18))),
        ("0 0 1,15 * *", "days", frozenset({1, 15})),
        ("0 0 * jan-mar,DEC *", "months", frozenset({1, 2, 3, 12})),
        ("0 0 * * mon-fri", "weekdays", frozenset({1, 2, 3, 4, 5})),
        ("0 0 * * 7", "weekdays", frozenset({0})),  # 7 is Sunday too
        ("0 0 * * 5-7", "weekdays", frozenset({5, 6, 0})),
        ("@daily", "hours", (0,)),
        ("  @HOURLY ", "minutes", (0,)),
    ],
)
def test_parse_fields(expr: str, field: str, expected: object) -> None:
    assert getattr(parse_cron(expr), field) == expected


@pytest.mark.parametrize("macro", sorted(MACROS))
def test_every_macro_parses(macro: str) -> None:
    assert parse_cron(macro).text == macro


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("* * * *", "expected 5 fields (minute hour day-of-month month day-of-week), got 4"),
        ("* * * * * *", "got 6"),
        ("", "got 0"),
        ("60 * * * *", "minute field: 60 is out of range 0-59"),
        ("0 24 * * *", "hour field: 24 is out of range 0-23"),
        ("0 0 0 * *", "day-of-month field: 0 is out of range 1-31"),
        ("0 0 * 13 *", "month field: 13 is out of range 1-12"),
        ("0 0 * * 8", "day-of-week field: 8 is out of range 0-7"),
        ("x * * * *", "minute field: 'x' is not a number"),
        ("0 0 * foo *", "month field: 'foo' is not a number or a name"),
        ("0 0 * * funday", "day-of-week field: 'funday' is not a number or a name"),
        ("*/0 * * * *", "minute field: step '0' in '*/0' is not a positive number"),
        ("*/x * * * *", "step 'x'"),
        ("10-5 * * * *", "minute field: range '10-5' runs backwards"),
        ("1,,2 * * * *", "minute field: empty item in '1,,2'"),
        ("-1 * * * *", "'' is not a number"),
        ("@fortnightly", "unknown macro '@fortnightly'"),
        ("0 0 30 2 *", "never fires: no month in it has day 30"),
        ("0 0 31 4,6 *", "never fires"),
    ],
)
def test_invalid_expressions_say_which_field(expr: str, message: str) -> None:
    with pytest.raises(CronError, match=None) as err:
        parse_cron(expr)
    assert message in str(err.value)


def test_feb_29_is_valid_and_or_rule_allows_impossible_day_with_weekday() -> None:
    assert parse_cron("0 0 29 2 *").days == frozenset({29})
    parse_cron("0 0 30 2 1")  # OR rule: fires on Mondays in February, so it is valid


@pytest.mark.parametrize(
    ("expr", "now", "previous", "following"),
    [
        ("0 2 * * *", "2026-03-10 02:00:00", "2026-03-10 02:00", "2026-03-11 02:00"),  # exactly at an occurrence
        ("0 2 * * *", "2026-03-10 01:59:59", "2026-03-09 02:00", "2026-03-10 02:00"),
        ("0 2 * * *", "2026-03-10 02:00:30", "2026-03-10 02:00", "2026-03-11 02:00"),  # seconds are ignored
        ("*/15 * * * *", "2026-03-10 10:07:00", "2026-03-10 10:00", "2026-03-10 10:15"),
        ("*/15 * * * *", "2026-03-10 23:59:00", "2026-03-10 23:45", "2026-03-11 00:00"),
        ("30 9,17 * * *", "2026-03-10 12:00:00", "2026-03-10 09:30", "2026-03-10 17:30"),
        ("30 9,17 * * *", "2026-03-10 09:10:00", "2026-03-09 17:30", "2026-03-10 09:30"),
        ("0 0 1 * *", "2026-03-15 00:00:00", "2026-03-01 00:00", "2026-04-01 00:00"),
        ("0 0 31 * *", "2026-03-15 00:00:00", "2026-01-31 00:00", "2026-03-31 00:00"),  # Feb has no 31st
        ("0 0 29 2 *", "2026-03-01 00:00:00", "2024-02-29 00:00", "2028-02-29 00:00"),  # leap years only
        ("0 0 * * sun", "2026-03-11 12:00:00", "2026-03-08 00:00", "2026-03-15 00:00"),  # 2026-03-11 is a Wed
        ("0 0 1 * mon", "2026-03-11 12:00:00", "2026-03-09 00:00", "2026-03-16 00:00"),  # OR: 1st or Monday
        # A field starting with * → AND: days 1/11/21/31 that are Mondays.
        ("0 0 */10 * mon", "2026-03-11 12:00:00", "2025-12-01 00:00", "2026-05-11 00:00"),
        ("59 23 31 12 *", "2026-06-01 00:00:00", "2025-12-31 23:59", "2026-12-31 23:59"),
        ("0 0 1 1 *", "2026-01-01 00:00:00", "2026-01-01 00:00", "2027-01-01 00:00"),
    ],
)
def test_previous_and_following(expr: str, now: str, previous: str, following: str) -> None:
    cron = parse_cron(expr)
    assert cron.previous(at(now)) == at(previous)
    assert cron.following(at(now)) == at(following)


def test_times_in_another_zone_are_read_as_utc() -> None:
    cron = parse_cron("0 2 * * *")
    cet = timezone(timedelta(hours=1))
    # 03:30 in UTC+1 is 02:30 UTC: the 02:00 UTC occurrence has passed.
    assert cron.previous(datetime(2026, 3, 10, 3, 30, tzinfo=cet)) == at("2026-03-10 02:00")
    assert cron.following(datetime(2026, 3, 10, 2, 30, tzinfo=cet)) == at("2026-03-10 02:00")


def test_fires_on_checks_month_first() -> None:
    cron = parse_cron("0 0 * 6 *")
    assert not cron.fires_on(at("2026-05-01 00:00").date())
    assert cron.fires_on(at("2026-06-01 00:00").date())


def test_a_cron_that_cannot_fire_within_the_horizon_raises_instead_of_looping() -> None:
    # Parsing refuses such expressions; a hand-built one must still not loop forever.
    cron = parse_cron("0 0 * * *")
    never = type(cron)(cron.text, cron.minutes, cron.hours, frozenset({31}), frozenset({2}), frozenset(), True)
    with pytest.raises(CronError, match="no occurrence in the 8 years before"):
        never.previous(at("2026-01-01 00:00"))
    with pytest.raises(CronError, match="no occurrence in the 8 years after"):
        never.following(at("2026-01-01 00:00"))
