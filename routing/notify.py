"""Webhook notifications (pure): which subscriptions an event goes to, what is sent and how it is signed, when a
failed delivery is retried, given up, and when its endpoint is declared dead.

An **event** is a job's state change as the registry wrote it (``held``, ``released``, ``started``, ``preempted``,
``succeeded``, ``failed``, ``cancelled``) or its model being ``deployed``; its id is the notify stream's entry id,
the same on every retry, so a receiver dedupes on it (delivery is at least once).

A failed attempt is decided by :func:`after_failure`, in this order:

1. the endpoint is **dead** once it has failed ``dead_after_failures`` times in a row *and* has been failing for at
   least ``dead_after_s`` (both: a burst of events during a one-second blip must not kill it); a dead endpoint gets
   no more attempts and no new events until an operator's ``yoloq webhook test`` succeeds;
2. otherwise the delivery is **given up** after ``max_attempts`` attempts or once it is ``max_age_s`` old;
3. otherwise it is **retried** after :func:`backoff_s`: ``base_s`` doubling per attempt, capped at ``cap_s``, minus up
   to ``jitter`` of itself (deterministic from a seed, so that deliveries failing together spread out).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

EVENTS = ("held", "released", "started", "preempted", "succeeded", "failed", "cancelled", "deployed")
# History event types that are notified as themselves; ``submitted`` is notified only when it holds the job.
_AS_IS = frozenset(EVENTS) - {"held"}
URL_MAX = 2048
SIGNATURE_HEADER = "X-Yoloq-Signature"
EVENT_ID_HEADER = "X-Yoloq-Event-Id"


@dataclass(frozen=True, slots=True)
class Policy:
    """Retry and dead-endpoint knobs (the module docstring says how they combine)."""

    base_s: float = 1.0
    cap_s: float = 300.0
    jitter: float = 0.5
    max_attempts: int = 10
    max_age_s: float = 3600.0
    dead_after_failures: int = 10
    dead_after_s: float = 600.0


@dataclass(frozen=True, slots=True)
class Subscription:
    """Where to send which events: a team's jobs or one job's, to one URL."""

    sub_id: str
    url: str
    team: str | None = None
    job_id: str | None = None
    events: frozenset[str] = frozenset(EVENTS)
    dead: bool = False
    since_ms: int = 0  # when it was made (Redis server clock, like stream ids): earlier events are not its news


@dataclass(frozen=True, slots=True)
class Notice:
    """One notifiable event: its stream id, its type and the job it is about."""

    event_id: str
    type: str
    job_id: str
    team: str

    @property
    def at_ms(self) -> int:
        """When the event was written: the millisecond part of its stream id (0 when the id has none)."""
        head = self.event_id.split("-", 1)[0]
        return int(head) if head.isdigit() else 0


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed attempt in context: the delivery's attempts so far and age, the endpoint's failing streak."""

    attempts: int
    first_at: float
    consecutive: int
    failing_since: float


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do after a failed attempt: retry at ``retry_at``, or give up (``retry_at`` None) with a reason."""

    retry_at: float | None
    reason: str
    dead: bool = False


def notify_type(event_type: str, state: str | None) -> str | None:
    """The notification a history event is, or None: the registry asks this to decide what enters the stream."""
    if event_type == "submitted":
        return "held" if state == "held" else None
    return event_type if event_type in _AS_IS else None


def targets(subscriptions: Iterable[Subscription], notice: Notice) -> list[Subscription]:
    """The live subscriptions ``notice`` goes to, by id, one per URL (a team and a job subscription to the same
    receiver would otherwise deliver the event twice); never one made after the event (a notifier that reads the
    stream late must not send a new subscriber old news)."""
    chosen: dict[str, Subscription] = {}
    for sub in sorted(subscriptions, key=lambda s: s.sub_id):
        scoped = sub.job_id == notice.job_id if sub.job_id is not None else sub.team == notice.team
        wanted = notice.type in sub.events and not sub.dead and sub.since_ms <= notice.at_ms
        if scoped and wanted and sub.url not in chosen:
            chosen[sub.url] = sub
    return sorted(chosen.values(), key=lambda s: s.sub_id)


def stream_order(delivery: str) -> tuple[int, ...]:
    """A delivery's place among one endpoint's (``sub|<ms>-<seq>``, or a bare event id): the order events happened
    in, so that a receiver sees a job's ``started`` before its ``succeeded``."""
    event_id = delivery.rpartition("|")[2]
    return tuple(int(part) for part in event_id.split("-") if part.isdigit())


def backoff_s(attempts: int, seed: str, policy: Policy) -> float:
    """Seconds before the next attempt after ``attempts`` failures: exponential, capped, jittered from ``seed``."""
    full = min(policy.cap_s, policy.base_s * 2.0 ** max(attempts - 1, 0))
    spread = zlib.crc32(f"{seed}:{attempts}".encode()) / 2**32  # in [0, 1), the same for the same seed and attempt
    return full * (1.0 - policy.jitter * spread)


def after_failure(failure: Failure, seed: str, now: float, policy: Policy) -> Verdict:
    """Retry, give up, or declare the endpoint dead (the numbered rules of the module docstring)."""
    failing_for = now - failure.failing_since
    if failure.consecutive >= policy.dead_after_failures and failing_for >= policy.dead_after_s:
        why = f"endpoint dead: {failure.consecutive} failures in a row over {failing_for:.0f} s"
        return Verdict(None, why, dead=True)
    if failure.attempts >= policy.max_attempts:
        return Verdict(None, f"given up after {failure.attempts} attempts")
    if now - failure.first_at >= policy.max_age_s:
        return Verdict(None, f"given up: undelivered for {now - failure.first_at:.0f} s")
    return Verdict(now + backoff_s(failure.attempts, seed, policy), "retry")


def body(notice: Notice, event: Mapping[str, Any], job: Mapping[str, str]) -> bytes:
    """The JSON document POSTed for ``notice``: the same bytes on every retry (only the signature's time changes)."""
    doc = {
        "id": notice.event_id,
        "type": notice.type,
        "at": event.get("at", ""),
        "reason": event.get("reason", ""),
        "by": event.get("by", ""),
        "job": {"job_id": notice.job_id, "team": notice.team, **{k: job.get(k, "") for k in ("name", "kind", "tier")}},
    }
    if event.get("state"):
        doc["job"]["state"] = event["state"]
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def sign(secret: str, timestamp: int, payload: bytes) -> str:
    """The ``X-Yoloq-Signature`` value: ``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>`` (Stripe's
    shape: the time inside the MAC stops a captured request from being replayed later)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, header: str, payload: bytes, now: float, tolerance_s: float = 300.0) -> bool:
    """Whether ``header`` signs ``payload`` with ``secret`` within ``tolerance_s`` of ``now``: what a receiver runs."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    stamp = parts.get("t", "")
    if not stamp.isdigit() or abs(now - int(stamp)) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, int(stamp), payload), f"t={stamp},v1={parts.get('v1', '')}")


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot receive webhooks, or None: http(s) only, a host, no credentials in it, not too long."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as err:  # e.g. an unclosed IPv6 bracket or a port that is not a number
        return f"url {url[:80]!r} does not parse: {err}"
    checks = (
        (len(url) > URL_MAX, f"url is {len(url)} characters long; at most {URL_MAX}"),
        (parts.scheme not in ("http", "https"), f"url {url[:80]!r} must start with http:// or https://"),
        (not host, f"url {url[:80]!r} has no host"),
        (parts.username is not None or parts.password is not None, "url must not hold credentials (the body is "
                                                                   "signed with the webhook's secret instead)"),
        (not url.isprintable() or " " in url, "url must hold printable characters and no spaces"),
    )  # fmt: skip
    return next((reason for failed, reason in checks if failed), None)


def events_problem(events: Iterable[str]) -> str | None:
    """Why this event filter cannot be stored, or None."""
    wanted = set(events)
    unknown = ", ".join(sorted(wanted - set(EVENTS)))
    if unknown:
        return f"unknown event(s) {unknown[:200]}; events are {', '.join(EVENTS)}"
    return None if wanted else f"a webhook needs at least one event ({', '.join(EVENTS)})"
