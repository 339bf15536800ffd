"""infra/queue_cycle.py: a worker's queues reordered by the written order before each BRPOP, and its fallback."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.queue_cycle import WrittenOrderCycle, reorder
from infra.queue_order import header
from routing.tiers import OPS_QUEUE, queues_for_gpu

pytestmark = pytest.mark.unit

A80 = list(queues_for_gpu(81_920))  # kombu's old fixed order: tier, then the largest class first
A16 = list(queues_for_gpu(16_384))


def moved(queues: list[str], first: str) -> list[str]:
    """``queues`` with ``first`` just ahead of its tier's queues."""
    rest = [q for q in queues if q != first]
    tier = first.split(".")[1]
    at = next(i for i, q in enumerate(rest) if q.split(".")[1] == tier)
    return [*rest[:at], first, *rest[at:]]


@pytest.mark.parametrize(
    ("queues", "fronts", "expected"),
    [
        (A80, {}, A80),  # nothing waiting: the fixed order
        ([], {}, []),
        ([OPS_QUEUE], {}, [OPS_QUEUE]),  # not a tier queue: untouched
        # the case: older 24g jobs before a 40g one on an 80 GB card
        (A80, {"yoloq.medium.24g": 1.0, "yoloq.medium.40g": 2.0}, moved(A80, "yoloq.medium.24g")),
        # the card's own class within the bound: stays where it was (first of its tier)
        (A80, {"yoloq.medium.24g": 1.0, "yoloq.medium.80g": 2.0}, moved(A80, "yoloq.medium.80g")),
        # a higher tier still wins, whatever its age
        (A16, {"yoloq.low.8g": 1.0, "yoloq.high.16g": 9.0}, moved(A16, "yoloq.high.16g")),
        ([*A16, OPS_QUEUE], {"yoloq.batch.8g": 1.0}, moved([*A16, OPS_QUEUE], "yoloq.batch.8g")),
    ],
)
def test_reorder_puts_the_pick_ahead_of_its_tier(
    queues: list[str], fronts: dict[str, float], expected: list[str]
) -> None:
    assert reorder(queues, fronts) == expected


class Pipe:
    def __init__(self, lists: dict[str, list[str]]) -> None:
        self.lists, self.asked = lists, list[str]()

    def lindex(self, key: str, index: int) -> None:
        self.asked.append(key)

    def execute(self) -> list[str | None]:
        return [self.lists[k][-1] if self.lists.get(k) else None for k in self.asked]


class Client:
    def __init__(self, lists: dict[str, list[str]] | None) -> None:
        self.lists = lists

    def pipeline(self, transaction: bool = False) -> Pipe:
        if self.lists is None:
            raise ConnectionError("redis is down")
        return Pipe(self.lists)


def message(task_id: str, submitted: float) -> str:
    return json.dumps({"body": "", "headers": {"id": task_id, "yoloq_submitted": f"{submitted:.6f}"}})


@pytest.fixture
def cycle() -> WrittenOrderCycle:
    made = WrittenOrderCycle()
    made.update(A80)
    return made


def test_consume_reads_the_fronts_and_follows_the_written_order(cycle: WrittenOrderCycle) -> None:
    # Given (right end = next out) an older 24g medium job and a newer 40g one, plus a foreign message
    lists = {"yoloq.medium.24g": [message("t2", 5.0), message("t1", 1.0)], "yoloq.medium.40g": [message("t3", 2.0)],
             "yoloq.low.8g": ["not json"]}  # fmt: skip
    WrittenOrderCycle._client = Client(lists)  # type: ignore[assignment]
    try:
        assert cycle.consume(len(A80)) == moved(A80, "yoloq.medium.24g")
    finally:
        WrittenOrderCycle._client = None


def test_consume_falls_back_to_the_fixed_order_when_redis_fails(
    cycle: WrittenOrderCycle, caplog: pytest.LogCaptureFixture
) -> None:
    WrittenOrderCycle._client = Client(None)  # type: ignore[assignment]
    try:
        assert cycle.consume(len(A80)) == A80
    finally:
        WrittenOrderCycle._client = None
    assert "fixed order" in caplog.text


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        (message("t", 3.5), ("t", 3.5)),
        (json.dumps({"headers": {"id": "t"}}), ("t", 0.0)),
        (json.dumps({"headers": None}), None),
        (json.dumps([1]), None),
        ("{", None),
    ],
)
def test_header_reads_our_messages_only(raw: str, parsed: Any) -> None:
    assert header(raw) == parsed
