"""``yoloq beat``: real Celery beat (embedded, ``-B``) in a small worker that consumes beat's own ``yoloq.ops`` queue.

One process (plus beat's child) runs the scheduler and the maintenance tasks it sends, so a deployment adds one
command, and running two of them is the high-availability setup: the slot locks of :mod:`infra.beat` let only one
send each slot, and either ops worker may run it.
"""

from __future__ import annotations

import os
import socket

from infra.beat_schedule import beat_schedule
from infra.settings import Settings
from routing.tiers import OPS_QUEUE
from tasks.schedule_file import SchedulePlan

SCHEDULER = "infra.beat:LockedScheduler"


def beat_argv(node: str, log_level: str) -> list[str]:
    """Worker arguments: embedded beat with the locking scheduler, two threads for the ops queue."""
    return [
        "worker", "-B", "--scheduler", SCHEDULER, "-Q", OPS_QUEUE, "--pool", "threads", "-c", "2", "-n", node,
        "-l", log_level, "--without-gossip", "--without-mingle",
    ]  # fmt: skip


def run_beat(settings: Settings, plan: SchedulePlan) -> None:
    """Install the plan as the app's ``beat_schedule`` and run until stopped (SIGTERM/SIGINT)."""
    import tasks.ops  # noqa: F401 - registers beat's tasks on the app (GPU workers never import them)
    from tasks.app import app

    app.conf.beat_schedule = beat_schedule(plan)
    app.conf.beat_scheduler = SCHEDULER
    app.worker_main(beat_argv(f"beat{os.getpid()}@{socket.gethostname()}", settings.log_level))
