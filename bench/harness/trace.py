"""Profiling marks for the dispatch benchmark: ``KIND KEY TIME`` lines appended to ``$BENCH_TRACE``.

Only the bench's own worker launchers use this; production code is untouched (functions are wrapped at runtime).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from typing import Any

from celery import signals

Mark = Callable[[str, str], None]


def open_trace(path: str) -> Mark:
    """A marker appending to ``path`` (one write per mark: atomic across the worker's processes)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def mark(kind: str, key: str) -> None:
        os.write(fd, f"{kind} {key} {time.time():.6f}\n".encode())

    return mark


def wrap(owner: Any, name: str, mark: Mark, label: str, key: Callable[..., str]) -> None:
    """Replace ``owner.name`` with a version that marks ``label0``/``label1`` around each call."""
    original = getattr(owner, name)

    @functools.wraps(original)
    def traced(*args: Any, **kwargs: Any) -> Any:
        k = key(*args, **kwargs)
        mark(f"{label}0", k)
        try:
            return original(*args, **kwargs)
        finally:
            mark(f"{label}1", k)

    setattr(owner, name, traced)


def install_signals(mark: Mark) -> None:
    """Worker-side marks every Celery task gets: received (parent), prerun and postrun (pool child)."""

    def received(request: Any = None, **_: Any) -> None:
        mark("received", str(request.id))

    def prerun(task_id: str = "", **_: Any) -> None:
        mark("prerun", task_id)

    def postrun(task_id: str = "", **_: Any) -> None:
        mark("postrun", task_id)

    signals.task_received.connect(received, weak=False)
    signals.task_prerun.connect(prerun, weak=False)
    signals.task_postrun.connect(postrun, weak=False)
