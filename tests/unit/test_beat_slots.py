"""Slots, slot lock keys and the locking scheduler's apply path (routing/slots.py, infra/beat*.py), without Redis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from celery.beat import ScheduleEntry, SchedulingError
from celery.schedules import schedule as celery_interval

from infra.beat import MIN_EXPIRES_S, LockedScheduler
from infra.beat_schedule import SUBMIT_TASK, SlotSchedule, beat_schedule, builtin_entries, describe_plan
from infra.settings import Settings
from routing.cron import parse_cron
from routing.slots import CLOCK_SKEW_S, Every, describe, due, lock_key, lock_ttl_ms, slot_name
from routing.tiers import OPS_QUEUE
from tasks.app import create_app
from tasks.schedule_file import Builtins, parse

pytestmark = pytest.mark.unit


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("seconds", "now", "previous", "following"),
    [
        (2, "2026-03-10 10:00:03.500", "2026-03-10 10:00:02", "2026-03-10 10:00:04"),
        (2, "2026-03-10 10:00:04", "2026-03-10 10:00:04", "2026-03-10 10:00:06"),  # a boundary starts its slot
        (60, "2026-03-10 10:00:59.999", "2026-03-10 10:00:00", "2026-03-10 10:01:00"),
        (86400, "2026-03-10 23:00", "2026-03-10 00:00", "2026-03-11 00:00"),  # a day: midnight UTC
        (1.5, "1970-01-01 00:00:04", "1970-01-01 00:00:03", "1970-01-01 00:00:04.500"),
        (7, "2026-03-10 10:00:00", "2026-03-10 09:59:59", "2026-03-10 10:00:06"),  # aligned to the epoch, not :00
    ],
)
def test_every_is_aligned_to_the_epoch(seconds: float, now: str, previous: str, following: str) -> None:
    slots = Every(seconds)
    assert slots.previous(at(now)) == at(previous)
    assert slots.following(at(now)) == at(following)


def test_two_beats_started_at_different_times_compute_the_same_slot() -> None:
    # Given beats whose clocks read different moments inside one 2 s window
    slots = Every(2)
    early, late = at("2026-03-10 10:00:02.010"), at("2026-03-10 10:00:03.990")
    # Then they name (and lock) the same slot
    assert lock_key("e", slots.previous(early)) == lock_key("e", slots.previous(late))
    assert lock_key("e", slots.previous(late)) != lock_key("e", slots.previous(late + timedelta(seconds=0.02)))


@pytest.mark.parametrize(
    ("entry", "start", "key"),
    [
        ("schedule:nightly", "2026-03-10 02:00", "yoloq:beat:slot:schedule:nightly:2026-03-10T02:00:00Z"),
        ("builtin:gpu_health", "2026-03-10 02:00:01", "yoloq:beat:slot:builtin:gpu_health:2026-03-10T02:00:01Z"),
        ("schedule:x", "1970-01-01 00:00:04.500", "yoloq:beat:slot:schedule:x:1970-01-01T00:00:04.500Z"),
    ],
)
def test_lock_key_names_entry_and_slot(entry: str, start: str, key: str) -> None:
    assert lock_key(entry, at(start)) == key


def test_slot_name_is_utc_whatever_the_zone() -> None:
    plus2 = datetime(2026, 3, 10, 4, 0, tzinfo=UTC).astimezone(__import__("zoneinfo").ZoneInfo("Europe/Berlin"))
    assert slot_name(plus2) == "2026-03-10T04:00:00Z"


@pytest.mark.parametrize(
    ("slots", "start", "ttl_s"),
    [
        (Every(2), "2026-03-10 10:00:02", 2 + CLOCK_SKEW_S),
        (parse_cron("0 2 * * *"), "2026-03-10 02:00", 86400 + CLOCK_SKEW_S),
        (parse_cron("0 9,17 * * *"), "2026-03-10 09:00", 8 * 3600 + CLOCK_SKEW_S),
    ],
)
def test_lock_lives_until_the_next_slot_plus_skew(slots: Any, start: str, ttl_s: float) -> None:
    assert lock_ttl_ms(slots, at(start)) == ttl_s * 1000


@pytest.mark.parametrize(
    ("last", "now", "is_due", "next_s"),
    [
        ("2026-03-10 10:00:00", "2026-03-10 10:00:01", False, 1.0),  # same slot as the last run
        ("2026-03-10 10:00:01.900", "2026-03-10 10:00:02.000", True, 2.0),  # a new slot began
        ("2026-03-10 09:00:00", "2026-03-10 10:00:03", True, 1.0),  # many missed: due once, not once per slot
        ("2026-03-10 10:00:02", "2026-03-10 10:00:02", False, 2.0),  # fired at the boundary already
    ],
)
def test_due(last: str, now: str, is_due: bool, next_s: float) -> None:
    assert due(Every(2), at(last), at(now)) == (is_due, pytest.approx(next_s))


def test_describe() -> None:
    assert describe(Every(60)) == "every 60s"
    assert describe(parse_cron("0 2 * * *")) == "cron 0 2 * * *"

    class Odd:
        def previous(self, now: datetime) -> datetime:
            return now

        def following(self, now: datetime) -> datetime:
            return now

        def __repr__(self) -> str:
            return "<odd>"

    assert describe(Odd()) == "<odd>"


def test_slot_schedule_is_due_follows_the_wall_clock() -> None:
    schedule = SlotSchedule(Every(2))
    schedule.nowfun = lambda: at("2026-03-10 10:00:02.250")  # type: ignore[method-assign]
    assert schedule.is_due(at("2026-03-10 10:00:01.900")) == (True, pytest.approx(1.75))
    assert schedule.is_due(at("2026-03-10 10:00:02.100")) == (False, pytest.approx(1.75))
    assert schedule.is_due(datetime(2026, 3, 10, 10, 0, 1)) == (True, pytest.approx(1.75))  # naive = UTC
    assert schedule.remaining_estimate(at("2026-03-10 10:00:00")) == timedelta(seconds=1.75)
    assert schedule.current_slot() == at("2026-03-10 10:00:02")
    assert repr(schedule) == "<SlotSchedule every 2s>"
    assert schedule == SlotSchedule(Every(2)) and schedule != SlotSchedule(Every(3)) and schedule != "x"
    assert hash(schedule) == hash(SlotSchedule(Every(2)))
    assert schedule.__reduce__() == (SlotSchedule, (Every(2),))


class SharedRedis:
    """SET NX semantics of the slot keys, shared by several schedulers as one Redis would be."""

    def __init__(self) -> None:
        self.keys: dict[str, str] = {}
        self.ttls: dict[str, int] = {}

    def take_slot(self, key: str, holder: str, ttl_ms: int) -> bool:
        if key in self.keys:
            return False
        self.keys[key], self.ttls[key] = holder, ttl_ms
        return True

    def slot_holder(self, key: str) -> str | None:
        return self.keys.get(key)


class RecordingScheduler(LockedScheduler):
    """The real apply path with the publish replaced by a record of what would be sent."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.sent: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        super().__init__(*args, **kwargs)

    def send_task(self, name: str, args: Any, kwargs: dict[str, Any], **options: Any) -> str:
        self.sent.append((name, kwargs, options))
        return "sent"


@pytest.fixture
def app():
    return create_app(Settings(redis_url="redis://127.0.0.1:1/0"))


def _entry(app, every: float, now: datetime) -> ScheduleEntry:
    schedule = SlotSchedule(Every(every), app=app)
    schedule.nowfun = lambda: now  # type: ignore[method-assign]
    return ScheduleEntry(
        name="schedule:probe",
        task=SUBMIT_TASK,
        schedule=schedule,
        kwargs={"entry": "probe", "spec": {"kind": "probe"}},
        options={"queue": OPS_QUEUE},
        app=app,
    )


def test_only_one_of_two_schedulers_sends_each_slot(app) -> None:
    # Given two beats that share one Redis
    redis = SharedRedis()
    beats = [RecordingScheduler(app=app, state=redis, lazy=True) for _ in range(2)]
    beats[1].identity = "other:2"
    # When both try to send the same entry in each of three slots
    for second in (2, 4, 6):
        now = at(f"2026-03-10 10:00:0{second}.010")
        for beat in beats:
            beat.apply_async(_entry(app, 2, now), advance=False)
    # Then each slot was sent exactly once, by whichever beat came first, with the slot's name
    sent = [kw["slot"] for beat in beats for _, kw, _ in beat.sent]
    assert sorted(sent) == ["2026-03-10T10:00:02Z", "2026-03-10T10:00:04Z", "2026-03-10T10:00:06Z"]
    assert not beats[1].sent
    assert redis.ttls["yoloq:beat:slot:schedule:probe:2026-03-10T10:00:02Z"] == (2 + CLOCK_SKEW_S) * 1000


def test_send_carries_queue_slot_and_expiry(app) -> None:
    beat = RecordingScheduler(app=app, state=SharedRedis(), lazy=True)
    beat.apply_async(_entry(app, 2, at("2026-03-10 10:00:02.5")), advance=False)
    name, kwargs, options = beat.sent[0]
    assert name == SUBMIT_TASK
    assert kwargs == {"entry": "probe", "spec": {"kind": "probe"}, "slot": "2026-03-10T10:00:02Z"}
    assert options["queue"] == OPS_QUEUE and options["expires"] == MIN_EXPIRES_S
    assert options["headers"] == {"celery_beat_task": True}
    daily = _entry(app, 86400, at("2026-03-10 10:00:00"))
    beat.apply_async(daily, advance=False)
    assert beat.sent[1][2]["expires"] == 86400


def test_advance_reserves_the_entry_and_a_foreign_schedule_is_refused(app) -> None:
    beat = RecordingScheduler(app=app, state=SharedRedis(), lazy=True)
    beat.schedule = {}
    entry = _entry(app, 2, at("2026-03-10 10:00:02.5"))
    beat.schedule[entry.name] = entry
    beat.apply_async(entry)  # advance=True: the entry's run count moves on
    assert beat.schedule[entry.name].total_run_count == 1
    plain = ScheduleEntry(name="x", task="t", schedule=celery_interval(5), app=app)
    with pytest.raises(SchedulingError, match="locks only SlotSchedule entries"):
        beat.apply_async(plain)


def test_builtin_entries_follow_the_schedule_file() -> None:
    # Given defaults, then a file that switches the SLA report off and moves GC to a cron
    assert set(builtin_entries(Builtins())) == {"builtin:checkpoint_gc", "builtin:sla_report", "builtin:gpu_health"}
    plan = parse({
        "builtin": {"sla_report": {"enabled": False}, "checkpoint_gc": {"cron": "0 3 * * *", "keep_last": 5}},
        "schedules": {"p": {"every": 30, "job": {"kind": "probe", "team": "ops"}},
                      "off": {"every": 30, "enabled": False, "job": {"kind": "probe", "team": "ops"}}},
    })  # fmt: skip
    entries = beat_schedule(plan)
    # Then the entries say so, and the recurring job's spec travels as JSON kwargs
    assert set(entries) == {"builtin:checkpoint_gc", "builtin:gpu_health", "schedule:p"}
    assert entries["builtin:checkpoint_gc"]["kwargs"] == {"keep_last": 5, "finished_days": 30.0}
    assert repr(entries["builtin:checkpoint_gc"]["schedule"]) == "<SlotSchedule cron 0 3 * * *>"
    assert entries["schedule:p"]["kwargs"]["spec"]["kind"] == "probe"
    assert entries["schedule:p"]["kwargs"]["spec"]["name"] == "p"
    assert all(e["options"] == {"queue": OPS_QUEUE} for e in entries.values())
    listed = describe_plan(plan, at("2026-03-10 10:00:10"))
    assert [e["entry"] for e in listed] == sorted(entries)
    assert listed[-1]["next"] == "2026-03-10T10:00:30Z"
