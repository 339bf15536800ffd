"""routing/notify.py: which subscriptions an event reaches, the body and its signature, retry / give up / dead."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import pytest

from routing.notify import (
    EVENTS,
    Failure,
    Notice,
    Policy,
    Subscription,
    after_failure,
    backoff_s,
    body,
    events_problem,
    notify_type,
    sign,
    stream_order,
    targets,
    url_problem,
    verify,
)

pytestmark = pytest.mark.unit

NOW = 10_000.0
POLICY = Policy(base_s=1.0, cap_s=60.0, jitter=0.5, max_attempts=5, max_age_s=600.0, dead_after_failures=4,
                dead_after_s=120.0)  # fmt: skip


@pytest.mark.parametrize(
    ("event_type", "state", "expected"),
    [
        ("submitted", "held", "held"),
        ("submitted", "queued", None),  # an admitted submission is no news
        ("released", "queued", "released"),
        ("started", "running", "started"),
        ("preempted", "queued", "preempted"),
        ("succeeded", "succeeded", "succeeded"),
        ("failed", "failed", "failed"),
        ("cancelled", "cancelled", "cancelled"),
        ("deployed", None, "deployed"),
        ("held", None, None),  # "held" is never a history event's own type
        ("checkpoint", None, None),
        ("preempt-requested", None, None),
    ],
)
def test_notify_type(event_type: str, state: str | None, expected: str | None) -> None:
    assert notify_type(event_type, state) == expected


def _sub(sub_id: str, url: str = "http://r/a", team: str | None = "vision", job: str | None = None,
         events: tuple[str, ...] = EVENTS, dead: bool = False, since: int = 0) -> Subscription:  # fmt: skip
    return Subscription(sub_id, url, team=None if job else team, job_id=job, events=frozenset(events), dead=dead,
                        since_ms=since)  # fmt: skip


STARTED = Notice("1000-0", "started", "j1", "vision")


@pytest.mark.parametrize(
    ("subs", "expected"),
    [
        ([], []),
        ([_sub("w1")], ["w1"]),  # the team's subscription
        ([_sub("w1", team="ops")], []),  # another team's
        ([_sub("w1", job="j1")], ["w1"]),  # this job's
        ([_sub("w1", job="j2")], []),  # another job's, even of the same team
        ([_sub("w1", events=("succeeded", "failed"))], []),  # filtered out by type
        ([_sub("w1", dead=True)], []),  # a dead endpoint gets nothing new
        # the same receiver subscribed by team and by job: one delivery, the lower id's (its secret signs)
        ([_sub("w2", job="j1"), _sub("w1")], ["w1"]),
        ([_sub("w2", url="http://r/b"), _sub("w1")], ["w1", "w2"]),  # two receivers: both, by id
        # a dead duplicate does not hide the live one
        ([_sub("w1", dead=True), _sub("w2", job="j1")], ["w2"]),
        # made after the event (a notifier reading the stream late): not its news; made at the same ms: it is
        ([_sub("w1", since=1001)], []),
        ([_sub("w1", since=1000)], ["w1"]),
    ],
)
def test_targets(subs: list[Subscription], expected: list[str]) -> None:
    assert [s.sub_id for s in targets(subs, STARTED)] == expected


@pytest.mark.parametrize(
    ("attempts", "low", "high"),
    [
        (0, 0.5, 1.0),  # no failure yet: the base
        (1, 0.5, 1.0),
        (2, 1.0, 2.0),
        (4, 4.0, 8.0),
        (7, 30.0, 60.0),  # 64 s capped at 60
        (30, 30.0, 60.0),  # far past the cap: no overflow, still capped
    ],
)
def test_backoff_doubles_is_capped_and_jittered_within_bounds(attempts: int, low: float, high: float) -> None:
    assert low <= backoff_s(attempts, "w1|1-0", POLICY) <= high


def test_backoff_is_deterministic_per_seed_and_spreads_seeds() -> None:
    assert backoff_s(3, "w1|1-0", POLICY) == backoff_s(3, "w1|1-0", POLICY)
    spread = {round(backoff_s(3, f"w1|{n}-0", POLICY), 6) for n in range(20)}
    assert len(spread) > 10  # deliveries that fail together do not retry together


def test_stream_order_is_numeric_not_lexicographic() -> None:
    names = ["w1|10-0", "w1|9-1", "w1|9-0", "w1|100-0"]
    assert sorted(names, key=stream_order) == ["w1|9-0", "w1|9-1", "w1|10-0", "w1|100-0"]
    assert stream_order("1764946800123-7") == (1764946800123, 7)


def test_no_jitter_is_exact() -> None:
    assert backoff_s(3, "x", Policy(base_s=2.0, jitter=0.0)) == 8.0


def _f(attempts: int, age_s: float = 10.0, consecutive: int = 1, failing_s: float = 10.0) -> Failure:
    return Failure(attempts=attempts, first_at=NOW - age_s, consecutive=consecutive, failing_since=NOW - failing_s)


@pytest.mark.parametrize(
    ("failure", "retry", "dead", "reason"),
    [
        (_f(1), True, False, "retry"),
        (_f(4), True, False, "retry"),
        (_f(5), False, False, "given up after 5 attempts"),  # max_attempts reached
        (_f(2, age_s=600.0), False, False, "given up: undelivered for 600 s"),  # too old
        # many failures in a row but only for a short while (a burst during a blip): not dead
        (_f(1, consecutive=50, failing_s=30.0), True, False, "retry"),
        # failing a long while but few failures: not dead either
        (_f(1, consecutive=3, failing_s=1000.0), True, False, "retry"),
        # both: dead, whatever the delivery's own count
        (_f(1, consecutive=4, failing_s=120.0), False, True, "endpoint dead: 4 failures in a row over 120 s"),
    ],
)
def test_after_failure(failure: Failure, retry: bool, dead: bool, reason: str) -> None:
    verdict = after_failure(failure, "w1|1-0", NOW, POLICY)
    assert (verdict.retry_at is not None, verdict.dead, verdict.reason) == (retry, dead, reason)
    if retry:
        assert verdict.retry_at == NOW + backoff_s(failure.attempts, "w1|1-0", POLICY)


@pytest.mark.parametrize(("event_id", "at_ms"), [("1764946800123-0", 1764946800123), ("7-3", 7), ("test-ab", 0)])
def test_an_events_time_is_its_stream_ids(event_id: str, at_ms: int) -> None:
    assert Notice(event_id, "started", "j1", "t").at_ms == at_ms


def test_body_is_stable_json_with_the_job_and_event() -> None:
    event = {"at": "2026-01-01T00:00:00.000Z", "type": "started", "state": "running", "reason": "on w gpu 0"}
    job = {"name": "nightly", "kind": "probe", "tier": "low", "secret": "not sent"}
    sent = body(STARTED, event, job)
    assert sent == body(STARTED, dict(reversed(list(event.items()))), job)  # same bytes on every retry
    assert json.loads(sent) == {
        "id": "1000-0", "type": "started", "at": "2026-01-01T00:00:00.000Z", "reason": "on w gpu 0", "by": "",
        "job": {"job_id": "j1", "team": "vision", "name": "nightly", "kind": "probe", "tier": "low",
                "state": "running"},
    }  # fmt: skip


def test_body_without_state_or_job_fields() -> None:
    doc = json.loads(body(Notice("2-0", "deployed", "j1", "vision"), {"at": "x"}, {}))
    assert doc["job"] == {"job_id": "j1", "team": "vision", "name": "", "kind": "", "tier": ""}


def test_signature_is_hmac_sha256_over_time_dot_body() -> None:
    expected = hmac.new(b"s", b"100.{}", hashlib.sha256).hexdigest()
    assert sign("s", 100, b"{}") == f"t=100,v1={expected}"


@pytest.mark.parametrize(
    ("secret", "header", "payload", "now", "ok"),
    [
        ("s", sign("s", 100, b"{}"), b"{}", 100.0, True),
        ("s", sign("s", 100, b"{}"), b"{}", 400.0, True),  # at the tolerance's edge
        ("s", sign("s", 100, b"{}"), b"{}", 401.0, False),  # too late: a replay
        ("s", sign("s", 100, b"{}"), b"{}", -201.0, False),  # from the future
        ("other", sign("s", 100, b"{}"), b"{}", 100.0, False),  # wrong secret
        ("s", sign("s", 100, b"{}"), b'{"x":1}', 100.0, False),  # body changed
        ("s", sign("s", 100, b"{}").replace("t=100", "t=101"), b"{}", 100.0, False),  # time changed
        ("s", "t=abc,v1=00", b"{}", 100.0, False),  # not a time
        ("s", "garbage", b"{}", 100.0, False),
        ("s", "t=100", b"{}", 100.0, False),  # no MAC
    ],
)
def test_verify(secret: str, header: str, payload: bytes, now: float, ok: bool) -> None:
    assert verify(secret, header, payload, now) is ok


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://127.0.0.1:9000/hook", None),
        ("https://hooks.example.com/yoloq?team=a", None),
        ("ftp://example.com/x", "must start with http:// or https://"),
        ("file:///etc/passwd", "must start with http:// or https://"),
        ("javascript:alert(1)", "must start with http:// or https://"),
        ("http:///path", "has no host"),
        ("https://user:pw@example.com/", "must not hold credentials"),
        ("https://example.com/a b", "printable characters and no spaces"),
        ("https://example.com/\n", "printable characters and no spaces"),
        ("http://[::1/x", "does not parse"),
        ("https://e.com/" + "a" * 2048, "at most 2048"),
    ],
)
def test_url_problem(url: str, problem: str | None) -> None:
    found = url_problem(url)
    assert (found is None) if problem is None else (found is not None and problem in found)


@pytest.mark.parametrize(
    ("events", "problem"),
    [
        (["started", "failed"], None),
        (list(EVENTS), None),
        ([], "at least one event"),
        (["started", "exploded"], "unknown event(s) exploded"),
    ],
)
def test_events_problem(events: list[str], problem: str | None) -> None:
    found = events_problem(events)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_the_receivers_snippet_in_the_docs_verifies_what_yoloq_signs() -> None:
    # Given the verification function docs/notifications.md tells receivers to copy
    text = (Path(__file__).resolve().parents[2] / "docs" / "notifications.md").read_text()
    snippet = text.split("```python\n", 1)[1].split("```", 1)[0]
    scope: dict[str, Any] = {}
    exec(compile(snippet, "docs/notifications.md", "exec"), scope)
    now = int(time.time())
    # Then it accepts a body yoloq signed now, and refuses a changed body, another secret and an old signature
    assert scope["verify"]("whsec_x", sign("whsec_x", now, b'{"a":1}'), b'{"a":1}')
    assert not scope["verify"]("whsec_x", sign("whsec_x", now, b'{"a":1}'), b'{"a":2}')
    assert not scope["verify"]("whsec_y", sign("whsec_x", now, b'{"a":1}'), b'{"a":1}')
    assert not scope["verify"]("whsec_x", sign("whsec_x", now - 3600, b'{"a":1}'), b'{"a":1}')
