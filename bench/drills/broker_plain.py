"""The broker drill's baseline: a plain Celery ``acks_late`` worker (bench.drills.plain_sleep) on database 1 of the
drill's Redis, with a backlog of short tasks queued right before the first restart: which ran once, never or twice,
how soon after Redis answered it took a task again, and whether a task sent after the restart runs."""

from __future__ import annotations

import contextlib
import time
import uuid
from typing import Any

from bench.drills import crash_kit as kit
from bench.drills.plain_sleep import QUEUE, TASK, create_app, runs
from infra.redis_client import connect

BOUND_S = 60.0  # how long a task sent after the restart may take to run before it counts as not run


class Plain:
    """The baseline: a plain Celery acks_late worker on database 1 of the same Redis, with a backlog at the restart."""

    def __init__(self, stack: kit.Stack, backlog: int) -> None:
        self.stack, self.count = stack, backlog
        self.worker = stack.plain_worker("plain-broker", db=1)
        settings = stack.plain_settings(1)
        self.app, self.redis = create_app(settings), connect(settings.redis_url)
        self.tokens: list[str] = []
        self.after_s: float | None = None
        self.back_at = 0.0

    def backlog(self) -> None:
        """Queue the backlog of 0.2 s tasks (the worker takes one at a time) right before a restart."""
        self.tokens = [uuid.uuid4().hex for _ in range(self.count)]
        for token in self.tokens:
            self.app.send_task(TASK, args=[token, 0.2], queue=QUEUE)

    def after(self, back_at: float) -> None:
        """Send one task once Redis is back; seconds from Redis back to it running (None: not within the bound)."""
        token, self.back_at = uuid.uuid4().hex, back_at
        deadline = time.monotonic() + 30
        while True:
            try:
                self.app.send_task(TASK, args=[token, 0], queue=QUEUE)
                break
            except Exception:  # kombu's own errors while Redis still loads: a caller retries
                if time.monotonic() > deadline:
                    return
                time.sleep(0.05)
        with contextlib.suppress(TimeoutError):
            found = kit.poll(lambda: runs(self.redis, token), BOUND_S, "the plain task sent after the restart")
            self.after_s = round(found[0]["start"] - back_at, 2)

    def verdict(self, settle_s: float) -> dict[str, Any]:
        """How the backlog fared once ``settle_s`` passed for it to drain: ran once, never, more than once."""
        with contextlib.suppress(TimeoutError):
            kit.poll(lambda: all(runs(self.redis, t) for t in self.tokens), settle_s, "the plain backlog to drain")
        found = [runs(self.redis, t) for t in self.tokens]
        counts = [len(f) for f in found]
        starts = [r["start"] - self.back_at for f in found for r in f if r["start"] > self.back_at]
        unacked = self.redis.hlen("unacked")
        return {"backlog": len(self.tokens), "ran_once": counts.count(1), "never_ran": counts.count(0),
                "ran_twice_or_more": sum(c > 1 for c in counts), "left_unacked": unacked,
                "worker_alive": self.worker.alive(),
                "first_task_after_redis_back_s": round(min(starts), 2) if starts else None,
                "task_sent_after_restart_ran_after_s (behind the backlog)": self.after_s}  # fmt: skip
