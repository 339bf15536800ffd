"""The serving transport on a real Redis: batches gather up to max_batch or max_wait, an element that is not a
request is skipped, a drained batch goes back to the head in order, a connection lost while gathering leaves the
replica with what it already took (answered, never dropped), and what a replica took stays in its own list until its
answers are out, so a replica that dies mid-batch loses nothing: the batch goes back to the queue's head."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from infra.redis_client import connect
from infra.serve_queue import Request, ServeQueue, holders_key, reply_key, requests_key, taken_key

pytestmark = pytest.mark.integration
ALIAS = "q@prod"


@pytest.fixture
def queue(services) -> Iterator[ServeQueue]:
    client = connect(services.settings.redis_url, binary=True, read_timeout_s=10)
    keys = [requests_key(ALIAS), holders_key(ALIAS), taken_key(ALIAS, "r1"), taken_key(ALIAS, "r2")]
    client.delete(*keys)
    yield ServeQueue(client, services.settings.redis_url)
    client.delete(*keys)
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


def test_a_held_batch_stays_taken_until_answered_and_a_dead_holders_batch_goes_back_first(queue: ServeQueue) -> None:
    # Given two replicas that each took a batch
    _push(queue, *[f"r{n}" for n in range(7)])
    assert queue.hold(ALIAS, "r1") == 0 and queue.hold(ALIAS, "r2") == 0
    one = queue.take_batch(ALIAS, 3, 0.05, holder="r1")
    two = queue.take_batch(ALIAS, 2, 0.05, holder="r2")
    assert [r.id for r in one] == ["r0", "r1", "r2"] and [r.id for r in two] == ["r3", "r4"]
    client = queue.client
    assert client.llen(taken_key(ALIAS, "r1")) == 3 and queue.depth(ALIAS) == 2
    # When r2 answers, its batch is released with the replies (one transaction)
    queue.answer([(r.id, {"id": r.id}) for r in two], release=(ALIAS, "r2"))
    assert not client.exists(taken_key(ALIAS, "r2")) and client.exists(reply_key("r3"))
    # ... and r1 dies holding its batch: a sweep that sees only r2 alive puts r1's batch back at the head, in order
    assert queue.orphans(ALIAS, {"r2"}) == 3
    assert not client.exists(taken_key(ALIAS, "r1")) and client.smembers(holders_key(ALIAS)) == {b"r2"}
    assert [r.id for r in queue.take_batch(ALIAS, 8, 0.05, holder="r2")] == ["r0", "r1", "r2", "r5", "r6"]
    # ... and a sweep with every holder alive moves nothing
    assert queue.orphans(ALIAS, {"r2"}) == 0 and client.llen(taken_key(ALIAS, "r2")) == 5
    client.delete(*[reply_key(f"r{n}") for n in range(7)])


def test_a_replica_restarted_under_its_name_puts_back_what_its_last_run_held(queue: ServeQueue) -> None:
    _push(queue, "a", "b", "c")
    assert [r.id for r in queue.take_batch(ALIAS, 2, 0.05, holder="r1")] == ["a", "b"]
    # The process dies; its next run (a replica job's next attempt keeps its name) starts by holding again
    assert queue.hold(ALIAS, "r1") == 2
    assert [r.id for r in queue.take_batch(ALIAS, 8, 0.05, holder="r1")] == ["a", "b", "c"]
