"""Due slots of a recurring schedule, and the lock key that lets exactly one beat send each slot (pure).

A *slot* is one occurrence of a schedule, named by its start time in UTC: for ``every N seconds`` the windows
``[k·N, (k+1)·N)`` counted from the Unix epoch, for a cron expression each minute it matches. Every beat computes the
same slot from its own clock, so two beats that fire the same entry within one slot compete for the same key
(``SET key NX PX ttl`` in Redis) and only one wins. Slots are wall-clock aligned rather than counted from when a beat
started, which is what makes the keys of two beats agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from routing.cron import Cron

LOCK_PREFIX = "yoloq:beat:slot:"
# A slot's key outlives the slot by this much, so a beat whose clock lags by up to a minute still finds it taken.
CLOCK_SKEW_S = 60.0


class Slots(Protocol):
    """A recurring schedule: the slot a moment falls in, and the next one."""

    def previous(self, now: datetime) -> datetime:
        """Start of the latest slot at or before ``now``."""

    def following(self, now: datetime) -> datetime:
        """Start of the earliest slot strictly after ``now``."""


@dataclass(frozen=True, slots=True)
class Every:
    """Every ``seconds`` (at least 1), aligned to the Unix epoch: ``every: 86400`` fires at 00:00 UTC."""

    seconds: float

    def previous(self, now: datetime) -> datetime:
        """Start of the window holding ``now``."""
        index = math.floor(now.timestamp() / self.seconds)
        return datetime.fromtimestamp(index * self.seconds, UTC)

    def following(self, now: datetime) -> datetime:
        """Start of the window after the one holding ``now``."""
        return self.previous(now) + timedelta(seconds=self.seconds)


def describe(slots: Slots) -> str:
    """How an operator wrote it: ``every 60s`` or ``cron 0 2 * * *``."""
    if isinstance(slots, Cron):
        return f"cron {slots.text}"
    if isinstance(slots, Every):
        return f"every {slots.seconds:g}s"
    return repr(slots)


def due(slots: Slots, last_run_at: datetime, now: datetime) -> tuple[bool, float]:
    """Whether a slot began after the last run, and the seconds until the next slot begins."""
    remaining = max((slots.following(now) - now).total_seconds(), 0.0)
    return slots.previous(now) > last_run_at, remaining


def slot_name(start: datetime) -> str:
    """ISO-8601 UTC name of a slot (milliseconds only when the slot does not start on a whole second)."""
    start = start.astimezone(UTC)
    spec = "seconds" if start.microsecond == 0 else "milliseconds"
    return start.isoformat(timespec=spec).replace("+00:00", "Z")


def lock_key(entry: str, start: datetime) -> str:
    """The Redis key that one beat takes to send ``entry`` for the slot starting at ``start``."""
    return f"{LOCK_PREFIX}{entry}:{slot_name(start)}"


def lock_ttl_ms(slots: Slots, start: datetime) -> int:
    """How long the slot's key lives: until the next slot begins, plus the clock skew allowed between beats."""
    return math.ceil(((slots.following(start) - start).total_seconds() + CLOCK_SKEW_S) * 1000)
