"""A worker's check before it claims (tasks/gang_attempt.py): which deliveries run on its GPU and which go back."""

from __future__ import annotations

import types
from typing import Any

import pytest

import tasks.gang_attempt as ga

pytestmark = pytest.mark.unit


class FakeHolds:
    holders: dict[int, str] = {}

    def __init__(self, *_: Any) -> None:
        pass

    def holder(self, host: str, index: int) -> str | None:
        return self.holders.get(index)

    def get(self, job_id: str) -> dict[str, Any]:
        return {"gpus": [0, 1]}

    asked: list[int] = []

    def loan(self, host: str, index: int) -> tuple[str, str] | None:
        self.asked.append(index)  # GPU 2: lent only from the second look on (recorded while the worker waited)
        return ("gang", "lent") if index == 1 or (index == 2 and self.asked.count(2) > 1) else None


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    seen: dict[str, Any] = {"back": [], "reads": 0}
    monkeypatch.setattr(ga, "GangHolds", FakeHolds)
    monkeypatch.setattr(ga, "GIVE_BACK_AFTER_S", 0.0)
    monkeypatch.setattr(ga, "give_back", lambda rt, job, task, why: seen["back"].append((job, why)))

    def single(rt: Any, job_id: str) -> bool:
        seen["reads"] += 1
        return job_id != "gang"

    monkeypatch.setattr(ga, "_single", single)
    settings = types.SimpleNamespace(redis_url="", host=lambda: "h")
    seen["rt"] = types.SimpleNamespace(settings=settings, registry=types.SimpleNamespace(client=None))
    return seen


def test_free_gpus_run_one_gpu_jobs_and_send_gangs_back(world: dict[str, Any]) -> None:
    FakeHolds.holders = {}
    rt = world["rt"]
    assert ga.placed(rt, "j", "t", "0", "yoloq.high.24g") == "0" and world["reads"] == 0  # the delivery says: no read
    assert ga.placed(rt, "j", "t", "0") == "0" and world["reads"] == 1  # it does not: the record says
    assert ga.placed(rt, "gang", "t", "0", "yoloq.high.gang") is None  # a gang whose hold was released: back
    assert world["back"] == [("gang", "its gang's hold was released")]
    assert ga.placed(rt, "j", "t", "cpu") == "cpu"  # not a pinned GPU worker


def test_a_held_gpu_runs_only_its_gang_or_its_loan(world: dict[str, Any]) -> None:
    FakeHolds.holders = {0: "gang", 1: "gang"}
    rt = world["rt"]
    assert ga.placed(rt, "gang", "t", "0", "yoloq.high.gang") == "0,1"
    assert ga.placed(rt, "lent", "t", "1", "yoloq.low.8g") == "1"  # lent until the gang is due
    assert ga.placed(rt, "other", "t", "0", "yoloq.low.8g") is None
    assert world["back"] == [("other", "GPU 0 of h is held for gang gang")]
    # a job taken just before its loan was recorded finds it after the wait, and runs instead of going back
    FakeHolds.holders[2] = "gang"
    assert ga.placed(rt, "lent", "t", "2", "yoloq.low.8g") == "2" and len(world["back"]) == 1
