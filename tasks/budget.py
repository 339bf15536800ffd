"""Which of a job's preemptions spend its budget (at most one a day, ``routing.preemption.Policy.max_preemptions``).

Only decisions count: a preemption the supervisor or an operator asked for. A job cut off by a failure (its worker
shutting down or losing Redis, its lease expiring) has not spent its budget; counting it made every job running
through a Redis restart or a worker crash unpreemptable for a day, so a critical job could only wait for one of them
to finish. Nor has a job that a defragmentation moved to another GPU and that resumed there: it never went back to
the queue. A move given back at its destination (no room there by then) did go back to the queue, and counts.
"""

from __future__ import annotations

from tasks.records import Event, JobRecord

# Who requeues a job that nobody asked to yield: its worker (shutting down, Redis unreachable, its lease lost) or
# recovery (its lease expired: worker killed, host lost). Such a cut-off is a failure, not a scheduling decision.
INTERRUPTED_BY = frozenset({"worker", "recovery"})


def budget_preemptions(record: JobRecord) -> list[Event]:
    """The preemptions the 24 h budget counts (the module's rule), oldest first."""
    return [e for e in record.preemptions
            if e.by not in INTERRUPTED_BY and (not getattr(e, "moved_to", "") or move_failed(record, e))]  # fmt: skip


def move_failed(record: JobRecord, move: Event) -> bool:
    """Whether the attempt a move published was given back (to its tier queue) before any attempt started."""
    after = [e for e in record.events if e.at >= move.at and e.type in ("started", "given-back")]
    return bool(after) and after[0].type == "given-back"
