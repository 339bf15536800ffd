"""Recording an attempt's end while Redis is unreachable is retried for a bounded time (issue 15 follow-up): with
Redis gone for good the pool child gives up with one error instead of retrying every second forever (which also
held a warm shutdown, since Celery waits for the task). The clock and the sleep are injected: nothing waits."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from tasks.attempt import RECORD_PATIENCE_S, RECORD_RETRY_S, UNRECORDED, _recorded
from tasks.errors import BrokerUnavailable

pytestmark = pytest.mark.unit

MAX_SLEEPS = 10_000  # far beyond any bound here: reaching it means the retries never end


class FakeTime:
    """A clock that only ``sleep`` moves, and that fails the test once the retries clearly never end."""

    def __init__(self) -> None:
        self.now, self.sleeps = 1000.0, 0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        assert self.sleeps < MAX_SLEEPS, f"still retrying after {self.sleeps} sleeps ({self.now - 1000:.0f} s)"
        self.now += seconds


def _redis_down(failures: int | None, outcome: str = "succeeded") -> tuple[list[int], Callable[[], str]]:
    """A write that raises BrokerUnavailable ``failures`` times (None: always), then returns ``outcome``."""
    calls: list[int] = []

    def write() -> str:
        calls.append(1)
        if failures is None or len(calls) <= failures:
            raise BrokerUnavailable("cannot reach Redis at redis://127.0.0.1:6379/0: timed out")
        return outcome

    return calls, write


def test_redis_gone_for_good_ends_the_attempt_unrecorded_after_the_bound_with_one_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given Redis that never answers again, and a bound of 75 s (a 15 s lease TTL + the patience)
    fake, bound = FakeTime(), 15.0 + RECORD_PATIENCE_S
    calls, write = _redis_down(None)
    # When the attempt records its end
    with caplog.at_level(logging.INFO, logger="yoloq.attempt"):
        outcome = _recorded(write, bound, clock=fake.clock, sleep=fake.sleep)
    # Then it gives up once the bound has passed (not before), tried about once a second, and says so once
    assert outcome == UNRECORDED
    assert bound <= fake.now - 1000 < bound + RECORD_RETRY_S
    assert len(calls) == fake.sleeps + 1 == int(bound / RECORD_RETRY_S) + 1
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(errors) == 1 and errors[0].startswith(f"gave up recording the attempt's end after {len(calls)} tries")
    assert "recovery requeues the job" in errors[0]
    assert len(warnings) == 1  # the first failure; not one line per second


def test_an_outage_shorter_than_the_bound_is_ridden_out_and_the_end_recorded(caplog: pytest.LogCaptureFixture) -> None:
    # Given Redis back after 30 failed tries (the 30 s outage), under the bound the test session uses
    fake = FakeTime()
    calls, write = _redis_down(30, outcome="preempted")
    # When the attempt records its end
    with caplog.at_level(logging.WARNING, logger="yoloq.attempt"):
        outcome = _recorded(write, 3.0 + RECORD_PATIENCE_S, clock=fake.clock, sleep=fake.sleep)
    # Then the end is recorded (the worker's next job starts after it) and nothing was given up
    assert outcome == "preempted" and len(calls) == 31
    assert not [r for r in caplog.records if r.levelno == logging.ERROR]


def test_a_recorded_end_returns_at_once() -> None:
    fake = FakeTime()
    calls, write = _redis_down(0, outcome="succeeded")
    assert _recorded(write, 0.0, clock=fake.clock, sleep=fake.sleep) == "succeeded"
    assert len(calls) == 1 and fake.sleeps == 0
