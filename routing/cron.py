"""Five-field cron expressions (UTC), parsed strictly and walked in both directions without reading the clock.

Fields are ``minute hour day-of-month month day-of-week`` with ``*``, numbers, ``a-b`` ranges, ``/n`` steps, comma
lists, month names (``jan``) and weekday names (``sun``; 0 and 7 are Sunday), plus the macros ``@hourly``,
``@daily``, ``@weekly``, ``@monthly`` and ``@yearly``. Day-of-month and day-of-week combine as in Vixie cron: when
either field starts with ``*`` both must match, otherwise either may. An expression that can never fire (``0 0 30
2 *``) is rejected, so :meth:`Cron.previous` and :meth:`Cron.following` always find an occurrence.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_abbr) if name}
_DAYS = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
# (name, lowest, highest, names); day-of-week accepts 7 as Sunday and folds it to 0.
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day-of-month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 0, 7, _DAYS),
)
# Feb 29 fires once in 4 years (8 across a skipped leap year such as 2100): every valid expression fires within this.
_HORIZON_DAYS = 366 * 8 + 1


class CronError(ValueError):
    """A cron expression is malformed or can never fire; the message names the field and the value."""


@dataclass(frozen=True, slots=True)
class Cron:
    """A parsed expression: the allowed values of each field, and whether day fields use Vixie's AND rule."""

    text: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    both_days: bool

    def fires_on(self, day: date) -> bool:
        """Whether the expression has occurrences on this calendar day."""
        if day.month not in self.months:
            return False
        dom = day.day in self.days
        dow = day.isoweekday() % 7 in self.weekdays
        return (dom and dow) if self.both_days else (dom or dow)

    def previous(self, now: datetime) -> datetime:
        """The latest occurrence at or before ``now`` (aware UTC)."""
        now = now.astimezone(UTC).replace(second=0, microsecond=0)
        day = now.date()
        for _ in range(_HORIZON_DAYS):
            if self.fires_on(day):
                at = self._last_in_day(day, now if day == now.date() else None)
                if at is not None:
                    return at
            day -= timedelta(days=1)
        raise CronError(f"cron {self.text!r} has no occurrence in the 8 years before {now.isoformat()}")

    def following(self, now: datetime) -> datetime:
        """The earliest occurrence strictly after ``now`` (aware UTC)."""
        start = now.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        day = start.date()
        for _ in range(_HORIZON_DAYS):
            if self.fires_on(day):
                at = self._first_in_day(day, start if day == start.date() else None)
                if at is not None:
                    return at
            day += timedelta(days=1)
        raise CronError(f"cron {self.text!r} has no occurrence in the 8 years after {now.isoformat()}")

    def _last_in_day(self, day: date, upto: datetime | None) -> datetime | None:
        for hour in reversed(self.hours):
            if upto is not None and hour > upto.hour:
                continue
            limit = upto.minute if upto is not None and hour == upto.hour else 59
            minute = next((m for m in reversed(self.minutes) if m <= limit), None)
            if minute is not None:
                return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)
        return None

    def _first_in_day(self, day: date, since: datetime | None) -> datetime | None:
        for hour in self.hours:
            if since is not None and hour < since.hour:
                continue
            floor = since.minute if since is not None and hour == since.hour else 0
            minute = next((m for m in self.minutes if m >= floor), None)
            if minute is not None:
                return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)
        return None


def _number(token: str, name: str, low: int, high: int, names: dict[str, int]) -> int:
    value = names.get(token.lower()) if names else None
    if value is None:
        if not token.isdigit():
            raise CronError(f"{name} field: {token!r} is not a number" + (" or a name" if names else ""))
        value = int(token)
    if not low <= value <= high:
        raise CronError(f"{name} field: {value} is out of range {low}-{high}")
    return value


def _part(part: str, name: str, low: int, high: int, names: dict[str, int]) -> set[int]:
    """One comma-separated item: ``*``, ``n``, ``a-b``, each optionally with ``/step``."""
    base, slash, step_text = part.partition("/")
    step = 1
    if slash:
        if not step_text.isdigit() or int(step_text) == 0:
            raise CronError(f"{name} field: step {step_text!r} in {part!r} is not a positive number")
        step = int(step_text)
    if base == "*":
        first, last = low, high
    elif "-" in base:
        a, _, b = base.partition("-")
        first, last = _number(a, name, low, high, names), _number(b, name, low, high, names)
        if first > last:
            raise CronError(f"{name} field: range {base!r} runs backwards")
    else:
        first = _number(base, name, low, high, names)
        last = high if slash else first
    return set(range(first, last + 1, step))


def _field(text: str, name: str, low: int, high: int, names: dict[str, int]) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise CronError(f"{name} field: empty item in {text!r}")
        values |= _part(part, name, low, high, names)
    return frozenset(values)


def _can_fire(days: frozenset[int], months: frozenset[int], weekdays: frozenset[int], both: bool) -> bool:
    longest = max(calendar.monthrange(2024, m)[1] for m in months)  # 2024 is a leap year: Feb has 29 days
    has_day = min(days) <= longest
    return (has_day and bool(weekdays)) if both else (has_day or bool(weekdays))


def parse_cron(text: str) -> Cron:
    """Parse a five-field expression or a macro; CronError says which field is wrong and why."""
    expanded = MACROS.get(text.strip().lower(), text) if text.strip().startswith("@") else text
    if expanded.strip().startswith("@"):
        raise CronError(f"unknown macro {text.strip()!r}; known: {', '.join(MACROS)}")
    parts = expanded.split()
    if len(parts) != 5:
        raise CronError(f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(parts)}")
    fields = [_field(p, *spec) for p, spec in zip(parts, _FIELDS, strict=True)]
    minutes, hours, days, months, weekdays = fields
    weekdays = frozenset(d % 7 for d in weekdays)
    both = parts[2].startswith("*") or parts[4].startswith("*")
    if not _can_fire(days, months, weekdays, both):
        raise CronError(f"{text.strip()!r} never fires: no month in it has day {min(days)}")
    return Cron(text.strip(), tuple(sorted(minutes)), tuple(sorted(hours)), days, months, weekdays, both)
