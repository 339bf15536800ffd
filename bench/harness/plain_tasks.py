"""The baseline: a plain Celery no-op task on the same Redis and worker settings, recording when it started.

Run by ``celery -A bench.harness.plain_tasks worker -Q bench.plain ...`` (the module-level ``app`` reads the ``YOLOQ_*``
environment the bench hands it); the bench process builds its own app for its settings with :func:`create_plain_app`.
"""

from __future__ import annotations

import functools
import json
import os
import time
from datetime import UTC, datetime
from typing import Any

import redis
from celery import Celery
from kombu import Queue

import celeryconfig
from bench.harness.trace import install_signals, open_trace
from infra.settings import Settings, load_settings
from tasks.records import iso

QUEUE = "bench.plain"
TASK = "bench.noop"
STARTED_KEY = "bench:plain:started"


def create_plain_app(settings: Settings) -> tuple[Celery, Any]:
    """A plain Celery app configured exactly like yoloq's (celeryconfig + from_settings) and its no-op task."""
    app = Celery("bench-plain", set_as_current=False)
    app.config_from_object("celeryconfig")
    app.conf.update(celeryconfig.from_settings(settings))
    app.conf.update(task_queues=[Queue(QUEUE)], task_default_queue=QUEUE)

    @functools.cache
    def conn() -> redis.Redis:
        return redis.Redis.from_url(settings.redis_url)  # opened lazily, in the pool child

    @app.task(name=TASK, acks_late=True, ignore_result=True)
    def noop(token: str) -> None:
        """Record when the task started: the exact time and yoloq's ``started_at`` form (ISO, milliseconds)."""
        now = time.time()
        conn().hset(STARTED_KEY, token, json.dumps([now, iso(datetime.fromtimestamp(now, UTC))]))

    return app, noop


app, noop = create_plain_app(load_settings(use_stack_file=False))
if os.environ.get("BENCH_TRACE"):  # profiling (bench/profile_dispatch.py): received/prerun/postrun marks
    install_signals(open_trace(os.environ["BENCH_TRACE"]))
