"""The baseline: a plain Celery no-op task on the same Redis and worker settings, recording its start time."""

from __future__ import annotations

import time

import redis
from celery import Celery

import celeryconfig
from infra.settings import load_settings

START_KEY = "bench:plain:started"

settings = load_settings(use_stack_file=False)
app = Celery("bench-plain", set_as_current=False)
app.config_from_object("celeryconfig")
app.conf.update(celeryconfig.from_settings(settings))
app.conf.task_queues = None
app.conf.task_default_queue = "bench.plain"
_redis = redis.Redis.from_url(settings.redis_url)


@app.task(name="bench.noop", acks_late=True, ignore_result=True)
def noop(token: str) -> None:
    """Record when the task started, as yoloq's registry records started_at."""
    _redis.hset(START_KEY, token, repr(time.time()))
