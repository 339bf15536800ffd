"""Honour a preempt or cancel request while an epoch validates, without waiting for a validation batch to end.

Between an epoch's last trained batch and its save, training state (model, EMA, optimizer) no longer changes:
validation only reads the EMA. So a checkpoint taken then is exact, and the validation itself is worth nothing to a
preempted job (the resumed attempt validates that epoch again). One validation batch of an untrained model can take
seconds (NMS over every low-confidence box); waiting for its end was the slowest path from a request to a free GPU.

:class:`ValidationWatch` polls the request from a thread while the main thread validates. On a request it holds the
lock, runs ``act`` (checkpoint, record the outcome, end the process: ``act`` does not return), and the abandoned
validation dies with the process. The main thread calls :meth:`end` when validation is over (``on_val_end``): it
takes the same lock, so the epoch's own save can never race a checkpoint the watch is writing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from tasks.errors import Cancelled, Preempted

log = logging.getLogger(__name__)

POLL_S = 0.05  # one Redis GET per poll, only while an epoch validates


class ValidationWatch:
    """A thread that, while one epoch validates, turns a stop request into ``act(request)``."""

    def __init__(self, check: Callable[[], None], act: Callable[[Preempted | Cancelled], None],
                 poll_s: float = POLL_S) -> None:  # fmt: skip
        self._check, self._act, self._poll_s = check, act, poll_s
        self._lock = threading.Lock()
        self._active = False
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def begin(self) -> None:
        """Start watching (the epoch's training is done; validation follows)."""
        with self._lock:
            self._active = True
        self._wake.clear()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, daemon=True, name="validation-watch")
            self._thread.start()

    def end(self) -> None:
        """Stop watching; blocks while a request is being acted on (which ends the process)."""
        with self._lock:
            self._active = False
        self._wake.set()

    @property
    def active(self) -> bool:
        """Whether an epoch is validating under watch."""
        return self._active

    def _run(self) -> None:
        while True:
            self._wake.wait(self._poll_s)
            with self._lock:
                if not self._active:
                    return
                try:
                    self._check()
                except (Preempted, Cancelled) as request:
                    self._active = False
                    self._give_up(request)
                    return
                except Exception:  # a failed poll (Redis blip): the next poll asks again
                    log.warning("validation watch: request poll failed; retrying", exc_info=True)

    def _give_up(self, request: Preempted | Cancelled) -> None:
        """Run ``act`` (which ends the process); if it fails, training goes on and the epoch's save obeys instead."""
        try:
            self._act(request)
        except Exception:
            log.exception("validation watch: acting on %r failed; the request is obeyed after the epoch's save",
                          request)  # fmt: skip
