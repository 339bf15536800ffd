"""Webhook subscriptions in Redis, and the signed POST that delivers one event to one of them.

``yoloq:webhooks`` (hash, id → JSON entry) holds each subscription: its URL, its scope (a team, or one job) and the
team that owns it (the job's, for a job's), its event filter, its secret (``whsec_…``, 256 random bits, shown whole
only when the subscription is created: Redis must keep it to sign, as it keeps the registry), and its state
(``active``, or ``dead`` with the reason and time).
``yoloq:webhook-health:{id}`` (hash) counts the endpoint's failures in a row since ``failing_since`` and keeps the last
error. What the rules are (who is notified, retry, dead) is :mod:`routing.notify`.

:func:`post` sends one body with ``X-Yoloq-Signature: t=…,v1=…`` (:func:`routing.notify.sign`) and
``X-Yoloq-Event-Id``: only http(s), no redirect followed (a 3xx is a failure: a signed body never goes where the
subscriber did not say), no proxy from the environment, a short timeout, never to an address inside the fleet unless
the operator allowed its network (:mod:`routing.egress`, :mod:`infra.egress_http`); any 2xx is success.
"""

from __future__ import annotations

import http.client
import json
import re
import secrets
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import redis

from infra.egress_http import opener
from infra.redis_client import redis_errors
from routing.egress import Network, host_problem
from routing.names import team_problem
from routing.notify import (
    EVENT_ID_HEADER,
    EVENTS,
    SIGNATURE_HEADER,
    Notice,
    Subscription,
    body,
    events_problem,
    sign,
    url_problem,
)
from tasks.errors import WebhookNotFound, WebhookRejected
from tasks.records import iso, utc_now

SUBS = "yoloq:webhooks"
HEALTH = "yoloq:webhook-health:"  # + id
SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix of generated secrets, not one
USER_AGENT = "yoloq-webhooks/1"
MAX_PER_TEAM = 20  # each webhook is one signed POST per event from the fleet's address: no amplifier for a tenant
_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one POST went: delivered (2xx) or not, and a one-line detail (status or error)."""

    ok: bool
    detail: str


def subscription_of(entry: dict[str, Any]) -> Subscription:
    """The routing view of a stored entry."""
    return Subscription(str(entry["id"]), str(entry["url"]), team=entry.get("team"), job_id=entry.get("job_id"),
                        events=frozenset(entry.get("events", EVENTS)), dead=entry.get("state") == "dead",
                        since_ms=int(entry.get("since_ms", 0)))  # fmt: skip


def masked(secret: str) -> str:
    """A secret as lists show it: enough to tell two apart, never enough to sign."""
    return f"{secret[: len(SECRET_PREFIX) + 4]}…"


class WebhookStore:
    """Add, list, remove subscriptions; mark endpoints dead or alive; count failures."""

    def __init__(self, client: redis.Redis, url: str = "", allowed: tuple[Network, ...] = ()) -> None:
        self._r, self._url = client, url
        self.allowed = allowed  # inside networks its endpoints may be in (routing/egress.py)

    def add(self, url: str, *, team: str | None, job_id: str | None, events: list[str], by: str) -> dict[str, Any]:
        """Store a subscription; returns its entry with the secret in full (the only time it is shown)."""
        problem = (
            _destination_problem(url, self.allowed) or events_problem(events)
            or ("give a team or a job, not both" if (team is None) == (job_id is None) else None)
            or (team_problem(team) if team is not None else None)
            or (_job_problem(self._r, self._url, job_id) if job_id is not None else None)
        )  # fmt: skip
        if problem:
            raise WebhookRejected(f"invalid webhook: {problem}")
        owner = team if team is not None else self.owner_of_job(str(job_id))
        if sum(e.get("owner") == owner for e in self.all()) >= MAX_PER_TEAM:
            raise WebhookRejected(f"team {owner} already has {MAX_PER_TEAM} webhooks (the most a team may hold): "
                                  "remove one first (`yoloq webhook rm`)")  # fmt: skip
        entry: dict[str, Any] = {"id": f"wh_{secrets.token_hex(6)}", "url": url, "team": team, "job_id": job_id,
                 "owner": owner,
                 "events": [e for e in EVENTS if e in events], "secret": SECRET_PREFIX + secrets.token_urlsafe(32),
                 "state": "active", "created_at": iso(utc_now()), "created_by": by}  # fmt: skip
        with redis_errors(self._url):
            seconds, micros = cast("tuple[int, int]", self._r.time())  # the clock stream ids are written with
            entry["since_ms"] = int(seconds) * 1000 + int(micros) // 1000
            self._r.hset(SUBS, str(entry["id"]), json.dumps(entry))
        return entry

    def owner_of_job(self, job_id: str) -> str:
        """The team of a job (whose keys may manage its webhooks); "" when there is no such job."""
        with redis_errors(self._url):
            return str(self._r.hget(f"yoloq:job:{job_id}", "team") or "")

    def get(self, sub_id: str) -> dict[str, Any]:
        """One subscription's stored entry, secret included (to sign with), or WebhookNotFound."""
        with redis_errors(self._url):
            text = cast("str | None", self._r.hget(SUBS, sub_id))
        if not text:
            raise WebhookNotFound(f"no webhook {sub_id[:80]!r} (yoloq webhook list shows them)")
        return cast("dict[str, Any]", json.loads(text))

    def all(self) -> list[dict[str, Any]]:
        """Every stored entry, secrets included: for the notifier only."""
        with redis_errors(self._url):
            raw = cast("dict[str, str]", self._r.hgetall(SUBS))
        return [json.loads(text) for _, text in sorted(raw.items())]

    def shown(self) -> list[dict[str, Any]]:
        """Every subscription as lists show it: the secret masked, the endpoint's health added."""
        entries = self.all()
        with redis_errors(self._url):
            pipe = self._r.pipeline(transaction=False)
            for entry in entries:
                pipe.hgetall(HEALTH + entry["id"])
            healths = pipe.execute()
        return [
            {**e, "secret": masked(e["secret"]), "health": _health(h)} for e, h in zip(entries, healths, strict=True)
        ]

    def remove(self, sub_id: str) -> None:
        """Delete a subscription: nothing more is sent to it (queued deliveries are dropped when they fall due)."""
        with redis_errors(self._url):
            gone = self._r.hdel(SUBS, sub_id)
            self._r.delete(HEALTH + sub_id)
        if not gone:
            raise WebhookNotFound(f"no webhook {sub_id[:80]!r} (yoloq webhook list shows them)")

    def set_state(self, sub_id: str, dead_reason: str | None) -> None:
        """Mark the endpoint dead with ``dead_reason`` (reported by list, no more attempts), or active again (None)."""
        entry = self.get(sub_id)
        dead = dead_reason is not None
        entry.update(
            state="dead" if dead else "active", dead_reason=dead_reason, dead_at=iso(utc_now()) if dead else None
        )
        with redis_errors(self._url):
            if self._r.hexists(SUBS, sub_id):  # removed meanwhile: do not bring it back
                self._r.hset(SUBS, sub_id, json.dumps(entry))

    def failed(self, sub_id: str, detail: str, now: float) -> tuple[int, float]:
        """Count a failed attempt; returns (failures in a row, since when it has been failing)."""
        with redis_errors(self._url):
            pipe = self._r.pipeline(transaction=True)
            pipe.hincrby(HEALTH + sub_id, "consecutive", 1)
            pipe.hsetnx(HEALTH + sub_id, "failing_since", repr(now))
            pipe.hset(HEALTH + sub_id, mapping={"last_error": detail[:300], "last_failure_at": repr(now)})
            pipe.hget(HEALTH + sub_id, "failing_since")
            consecutive, _, _, since = pipe.execute()
        return int(consecutive), float(since)

    def succeeded(self, sub_id: str, now: float) -> None:
        """A 2xx: the failing streak is over."""
        with redis_errors(self._url):
            pipe = self._r.pipeline(transaction=True)
            pipe.hset(HEALTH + sub_id, mapping={"consecutive": 0, "last_success_at": repr(now)})
            pipe.hdel(HEALTH + sub_id, "failing_since")
            pipe.execute()


def _job_problem(client: redis.Redis, url: str, job_id: str) -> str | None:
    """Why a job subscription cannot be made: the id is malformed or names no job."""
    if not _JOB_ID.fullmatch(job_id):
        return f"job id {job_id[:80]!r} must be 1-128 of A-Z a-z 0-9 - _"
    with redis_errors(url):
        known = client.exists(f"yoloq:job:{job_id}")
    return None if known else f"no job {job_id!r}"


def _health(raw: dict[str, str]) -> dict[str, Any]:
    return {"consecutive_failures": int(raw.get("consecutive", 0)), "last_error": raw.get("last_error"),
            "last_success_at": float(raw["last_success_at"]) if "last_success_at" in raw else None}  # fmt: skip


def _destination_problem(url: str, allowed: tuple[Network, ...]) -> str | None:
    """Why a webhook may not go to ``url``: its form (routing.notify) or an inside IP literal (routing.egress); a
    name's addresses are judged when connecting (infra.egress_http)."""
    return url_problem(url) or host_problem(urlsplit(url).hostname or "", allowed)


def post(url: str, secret: str, *, event_id: str, payload: bytes, attempt: int, timeout_s: float,
         allowed: tuple[Network, ...] = ()) -> Outcome:  # fmt: skip
    """POST one signed event; never raises for what the endpoint does (refuses, times out, redirects, resets) nor
    reaches inside the fleet (``allowed``: the inside networks the operator opened, routing/egress.py)."""
    if problem := _destination_problem(url, allowed):  # checked when stored; again before anything leaves the host
        return Outcome(False, problem)
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, EVENT_ID_HEADER: event_id,
               SIGNATURE_HEADER: sign(secret, int(time.time()), payload), "X-Yoloq-Attempt": str(attempt)}  # fmt: skip
    request = urllib.request.Request(url, data=payload, headers=headers, method="POST")  # noqa: S310 - http(s) only
    try:
        with opener(allowed).open(request, timeout=timeout_s) as response:
            status = int(response.status)
    except urllib.error.HTTPError as err:
        return Outcome(False, f"HTTP {err.code}")
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as err:  # a bad status line too
        reason = getattr(err, "reason", err)
        return Outcome(False, f"{type(err).__name__}: {reason}"[:300])
    return Outcome(200 <= status < 300, f"HTTP {status}")


def send_test(store: WebhookStore, sub_id: str, timeout_s: float = 5.0) -> tuple[str, Outcome]:
    """POST a signed ``test`` event to one subscription now; a dead endpoint that answers 2xx is alive again (how an
    operator brings one back once it is fixed). Returns the event id sent and how it went."""
    entry = store.get(sub_id)
    event_id = f"test-{secrets.token_hex(6)}"
    notice = Notice(event_id, "test", entry.get("job_id") or "", entry.get("team") or "")
    payload = body(notice, {"at": iso(utc_now()), "reason": "yoloq webhook test"}, {})
    outcome = post(entry["url"], entry["secret"], event_id=event_id, payload=payload, attempt=1, timeout_s=timeout_s,
                   allowed=store.allowed)  # fmt: skip
    now = time.time()
    if outcome.ok:
        store.succeeded(sub_id, now)
        if entry.get("state") == "dead":
            store.set_state(sub_id, None)
    else:
        store.failed(sub_id, outcome.detail, now)
    return event_id, outcome
