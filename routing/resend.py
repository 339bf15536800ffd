"""Which queued jobs have lost their message: the registry says ``queued`` but no queue holds the attempt's task.
That happens when a process dies between the registry write and the broker publish of a requeue, or when a delivery
was dropped by a worker (one that lost Redis between taking the message and claiming the job leaves it in kombu's
unacked set for the whole visibility timeout); without a resend such a job would wait forever, silently.

A job is resent only when its message was missing on **two sweeps in a row** and its attempt is older than the
grace: a publish in flight, or a message moving between a list and a worker's unacked set while the broker is read,
is never mistaken for a loss. A resend reuses the task id: if the message was not lost after all, the second
delivery is refused by the attempt's compare-and-set claim (``tasks.lifecycle.record_start``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Waiting:
    """A job the registry holds as queued: its current attempt's task id and when that attempt was created."""

    job_id: str
    task_id: str
    since_ts: float


def unsent(
    waiting: Iterable[Waiting], in_broker: set[str], suspects: frozenset[str], now: float, grace_s: float
) -> tuple[list[str], frozenset[str]]:
    """Jobs to resend now (sorted), and the suspects for the next sweep (missing once, not yet resent)."""
    missing = {w.job_id for w in waiting if w.task_id not in in_broker and now - w.since_ts >= grace_s}
    resend = missing & suspects
    return sorted(resend), frozenset(missing - resend)
