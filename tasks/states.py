"""Job lifecycle: the states and which transitions are legal (pure, no I/O).

``held → queued → running → (preempting → queued …) → succeeded | failed | cancelled``. A job on borrowed quota
goes back to ``held`` when its lender reclaims the loan (``routing.borrowing``): from queued at once, from running or
preempting after its checkpoint.
The registry enforces this table atomically inside Redis, so two processes can never
move a job along two different edges.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    """Where a job is in its lifecycle; lowercase strings on the wire (BRIEF §4)."""

    HELD = "held"
    QUEUED = "queued"
    RUNNING = "running"
    PREEMPTING = "preempting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL: frozenset[JobState] = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})

TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.HELD: frozenset({JobState.QUEUED, JobState.CANCELLED}),
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.QUEUED, JobState.CANCELLED, JobState.FAILED, JobState.HELD}),
    JobState.RUNNING: frozenset(
        {JobState.PREEMPTING, JobState.QUEUED, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.HELD}
    ),
    JobState.PREEMPTING: frozenset(
        {JobState.QUEUED, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.HELD}
    ),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


def sources_of(target: JobState) -> frozenset[JobState]:
    """States from which ``target`` may be entered, for the registry's atomic compare-and-set."""
    return frozenset(src for src, dsts in TRANSITIONS.items() if target in dsts)
