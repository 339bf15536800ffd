"""Leak check: every process this benchmark started (its descendants) must be gone after it stops (Linux /proc)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasks.records import JobRecord
from tasks.states import TERMINAL


def _stat(pid: int | str) -> tuple[str, int] | None:
    """(state letter, parent pid) of a process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid = text.rsplit(")", 1)[1].split()[:2]
    return state, int(ppid)


def descendants(root: int) -> set[int]:
    """Pids of every live process below ``root``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (found := _stat(entry.name)) is not None:
            children.setdefault(found[1], []).append(int(entry.name))
    out: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie awaiting its reaper counts as gone)."""
    found = _stat(pid)
    return found is not None and found[0] != "Z"


def survivors(pids: set[int], grace_s: float = 5.0) -> list[int]:
    """The pids still running after ``grace_s``."""
    deadline = time.monotonic() + grace_s
    while (left := sorted(p for p in pids if alive(p))) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def job_process(job_id: str) -> int | None:
    """The pid of the job process running ``job_id`` (a descendant of this process), found by its command line."""
    for pid in descendants(os.getpid()):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"tasks.job_process" in argv and job_id.encode() in argv:
            return pid
    return None


def until(refresh: Callable[[], JobRecord], done: Callable[[JobRecord], Any], what: str, timeout_s: float,
          poll_s: float = 0.02) -> JobRecord:  # fmt: skip
    """Poll a job's record until ``done(record)``; an early terminal state or the timeout raises with its error."""
    deadline = time.monotonic() + timeout_s
    while True:
        record = refresh()
        if done(record):
            return record
        if record.state in TERMINAL:
            raise RuntimeError(f"job {record.job_id} ended {record.state.value} before {what}: {record.error}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {record.job_id} still {record.state.value} after {timeout_s:.0f}s ({what})")
        time.sleep(poll_s)
