"""Celery beat entries for yoloq: the built-in maintenance schedules and the schedule file's recurring jobs.

Every entry uses :class:`SlotSchedule`, whose slots are wall-clock aligned (``routing.slots``), and goes to the
``yoloq.ops`` queue that each ``yoloq beat`` process consumes itself. Entry names are ``builtin:<name>`` and
``schedule:<name>``; they are part of the slot lock keys, so renaming an entry re-arms it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from celery import Celery
from celery.schedules import BaseSchedule, schedstate

from routing.slots import Slots, describe, due
from routing.tiers import OPS_QUEUE
from tasks.schedule_file import Builtins, SchedulePlan

SUBMIT_TASK = "yoloq.ops.submit"
GC_TASK = "yoloq.ops.checkpoint_gc"
SLA_TASK = "yoloq.ops.sla_report"
HEALTH_TASK = "yoloq.ops.gpu_health"


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SlotSchedule(BaseSchedule):
    """A Celery schedule over wall-clock slots: due once a slot begins after the entry's last run."""

    def __init__(self, slots: Slots, app: Celery | None = None) -> None:
        super().__init__(nowfun=_utc_now, app=app)
        self.slots = slots

    def is_due(self, last_run_at: datetime) -> schedstate:
        """Due when a slot started after ``last_run_at``; the next check is when the next slot starts."""
        is_due, next_s = due(self.slots, self.maybe_make_aware(last_run_at), self.now())
        return schedstate(is_due, next_s)

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        """Time until the next slot begins (what `celery beat` shows)."""
        now = self.now()
        return self.slots.following(now) - now

    def current_slot(self) -> datetime:
        """Start of the slot the clock is in now: the slot a send is for."""
        return self.slots.previous(self.now())

    def __repr__(self) -> str:
        return f"<SlotSchedule {describe(self.slots)}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SlotSchedule) and other.slots == self.slots

    def __hash__(self) -> int:
        return hash(self.slots)

    def __reduce__(self) -> tuple[Any, ...]:
        return self.__class__, (self.slots,)


def _entry(task: str, slots: Slots, kwargs: dict[str, Any]) -> dict[str, Any]:
    return {"task": task, "schedule": SlotSchedule(slots), "kwargs": kwargs, "options": {"queue": OPS_QUEUE}}


def builtin_entries(builtin: Builtins) -> dict[str, dict[str, Any]]:
    """The enabled built-in schedules: checkpoint GC, the SLA report, the GPU health check."""
    gc, sla, health = builtin.checkpoint_gc, builtin.sla_report, builtin.gpu_health
    entries = {
        "builtin:checkpoint_gc": (gc, GC_TASK, {"keep_last": gc.keep_last, "finished_days": gc.finished_days}),
        "builtin:sla_report": (sla, SLA_TASK, {"window_hours": sla.window_hours}),
        "builtin:gpu_health": (health, HEALTH_TASK, {
            "max_temperature_c": health.max_temperature_c, "max_uncorrected_ecc": health.max_uncorrected_ecc}),
    }  # fmt: skip
    return {name: _entry(task, cfg.slots(), kw) for name, (cfg, task, kw) in entries.items() if cfg.enabled}


def beat_schedule(plan: SchedulePlan) -> dict[str, dict[str, Any]]:
    """Celery's ``beat_schedule``: the built-ins plus one entry per recurring job (its spec as JSON kwargs)."""
    entries = builtin_entries(plan.builtin)
    for job in plan.jobs:
        spec = job.spec.model_dump(mode="json")
        entries[f"schedule:{job.name}"] = _entry(SUBMIT_TASK, job.slots, {"entry": job.name, "spec": spec})
    return entries


def describe_plan(plan: SchedulePlan, now: datetime) -> list[dict[str, Any]]:
    """What ``yoloq beat --check`` prints: each entry, its timing, its next slot and its arguments."""
    out = []
    for name, entry in sorted(beat_schedule(plan).items()):
        schedule: SlotSchedule = entry["schedule"]
        nxt = schedule.slots.following(now).isoformat().replace("+00:00", "Z")
        out.append({"entry": name, "task": entry["task"], "when": describe(schedule.slots), "next": nxt,
                    "kwargs": entry["kwargs"]})  # fmt: skip
    return out
