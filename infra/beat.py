"""Celery beat's scheduler for yoloq: Celery's in-memory scheduler plus a Redis lock per entry and due slot.

Guarantee (docs/operations.md "Schedules (beat)"): however many beats run, for each entry and each slot (an aligned
``every`` window or a cron minute, ``routing.slots``) at most one beat sends the entry's task: the sender first wins
``SET yoloq:beat:slot:{entry}:{slot} NX PX`` (until the next slot + 60 s). While at least one beat is running and
reaches Redis, every slot is sent; a beat that dies right after winning a slot loses that one slot. There is no
leader to elect: every beat tries every slot, so when one dies the next slot is sent by another without waiting for
a lease to expire.

The scheduler keeps no schedule file: Celery's default PersistentScheduler stores its state with ``shelve`` (pickle),
and the slot keys in Redis already say what was sent. A beat that starts fires each entry from its next slot on.
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import datetime
from typing import Any

from celery.beat import ScheduleEntry, Scheduler, SchedulingError

from infra.beat_schedule import SlotSchedule
from infra.beat_state import BeatState
from infra.redis_client import connect
from routing.slots import lock_key, lock_ttl_ms, slot_name

log = logging.getLogger("yoloq.beat")
MIN_EXPIRES_S = 60.0


def identity() -> str:
    """How a beat names itself in the slot keys it wins: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


class LockedScheduler(Scheduler):
    """Sends an entry only after winning its slot's lock in Redis, so two beats never both send one slot."""

    def __init__(self, *args: Any, state: BeatState | None = None, **kwargs: Any) -> None:
        self._state = state
        self.identity = identity()
        super().__init__(*args, **kwargs)

    @property
    def state(self) -> BeatState:
        """The Redis adapter, connected on first use (in the beat process, after any fork)."""
        if self._state is None:
            from infra.settings import load_settings

            settings = load_settings()
            self._state = BeatState(connect(settings.redis_url, settings.broker_timeout_s), settings.redis_url)
        return self._state

    def apply_async(self, entry: ScheduleEntry, producer: Any = None, advance: bool = True, **kwargs: Any) -> Any:
        """Win the slot, then send the task with the slot's name; a lost slot sends nothing."""
        schedule = entry.schedule
        if not isinstance(schedule, SlotSchedule):
            raise SchedulingError(f"entry {entry.name}: yoloq beat locks only SlotSchedule entries, got {schedule!r}")
        start = schedule.current_slot()
        key = lock_key(str(entry.name), start)
        if not self.state.take_slot(key, self.identity, lock_ttl_ms(schedule.slots, start)):
            log.info("beat: %s slot %s already sent by %s", entry.name, slot_name(start), self.state.slot_holder(key))
            return None
        if advance:
            entry = self.reserve(entry)  # type: ignore[assignment]
        log.info("beat: sending %s slot %s (%s)", entry.name, slot_name(start), self.identity)
        return self.send_task(
            entry.task, (), {**(entry.kwargs or {}), "slot": slot_name(start)}, producer=producer,
            **{**(entry.options or {}), "expires": _expires_s(schedule, start), "headers": {"celery_beat_task": True}},
        )  # fmt: skip


def _expires_s(schedule: SlotSchedule, start: datetime) -> float:
    """A send not started by the next slot is dropped (the next one replaces it), but never sooner than a minute."""
    return max((schedule.slots.following(start) - start).total_seconds(), MIN_EXPIRES_S)
