"""Flower's task history kept across restarts as JSON, not with Flower's own ``--persistent`` (shelve, i.e. pickle).

Flower 2.x pickles its whole event state into a dbm file and unpickles it at start: whoever can write that file runs
code in the Flower process. yoloq keeps no pickle anywhere, on the wire or on disk, so it saves instead each task's
fields (name, state, kwargs, result, timestamps, worker) as JSON and, at start, replays them as the task events
Flower would have received (received → started → succeeded / failed / revoked), which rebuilds the task list, its
search index and the per-worker counters the same way live events do. A file that does not parse is moved aside
(``.corrupt``) and Flower starts empty, as Flower itself does with a broken shelf.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from flower.events import Events, EventsState

log = logging.getLogger("yoloq.flower")

_FIELDS = ("name", "state", "args", "kwargs", "result", "exception", "traceback", "runtime", "retries", "eta",
           "expires", "root_id", "parent_id", "received", "started", "succeeded", "failed", "revoked",
           "timestamp")  # fmt: skip
_ENDS = {"SUCCESS": ("task-succeeded", "succeeded"), "FAILURE": ("task-failed", "failed"),
         "REVOKED": ("task-revoked", "revoked")}  # fmt: skip


def snapshot(state: Any) -> dict[str, Any]:
    """The history as JSON-ready data: every task's fields and its worker, and the per-worker event counts."""
    tasks = []
    for uuid, task in list(state.tasks.items()):
        row = {f: getattr(task, f, None) for f in _FIELDS}
        tasks.append({**row, "uuid": uuid, "hostname": task.worker.hostname if task.worker else None})
    return {"version": 1, "tasks": tasks, "counter": {w: dict(c) for w, c in state.counter.items()}}


def replay(task: dict[str, Any]) -> list[dict[str, Any]]:
    """The task events that bring a fresh state to ``task``'s saved fields."""
    events: list[dict[str, Any]] = []
    base = {"uuid": task["uuid"], "hostname": task.get("hostname") or "unknown", "clock": 0}
    at = task.get("received") or task.get("timestamp") or 0.0
    received = {f: task.get(f) for f in ("name", "args", "kwargs", "retries", "eta", "expires", "root_id", "parent_id")}
    events.append({**base, **received, "type": "task-received", "timestamp": at, "local_received": at})
    if task.get("started"):
        events.append({**base, "type": "task-started", "timestamp": task["started"], "local_received": task["started"]})
    end = _ENDS.get(str(task.get("state")))
    if end is not None:
        when = task.get(end[1]) or task.get("timestamp") or at
        extra = {f: task.get(f) for f in ("result", "runtime", "exception", "traceback") if task.get(f) is not None}
        events.append({**base, **extra, "type": end[0], "timestamp": when, "local_received": when})
    return events


class JsonEvents(Events):  # type: ignore[misc]  # flower ships no type hints
    """Flower's event capture with its history saved to and loaded from JSON (``db`` is the file's path)."""

    def load_state(self) -> Any:
        """A state rebuilt from the saved history, or None when there is none (or it is unreadable: moved aside)."""
        path = Path(self.db)
        if not path.exists():
            return None
        try:
            saved = json.loads(path.read_text())
            events = [e for task in saved["tasks"] for e in replay(task)]
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.error("cannot read Flower's history %s (%s): moved aside, starting empty", path, err)
            os.replace(path, f"{path}.corrupt")
            return None
        state = EventsState()  # Flower sets the task limit on it once this returns
        for event in sorted(events, key=lambda e: float(e["timestamp"] or 0.0)):
            state.event(event)
        state.counter.clear()
        for worker, counts in saved.get("counter", {}).items():
            state.counter[worker].update(counts)
        return state

    def save_state(self) -> None:
        """Write the history atomically (a file of this user's only, in its 0700 directory)."""
        path = Path(self.db)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(snapshot(self.state), handle, default=str)
        os.replace(tmp, path)
