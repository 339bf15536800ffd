"""tasks/val_watch.py: a request during validation is acted on from the watch thread (the main thread being busy),
never outside begin()/end(), at most once, and end() waits out an act in progress."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from tasks.errors import Cancelled, Preempted
from tasks.val_watch import ValidationWatch

pytestmark = pytest.mark.unit

DEADLINE_S = 10.0


class Requests:
    """A stop flag the watch polls, and what it did about it."""

    def __init__(self) -> None:
        self.stop: Exception | None = None
        self.polls = 0
        self.acted: list[Any] = []
        self.acting = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def check(self) -> None:
        self.polls += 1
        if self.stop is not None:
            raise self.stop

    def act(self, request: Preempted | Cancelled) -> None:
        self.acted.append((request, threading.current_thread().name))
        self.acting.set()
        self.release.wait(DEADLINE_S)


def _polled(requests: Requests, at_least: int) -> bool:
    """Wait (up to the deadline) until the watch has polled ``at_least`` times."""
    deadline = time.monotonic() + DEADLINE_S
    while requests.polls < at_least and time.monotonic() < deadline:
        time.sleep(0.01)
    return requests.polls >= at_least


@pytest.mark.parametrize("request_", [Preempted("preempt requested"), Cancelled("cancel requested")])
def test_a_request_while_validating_is_acted_on_from_the_watch_thread(request_: Exception) -> None:
    requests = Requests()
    watch = ValidationWatch(requests.check, requests.act, poll_s=0.01)
    watch.begin()
    requests.stop = request_
    assert requests.acting.wait(DEADLINE_S)
    assert requests.acted == [(request_, "validation-watch")]
    assert not watch.active


def test_no_request_no_act_and_end_stops_the_polling() -> None:
    requests = Requests()
    watch = ValidationWatch(requests.check, requests.act, poll_s=0.01)
    watch.begin()
    assert _polled(requests, 3)
    watch.end()
    requests.stop = Preempted("too late: validation is over")
    thread = watch._thread
    assert thread is not None
    thread.join(DEADLINE_S)
    assert not thread.is_alive() and requests.acted == []


def test_end_waits_for_an_act_in_progress() -> None:
    requests = Requests()
    requests.release.clear()
    watch = ValidationWatch(requests.check, requests.act, poll_s=0.01)
    watch.begin()
    requests.stop = Preempted("now")
    assert requests.acting.wait(DEADLINE_S)
    ended = threading.Event()
    main = threading.Thread(target=lambda: (watch.end(), ended.set()))
    main.start()
    assert not ended.wait(0.2), "the epoch's save must not start while the watch writes its checkpoint"
    requests.release.set()
    assert ended.wait(DEADLINE_S)
    assert len(requests.acted) == 1


def test_a_failed_poll_is_retried_and_a_failed_act_lets_training_go_on() -> None:
    requests = Requests()
    watch = ValidationWatch(requests.check, requests.act, poll_s=0.01)
    requests.stop = ConnectionError("redis blip")
    watch.begin()
    assert _polled(requests, 3)
    assert watch.active and requests.acted == []

    def failing(request: Preempted | Cancelled) -> None:
        requests.acted.append(request)
        raise OSError("upload failed")

    watch._act = failing
    requests.stop = Preempted("now")
    thread = watch._thread
    assert thread is not None
    thread.join(DEADLINE_S)
    assert not thread.is_alive() and len(requests.acted) == 1
    watch.end()  # the lock was released: the main thread is not blocked


def test_a_second_epoch_restarts_the_watch() -> None:
    requests = Requests()
    watch = ValidationWatch(requests.check, requests.act, poll_s=0.01)
    watch.begin()
    watch.end()
    first = watch._thread
    assert first is not None
    first.join(DEADLINE_S)
    watch.begin()
    requests.stop = Preempted("epoch 2")
    assert requests.acting.wait(DEADLINE_S)
    assert watch._thread is not first
