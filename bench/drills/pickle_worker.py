"""The security drill's baseline: a plain Celery worker configured like yoloq's but accepting pickle as well as JSON
(what many Celery deployments still run), consuming ``drill.pickle`` on the same Redis. A pickled message to it runs
whatever the pickle names while the worker decodes it, before any task code.

Run by ``celery -A bench.drills.pickle_worker worker -Q drill.pickle ...`` (the ``YOLOQ_*`` environment its drill
hands it picks the Redis). Celery refuses to run such a worker as root unless ``C_FORCE_ROOT`` is set: the drill sets
it, since it runs as root on these machines."""

from __future__ import annotations

from kombu import Queue

from bench.harness.plain_tasks import app, noop

QUEUE = "drill.pickle"

app.conf.update(accept_content=["json", "pickle"], task_queues=[Queue(QUEUE)], task_default_queue=QUEUE)
__all__ = ["QUEUE", "app", "noop"]
