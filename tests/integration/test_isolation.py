"""Issue 15 item 7, against the real stack: one message published to a tier queue's exchange lands in that queue
only (bindings an older version left in Redis included)."""

from __future__ import annotations

from typing import Any

import pytest
from kombu import Connection, Exchange, Producer, Queue

from infra.queues import BINDING_TABLES, depths, own_binding
from infra.redis_client import connect
from routing.tiers import OPS_QUEUE, SIZE_CLASSES, Tier, all_queues, queue_name
from tasks.app import create_app

pytestmark = pytest.mark.integration

QUEUES = (*all_queues(), OPS_QUEUE)
DEFAULT_QUEUE = queue_name(Tier.MEDIUM, SIZE_CLASSES[0])  # yoloq.medium.8g: Celery's default exchange was named so


def _declare_as_before(url: str) -> None:
    """What a version before per-queue exchanges left in Redis: every queue bound to the default exchange with the
    default queue's routing key (a bare ``Queue(name)`` in celeryconfig)."""
    default = Exchange(DEFAULT_QUEUE, type="direct")
    with Connection(url) as conn:
        for name in QUEUES:
            Queue(name, default, routing_key=DEFAULT_QUEUE)(conn.default_channel).declare()


def _landed(client: Any, publish: Any) -> dict[str, int]:
    """The queues whose lists grew while ``publish()`` ran, and by how much."""
    before = depths(client, QUEUES)
    publish()
    after = depths(client, QUEUES)
    return {name: after[name] - before[name] for name in QUEUES if after[name] != before[name]}


def test_one_publish_to_a_queue_exchange_lands_in_that_queue_only(services, fleet):
    url = services.settings.redis_url
    redis = connect(url)
    # Given the bindings an older version left, then a worker of this one started (and stopped: nothing consumes)
    _declare_as_before(url)
    fleet.start("0:T4:16")
    fleet.stop()
    app = create_app(services.settings)
    with Connection(url) as conn:
        for queue in app.amqp.queues.values():  # as any Celery client declares a queue before it sends to it
            queue(conn.default_channel).declare()
        producer = Producer(conn.default_channel, serializer="json")
        # When a non-Celery producer publishes one message to a queue's exchange, as Flower's apply-task could
        for name in (
            DEFAULT_QUEUE,
            queue_name(Tier.CRITICAL, SIZE_CLASSES[-1]),
            queue_name(Tier.BATCH, SIZE_CLASSES[0]),
        ):
            landed = _landed(redis, lambda n=name: producer.publish({"probe": n}, exchange=n, routing_key=n))
            # Then it is in that queue's list and no other
            assert landed == {name: 1}, name
    # And each exchange's binding table holds its own queue only
    for name in QUEUES:
        for table in BINDING_TABLES:
            assert redis.smembers(table.format(name)) == {own_binding(name)}, table.format(name)
    # And Celery's own sending (the anonymous exchange, routing key = queue) still reaches exactly its queue
    high = queue_name(Tier.HIGH, SIZE_CLASSES[1])
    assert _landed(redis, lambda: app.send_task("yoloq.probe", kwargs={"job_id": "none"}, queue=high)) == {high: 1}
