"""The serving transport on a real Redis: batches gather up to max_batch or max_wait, an element that is not a
request is skipped, a drained batch goes back to the head in order, and a connection lost while gathering leaves the
replica with what it already took (answered, never dropped)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from infra.redis_client import connect
from infra.serve_queue import Request, ServeQueue, requests_key

pytestmark = pytest.mark.integration
ALIAS = "q@prod"


@pytest.fixture
def queue(services) -> Iterator[ServeQueue]:
    client = connect(services.settings.redis_url, binary=True, read_timeout_s=10)
    client.delete(requests_key(ALIAS))
    yield ServeQueue(client, services.settings.redis_url)
    client.delete(requests_key(ALIAS))
    client.close()


def _push(queue: ServeQueue, *ids: str) -> None:
    for request_id in ids:
        queue.push(ALIAS, Request({"id": request_id, "version": 1}, b"img-" + request_id.encode()))


def test_a_batch_is_full_or_waits_at_most_max_wait(queue: ServeQueue) -> None:
    _push(queue, *[f"r{n}" for n in range(5)])
    assert [r.id for r in queue.take_batch(ALIAS, 3, 1.0)] == ["r0", "r1", "r2"]  # full: no wait
    started = time.monotonic()
    assert [r.id for r in queue.take_batch(ALIAS, 8, 0.2)] == ["r3", "r4"]  # short: waits max_wait for more
    assert time.monotonic() - started >= 0.2
    assert queue.take_batch(ALIAS, 8, 0.05, idle_s=0.1) == []


def test_a_short_batch_goes_after_max_wait_not_after_the_servers_clock_tick(queue: ServeQueue) -> None:
    # A BLPOP for 5 ms returns on Redis's next tick (hz 10: 100 ms): one request alone waited that long for company
    took = []
    for n in range(5):
        _push(queue, f"alone{n}")
        started = time.monotonic()
        assert [r.id for r in queue.take_batch(ALIAS, 8, 0.005)] == [f"alone{n}"]
        took.append(time.monotonic() - started)
    assert 0.005 <= sorted(took)[2] < 0.05, took


def test_junk_is_skipped_and_a_drained_batch_goes_back_in_order(queue: ServeQueue) -> None:
    queue.client.rpush(requests_key(ALIAS), b"no separator", b"{not json\x00x", b'["list"]\x00x')
    _push(queue, "a", "b", "c")
    taken = queue.take_batch(ALIAS, 8, 0.05)
    assert [r.id for r in taken] == ["a", "b", "c"] and taken[0].image == b"img-a"
    queue.give_back(ALIAS, taken[1:])
    assert queue.depth(ALIAS) == 2
    assert [r.id for r in queue.take_batch(ALIAS, 8, 0.05)] == ["b", "c"]


def test_a_connection_lost_while_gathering_keeps_what_was_taken(queue: ServeQueue, monkeypatch) -> None:
    _push(queue, "first", "second")

    def broken(*_: object, **__: object) -> None:
        raise redis.ConnectionError("connection lost mid-batch")

    monkeypatch.setattr(queue.client, "lpop", broken)
    assert [r.id for r in queue.take_batch(ALIAS, 8, 0.5)] == ["first"]  # taken, so served by this replica
    monkeypatch.undo()
    assert [r.id for r in queue.take_batch(ALIAS, 8, 0.05)] == ["second"]  # the rest waited in the list
