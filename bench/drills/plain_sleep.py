"""The baseline of the crash, redeliver and hostloss drills: a plain Celery ``acks_late`` task that sleeps and logs
each run's start and end in Redis, on yoloq's own Celery settings (celeryconfig + the drill's settings).

Run by ``celery -A bench.drills.plain_sleep worker -Q drill.plain ...`` (the module-level ``app`` reads the ``YOLOQ_*``
environment its drill hands it). ``DRILL_PLAIN_VISIBILITY_S`` overrides the broker visibility timeout (yoloq's own,
``YOLOQ_VISIBILITY_TIMEOUT_S``, is 7 days and refused under 1 h) and then also makes kombu sweep for expired messages
every second instead of every 100 s, so the redelivery comes as soon as that timeout allows.
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any, cast

import redis
from celery import Celery
from kombu import Queue

import celeryconfig
from infra.settings import Settings, load_settings

QUEUE = "drill.plain"
TASK = "drill.sleep"
RUNS = "drill:plain:runs:"  # + token: a list of JSON {"pid", "start", "end"} (end null while it runs)


def create_app(settings: Settings, visibility_s: float | None = None) -> Celery:
    """A plain Celery app configured like yoloq's (identical transport options) with the sleeping task."""
    app = Celery("drill-plain", set_as_current=False)
    app.config_from_object("celeryconfig")
    app.conf.update(celeryconfig.from_settings(settings))
    if visibility_s is not None:
        options = dict(app.conf.broker_transport_options)
        options |= {"visibility_timeout": visibility_s, "unacked_restore_interval": 1, "unacked_restore_throttle": 1}
        app.conf.broker_transport_options = options
    app.conf.update(task_queues=[Queue(QUEUE)], task_default_queue=QUEUE)

    @functools.cache
    def conn() -> redis.Redis:
        return redis.Redis.from_url(settings.redis_url)  # opened lazily, in the pool child

    @app.task(name=TASK, acks_late=True, ignore_result=True)
    def sleep(token: str, seconds: float) -> None:
        """Log this run's start, sleep, then log its end (a run killed on the way never logs one)."""
        start = time.time()
        index = cast(int, conn().rpush(RUNS + token, json.dumps({"pid": os.getpid(), "start": start, "end": None}))) - 1
        time.sleep(seconds)
        conn().lset(RUNS + token, index, json.dumps({"pid": os.getpid(), "start": start, "end": time.time()}))

    return app


def runs(client: redis.Redis, token: str) -> list[dict[str, Any]]:
    """Every run of the task sent with ``token``, in the order they started."""
    return [json.loads(raw) for raw in cast(list[bytes], client.lrange(RUNS + token, 0, -1))]


def most_at_once(found: list[dict[str, Any]], now: float) -> int:
    """The most runs that were live at one moment (a run without an end counts as live until ``now``)."""
    edges = sorted(
        [(r["start"], 1) for r in found] + [(r["end"] or now, -1) for r in found], key=lambda e: (e[0], e[1])
    )
    live = peak = 0
    for _, step in edges:
        live += step
        peak = max(peak, live)
    return peak


_visibility = os.environ.get("DRILL_PLAIN_VISIBILITY_S")
app = create_app(load_settings(use_stack_file=False), float(_visibility) if _visibility else None)
