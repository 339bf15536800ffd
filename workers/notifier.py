"""The notifier: tell webhooks what happened to their jobs, at least once, without ever holding the scheduler up.

Each tick: read new notify-stream entries as one consumer of the group (or claim those a dead notifier left
unacknowledged), fan each out to its subscriptions (:func:`routing.notify.targets`) into the due queue and
acknowledge it in the same step; then take the deliveries now due, each under a lease, and POST them in parallel
(:func:`infra.webhooks.post`). A 2xx finishes a delivery; a failure is decided by :func:`routing.notify.after_failure`:
retried later, given up, or its endpoint declared dead (kept in the subscription with the reason, counted in
``yoloq_webhook_deliveries_total{outcome}``, logged). Any number of notifiers may run: the group splits the stream
and the leases split the deliveries. ``yoloq up`` starts one; ``yoloq notifier`` runs one alone.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import redis

from infra import metrics
from infra.notify_queue import NotifyQueue
from infra.redis_client import connect, redis_errors
from infra.settings import Settings
from infra.webhooks import WebhookStore, post, subscription_of
from routing.egress import Network
from routing.notify import Failure, Notice, Policy, after_failure, body, notify_type, stream_order, targets
from tasks.errors import WebhookNotFound, YoloqError

log = logging.getLogger("yoloq.notifier")


@dataclass(frozen=True)
class Options:
    """How the loop runs; when to retry or give up is :class:`routing.notify.Policy`."""

    interval_s: float = 1.0  # the longest wait for new events when no delivery falls due sooner
    timeout_s: float = 5.0  # one POST
    lease_s: float = 30.0  # a taken delivery is due again after this unless finished (its notifier died)
    claim_idle_ms: int = 30_000  # a stream entry read but not fanned out this long is taken from its dead reader
    batch: int = 100
    parallel: int = 8
    policy: Policy = field(default_factory=Policy)


class Notifier:
    """One notifier process's loop."""

    def __init__(
        self, client: redis.Redis, options: Options, consumer: str, url: str = "", allowed: tuple[Network, ...] = ()
    ) -> None:
        self.options, self._r, self._url = options, client, url
        self.queue = NotifyQueue(client, consumer, url)
        self.store = WebhookStore(client, url, allowed)
        self._pool = ThreadPoolExecutor(max_workers=options.parallel, thread_name_prefix="webhook")

    def fan_out(self, block_ms: int) -> int:
        """Queue the deliveries of the stream's next entries and acknowledge them; returns how many entries."""
        rows = self.queue.read(self.options.batch, block_ms, self.options.claim_idle_ms)
        if not rows:
            return 0
        subs = [subscription_of(e) for e in self.store.all()]
        jobs = self.queue.jobs(sorted({job_id for _, job_id, _ in rows}))
        deliveries = []
        for entry_id, job_id, event in rows:
            kind = notify_type(str(event.get("type", "")), event.get("state"))
            job = jobs.get(job_id, {})
            notice = Notice(entry_id, kind or "", job_id, job.get("team", ""))
            for sub in targets(subs, notice) if kind else []:
                deliveries.append({"sub": sub.sub_id, "event_id": entry_id, "type": kind,
                                   "body": body(notice, event, job).decode(), "attempts": 0})  # fmt: skip
        self.queue.enqueue([r[0] for r in rows], deliveries, time.time())
        return len(rows)

    def deliver_due(self, now: float | None = None) -> int:
        """POST every delivery due now and settle each: endpoints in parallel, each endpoint's events one after the
        other in stream order (a receiver sees a job's ``started`` before its ``succeeded``); returns how many were
        attempted."""
        now = time.time() if now is None else now
        groups: dict[str, list[tuple[str, dict[str, Any] | None]]] = defaultdict(list)
        for name, delivery in self.queue.take_due(now, self.options.lease_s, self.options.batch):
            groups[delivery["sub"] if delivery else name].append((name, delivery))
        ordered = [sorted(items, key=lambda item: stream_order(item[0])) for items in groups.values()]
        return sum(self._pool.map(lambda items: sum(self._deliver_one(item) for item in items), ordered))

    def _deliver_one(self, item: tuple[str, dict[str, Any] | None]) -> int:
        name, delivery = item
        try:
            return self._attempt(name, delivery)
        except YoloqError as err:  # Redis went away mid-way: the lease makes the delivery due again
            log.warning("delivery %s: %s", name, err)
            return 0
        except Exception:  # a bug or an endpoint's surprise must not end the loop for every tenant: lease retries it
            log.exception("delivery %s failed unexpectedly; due again when its lease runs out", name)
            return 0

    def _attempt(self, name: str, delivery: dict[str, Any] | None) -> int:
        try:
            entry = self.store.get(delivery["sub"]) if delivery else None
        except WebhookNotFound:
            entry = None
        if delivery is None or entry is None or entry.get("state") == "dead":
            self.queue.finish(name)  # its subscription was removed, or its endpoint is dead: reported there
            self._count("dropped")
            return 0
        attempts = int(delivery["attempts"]) + 1
        outcome = post(entry["url"], entry["secret"], event_id=delivery["event_id"], payload=delivery["body"].encode(),
                       attempt=attempts, timeout_s=self.options.timeout_s, allowed=self.store.allowed)  # fmt: skip
        now = time.time()
        if outcome.ok:
            self.store.succeeded(entry["id"], now)
            self.queue.finish(name)
            self._count("delivered")
            return 1
        consecutive, since = self.store.failed(entry["id"], outcome.detail, now)
        first_at = float(delivery.get("first_at", now))
        failure = Failure(attempts=attempts, first_at=first_at, consecutive=consecutive, failing_since=since)
        verdict = after_failure(failure, name, now, self.options.policy)
        if verdict.retry_at is not None:
            self.queue.retry(name, {**delivery, "attempts": attempts, "first_at": first_at,
                                    "last_error": outcome.detail}, verdict.retry_at)  # fmt: skip
            self._count("retried")
            return 1
        self.queue.finish(name)
        if verdict.dead:
            self.store.set_state(entry["id"], f"{verdict.reason}; last: {outcome.detail}")
        self._count("dead" if verdict.dead else "given_up")
        log.warning("webhook %s event %s: %s (%s)", entry["id"], delivery["event_id"], verdict.reason, outcome.detail)
        return 1

    def _count(self, outcome: str) -> None:
        with redis_errors(self._url):
            metrics.count(self._r, "webhook_deliveries", outcome)

    def wait_ms(self) -> int:
        """How long the next read may block: until the earliest delivery falls due, at most the interval."""
        head = self.queue.next_due()
        wait_s = self.options.interval_s if head is None else min(self.options.interval_s, head - time.time())
        return int(max(wait_s, 0.0) * 1000)

    def tick(self) -> None:
        """Fan out what is new (waiting at most until the next delivery is due), then deliver what is due."""
        self.fan_out(self.wait_ms())
        self.deliver_due()

    def run(self, stop: threading.Event) -> None:
        """Tick until ``stop`` is set; an error of one tick (Redis away) is logged and the next one retries."""
        grouped = False
        try:
            while not stop.is_set():
                try:
                    if not grouped:  # in the loop: a notifier started while Redis is away waits for it
                        self.queue.ensure_group()
                        grouped = True
                    self.tick()
                except (YoloqError, redis.RedisError) as err:
                    log.warning("notifier tick failed: %s", err)
                    stop.wait(self.options.interval_s)
        finally:
            self._pool.shutdown(wait=True)


def build_notifier(settings: Settings, options: Options, say: Callable[[str], None] = print) -> Notifier:
    """A notifier on the settings' Redis, its consumer named by host and pid (a restart is a new consumer)."""
    read_timeout = options.interval_s + 5.0  # XREADGROUP BLOCK must not outlast the socket timeout
    client = connect(settings.redis_url, read_timeout_s=read_timeout)
    say(f"notifier {settings.host()}:{os.getpid()} delivering webhooks")
    return Notifier(
        client, options, f"{settings.host()}:{os.getpid()}", settings.redis_url, settings.webhook_networks()
    )
