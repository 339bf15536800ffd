"""Celery settings for every yoloq process (client, workers, beat, Flower): identical transport options everywhere.

Lowercase Celery settings only; values that vary by deployment come from typed settings (infra/settings.py).
Why each matters is in BRIEF §5 "Celery on Redis".
"""

from __future__ import annotations

from typing import Any

from kombu import Exchange, Queue

from infra.settings import Settings, load_settings
from routing.tiers import OPS_QUEUE, SIZE_CLASSES, Tier, all_queues, gang_queues, queue_name


def from_settings(settings: Settings) -> dict[str, Any]:
    """The deployment-dependent part, shared by this module and apps built for explicit settings (tests, bench)."""
    return {
        "broker_url": settings.redis_url,
        "broker_connection_timeout": settings.broker_timeout_s,
        # The written order (docs/eta.md): tiers strictly in order (round_robin would interleave them 1:1), inside a
        # tier the oldest front job of the classes the GPU fits (kombu's "priority" drained the largest class first).
        # visibility_timeout: longer than the longest job, or a running acks_late task is delivered again.
        "broker_transport_options": {
            "queue_order_strategy": "infra.queue_cycle:WrittenOrderCycle",
            "visibility_timeout": settings.visibility_timeout_s,
            "socket_connect_timeout": settings.broker_timeout_s,
        },
    }


_dynamic = from_settings(load_settings())
broker_url: str = _dynamic["broker_url"]
broker_connection_timeout: float = _dynamic["broker_connection_timeout"]
broker_transport_options: dict[str, Any] = _dynamic["broker_transport_options"]
broker_connection_retry_on_startup = True

# JSON only on the wire: no pickle anywhere.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]
event_serializer = "json"

# The job registry is the source of truth; Celery results are not kept.
task_ignore_result = True
result_backend = None

# One job per GPU at a time, and no job reserved behind a running one.
task_acks_late = True
worker_prefetch_multiplier = 1
worker_concurrency = 1
# A lost pool child must not put the message back: the attempt's lease decides whether the job is recovered.
task_reject_on_worker_lost = False

# Each queue is bound to a direct exchange of its own name: a bare Queue(name) binds every queue to Celery's default
# exchange (named after task_default_queue) with one routing key, so one message published to that exchange by a
# non-Celery producer landed in all 31 lists. Celery itself publishes through the anonymous exchange (routing key =
# queue name), which this leaves unchanged. Bindings a previous version left in Redis: infra.queues.prune_bindings.
_DECLARED = (*all_queues(), *gang_queues(), OPS_QUEUE)  # gang queues: consumed by no worker (workers/gangs.py)
task_queues = [Queue(name, Exchange(name, type="direct"), routing_key=name) for name in _DECLARED]
task_default_queue = queue_name(Tier.MEDIUM, SIZE_CLASSES[0])
task_create_missing_queues = False
task_publish_retry_policy = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}

# Flower and `celery events` see every task.
worker_send_task_events = True
task_send_sent_event = True
worker_hijack_root_logger = False

# celery beat: a scheduler that lets only one of several beats send each slot (infra/beat.py). The schedule itself
# (built-ins plus the schedule file) is installed by `yoloq beat` (workers/beat.py), the only way beat runs: building
# it here cost every client that sends a job ~70 ms of imports.
beat_scheduler = "infra.beat:LockedScheduler"
