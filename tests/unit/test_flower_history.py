"""Flower's history as JSON (infra/flower_history.py): what is saved comes back the same, and a bad file never loads."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from flower.events import EventsState

from infra.flower_history import JsonEvents, replay, snapshot

pytestmark = pytest.mark.unit


def _state() -> EventsState:
    state = EventsState()
    base = {"uuid": "t1", "hostname": "gpu0@h", "clock": 1}
    kwargs = "{'job_id': 'j1', 'tier': 'low', 'team': 'vision'}"
    for event in (
        {**base, "type": "task-received", "name": "yoloq.probe", "kwargs": kwargs, "timestamp": 10.0},
        {**base, "type": "task-started", "timestamp": 11.0},
        {**base, "type": "task-succeeded", "result": "'succeeded'", "runtime": 0.5, "timestamp": 12.0},
    ):
        state.event({**event, "local_received": event["timestamp"]})
    return state


def test_a_saved_history_replays_into_the_same_tasks_and_counts(tmp_path: Path) -> None:
    saved = json.loads(json.dumps(snapshot(_state()), default=str))  # what the file holds: JSON only
    path = tmp_path / "history.json"
    path.write_text(json.dumps(saved))
    state = JsonEvents.load_state(SimpleNamespace(db=str(path)))
    task = state.tasks["t1"]
    assert (task.name, task.state, task.result, task.runtime, task.worker.hostname) == (
        "yoloq.probe", "SUCCESS", "'succeeded'", 0.5, "gpu0@h")  # fmt: skip
    assert (task.received, task.started, task.succeeded) == (10.0, 11.0, 12.0)
    assert "j1" in task.kwargs and dict(state.counter["gpu0@h"]) == saved["counter"]["gpu0@h"]
    assert [e["type"] for e in replay(saved["tasks"][0])] == ["task-received", "task-started", "task-succeeded"]


@pytest.mark.parametrize("content", [b"\x80\x04\x95 a pickle", b"{not json", b'{"tasks": 3}'])
def test_an_unreadable_history_is_moved_aside_and_never_loaded(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "history.json"
    path.write_bytes(content)
    assert JsonEvents.load_state(SimpleNamespace(db=str(path))) is None
    assert not path.exists() and (tmp_path / "history.json.corrupt").read_bytes() == content
    assert JsonEvents.load_state(SimpleNamespace(db=str(path))) is None  # no file: a fresh start
