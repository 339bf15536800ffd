"""Webhooks end to end: real Redis, a real HTTP receiver that verifies each signature, a real notifier (in a thread, or
a process killed with -9), and jobs moving through the registry's real transitions (and real workers)."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from infra.notify_queue import DUE, STREAM, NotifyQueue
from infra.processes import ManagedProcess
from infra.redis_client import connect
from infra.webhooks import MAX_PER_TEAM, WebhookStore, send_test
from routing.egress import networks
from routing.notify import Policy
from tasks.errors import WebhookRejected
from tasks.records import Event, iso, utc_now
from tasks.specs import ProbeSpec
from tasks.states import JobState
from tests.fleet import poll, stop_supervisors, yoloq_cli
from tests.webhook_receiver import Receiver, serving_receiver
from workers.notifier import Notifier, Options
from yoloq.client import Client

pytestmark = pytest.mark.integration

FAST = Policy(base_s=0.05, cap_s=0.2, max_attempts=50, max_age_s=60.0, dead_after_failures=1000, dead_after_s=0.0)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serving_receiver() as recv:
        yield recv


@pytest.fixture
def notifiers(services) -> Iterator[Any]:
    """Start in-thread notifiers on the session's Redis (stopped after the test)."""
    running: list[tuple[threading.Thread, threading.Event]] = []

    def start(policy: Policy = FAST, name: str = "t", **opts: Any) -> Notifier:
        options = Options(interval_s=0.1, timeout_s=2.0, lease_s=3.0, policy=policy, **opts)
        notifier = Notifier(connect(services.settings.redis_url, read_timeout_s=5), options, name,
                            allowed=services.settings.webhook_networks())  # fmt: skip
        stop = threading.Event()
        thread = threading.Thread(target=notifier.run, args=(stop,), daemon=True)
        thread.start()
        running.append((thread, stop))
        return notifier

    yield start
    for thread, stop in running:
        stop.set()
        thread.join(10)


def _store(services) -> WebhookStore:
    return WebhookStore(
        connect(services.settings.redis_url), services.settings.redis_url, services.settings.webhook_networks()
    )  # the session allows loopback (tests/conftest.py)


def test_webhooks_never_reach_inside_the_fleet_unless_an_operator_allows_the_network(wiped, services, receiver):
    # Given a store whose operator allowed no inside network (the default)
    store = WebhookStore(connect(services.settings.redis_url), services.settings.redis_url)
    # When a team points webhooks at loopback, the cloud metadata service or a private address: refused when stored
    for url in ("http://127.0.0.1:8888/buckets/x", "http://169.254.169.254/latest/meta-data/", "http://10.1.2.3/",
                "http://[::1]:9333/", "http://[::ffff:127.0.0.1]/", "http://0.0.0.0:6379/"):  # fmt: skip
        with pytest.raises(WebhookRejected, match="inside the fleet"):
            store.add(url, team="vision", job_id=None, events=["cancelled"], by="test")
    assert store.all() == []
    # And a name that resolves to loopback is stored (names are judged when connecting) but nothing is ever sent
    entry = store.add(receiver.url.replace("127.0.0.1", "localhost") + "/named", team="vision", job_id=None,
                      events=["cancelled"], by="test")  # fmt: skip
    _, outcome = send_test(store, entry["id"])
    assert not outcome.ok and "resolves to a non-public address" in outcome.detail, outcome
    assert "127.0.0.1" not in outcome.detail and "::1" not in outcome.detail  # no internal DNS oracle for tenants
    assert receiver.seen == []
    # Then the operator's allowance opens exactly that network, and the same endpoint is reached
    allowed = WebhookStore(
        connect(services.settings.redis_url), services.settings.redis_url, networks("127.0.0.0/8, ::1/128")
    )
    receiver.secrets["/named"] = entry["secret"]
    _, outcome = send_test(allowed, entry["id"])
    assert outcome.ok and len(receiver.seen) == 1 and receiver.seen[0]["signed"]


def _subscribe(store: WebhookStore, recv: Receiver, path: str, **scope: Any) -> dict[str, Any]:
    entry = store.add(recv.url + path, events=scope.pop("events", ["held", "released", "started", "preempted",
                                                                   "succeeded", "failed", "cancelled"]),
                      by="test", **({"team": "vision", "job_id": None} if not scope else {"team": None, "job_id": None,
                                                                               **scope}))  # fmt: skip
    recv.secrets[path] = entry["secret"]
    return entry


def test_no_webhook_no_stream_entry_and_a_subscription_starts_the_flow(wiped: Client, services) -> None:
    # Given no webhook at all: a job's changes cost nothing (the registry writes no notify entry)
    redis = connect(services.settings.redis_url)
    wiped.cancel(wiped.submit(ProbeSpec(seconds=0, team="vision")).job_id)
    assert redis.xlen(STREAM) == 0
    # When a webhook exists, the same change is in the stream, written by the transition itself
    _store(services).add("http://127.0.0.1:9/x", team="vision", job_id=None, events=["cancelled"], by="test")
    job = wiped.submit(ProbeSpec(seconds=0, team="vision")).job_id
    wiped.cancel(job)
    entries = redis.xrange(STREAM)
    assert [(f["job"], json.loads(f["event"])["type"]) for _, f in entries] == [(job, "cancelled")]


def test_failed_deliveries_are_retried_under_one_event_id_each_signed(wiped, services, receiver, notifiers) -> None:
    # Given a receiver that fails its first 3 requests, subscribed to team vision's jobs
    receiver.fail_first = 3
    _subscribe(_store(services), receiver, "/team")
    notifiers()
    # When two jobs are cancelled
    jobs = [wiped.submit(ProbeSpec(seconds=0, team="vision")).job_id for _ in range(2)]
    for job in jobs:
        wiped.cancel(job)
    # Then each event arrives, after retries, every time signed and under the same id
    poll(lambda: {s["doc"]["job"]["job_id"] for s in receiver.seen if s["attempt"] > 0} >= set(jobs)
         and len(receiver.seen) >= 5, 20, "both events delivered past 3 failures")  # fmt: skip
    poll(lambda: connect(services.settings.redis_url).zcard(DUE) == 0, 20, "the due queue to empty")
    assert all(s["signed"] for s in receiver.seen)
    ids = receiver.ids("cancelled")
    assert len(set(ids)) == 2 and len(ids) == 5  # 3 failures + 2 successes: retried, not duplicated once delivered
    assert max(s["attempt"] for s in receiver.seen) >= 2
    assert receiver.seen[-1]["doc"]["job"] == {**receiver.seen[-1]["doc"]["job"], "team": "vision", "kind": "probe"}


def test_a_dead_endpoint_is_reported_and_not_retried_forever(wiped, services, receiver, notifiers) -> None:
    # Given an endpoint that always answers 503, and a policy that calls it dead after 3 failures in a row
    receiver.status, store = 503, _store(services)
    entry = _subscribe(store, receiver, "/dead")
    notifiers(Policy(base_s=0.05, cap_s=0.1, max_attempts=100, dead_after_failures=3, dead_after_s=0.0))
    # When a job is cancelled
    wiped.cancel(wiped.submit(ProbeSpec(seconds=0, team="vision")).job_id)
    # Then after 3 attempts the endpoint is dead, with the reason, and the delivery is off the queue
    shown = poll(lambda: next((e for e in store.shown() if e["state"] == "dead"), None), 20, "the endpoint dead")
    assert shown["id"] == entry["id"] and "3 failures in a row" in shown["dead_reason"] and "HTTP 503" in shown[
        "dead_reason"]  # fmt: skip
    assert shown["secret"].endswith("…") and len(shown["secret"]) < 16  # never printed back in full
    assert connect(services.settings.redis_url).zcard(DUE) == 0
    assert len(receiver.seen) == 3
    # And later events are not sent to it at all; the CLI and the metric report it
    wiped.cancel(wiped.submit(ProbeSpec(seconds=0, team="vision")).job_id)
    listed = json.loads(yoloq_cli(services, "webhook", "list", "--json").stdout)
    assert listed["webhooks"][0]["state"] == "dead"
    poll(lambda: NotifyQueue(connect(services.settings.redis_url), "x").backlog()["events_unread"] == 0, 10,
         "the second event read")  # fmt: skip
    assert len(receiver.seen) == 3
    assert float(connect(services.settings.redis_url).hget("yoloq:metrics:counter:webhook_deliveries", "dead")) == 1
    # And once it answers again, a test brings it back
    receiver.status = 204
    _, outcome = send_test(store, entry["id"])
    assert outcome.ok and store.shown()[0]["state"] == "active" and receiver.seen[-1]["signed"]


def test_a_notifier_killed_mid_delivery_is_replaced_and_the_event_redelivered(wiped, services, receiver, notifiers):
    # Given a notifier process whose first POST the receiver holds open
    receiver.hold = threading.Event()
    _subscribe(_store(services), receiver, "/kill")
    log = services.settings.home / "logs" / "notifier-test.log"
    proc = ManagedProcess("notifier-test", [sys.executable, "-m", "yoloq", "notifier", "--interval", "0.1", "--timeout",
                                            "1", "--lease", "2"], log, services.env())  # fmt: skip
    try:
        job = wiped.submit(ProbeSpec(seconds=0, team="vision")).job_id
        wiped.cancel(job)
        poll(lambda: receiver.seen, 30, "the first POST")
        # When the notifier is killed with -9 while that POST is in flight
        os.killpg(proc.pid, signal.SIGKILL)
        proc.proc.wait(10)
    finally:
        proc.stop(5)
    receiver.hold.set()
    # Then another notifier delivers the same event again once the dead one's lease ends: at least once, same id
    notifiers(name="replacement")
    poll(lambda: len(receiver.ids("cancelled")) >= 2, 20, "the event delivered again")
    assert len(set(receiver.ids("cancelled"))) == 1 and all(s["signed"] for s in receiver.seen)
    poll(lambda: connect(services.settings.redis_url).zcard(DUE) == 0, 10, "the delivery finished")


def test_an_entry_read_by_a_notifier_that_died_before_fanning_out_is_claimed(wiped, services, receiver, notifiers):
    # Given a stream entry read by a consumer that died before it queued the deliveries (never acknowledged)
    _subscribe(_store(services), receiver, "/claim")
    dead = NotifyQueue(connect(services.settings.redis_url), "dead-consumer")
    dead.ensure_group()
    wiped.cancel(wiped.submit(ProbeSpec(seconds=0, team="vision")).job_id)
    assert len(dead.read(10, 100, claim_idle_ms=60_000)) == 1
    # When a live notifier runs with a short claim time
    notifiers(claim_idle_ms=200)
    # Then it takes the entry over and delivers it
    poll(lambda: receiver.ids("cancelled"), 20, "the claimed entry delivered")


def test_a_real_job_reports_held_released_started_succeeded(fleet, client, services, receiver, notifiers) -> None:
    # Given a job subscription's receiver and a team subscription's, a worker, a supervisor and a notifier
    fleet.start("0:A100:40")
    services.start_supervisor("--interval", "0.2", "--leader-ttl", "3")
    try:
        store = _store(services)
        _subscribe(store, receiver, "/team", team="risk")
        notifiers()
        # When a critical job of a team without pre-approval is held, approved, released and run
        handle = client.submit(ProbeSpec(seconds=1, tier="critical", team="risk"))
        assert handle.state is JobState.HELD
        _subscribe(store, receiver, "/job", job_id=handle.job_id, events=["succeeded"])  # same receiver, other URL
        assert yoloq_cli(services, "approve", handle.job_id).returncode == 0
        assert handle.wait(timeout_s=60).state is JobState.SUCCEEDED
        # Then the team receiver saw each change in order, signed, and the job receiver only what it asked for
        want = ["held", "released", "started", "succeeded"]
        poll(lambda: [s["type"] for s in receiver.seen if s["path"] == "/team"] == want, 20, "every state change")
        poll(lambda: [s["type"] for s in receiver.seen if s["path"] == "/job"] == ["succeeded"], 20, "job receiver")
        assert all(s["signed"] and s["doc"]["job"]["job_id"] == handle.job_id for s in receiver.seen)
        assert len(set(receiver.ids())) == 4  # the job receiver got the same event id as the team receiver
    finally:
        stop_supervisors(services)


def test_a_preempted_probe_and_a_deployment_are_told_too(fleet, client, services, receiver, notifiers) -> None:
    # Given a webhook for team ops and a running low probe
    fleet.start("0:A100:40")
    _subscribe(_store(services), receiver, "/ops", team="ops", events=["started", "preempted", "deployed"])
    notifiers()
    handle = client.submit(ProbeSpec(seconds=4, tier="low", team="ops"))
    poll(lambda: int(client.job(handle.job_id).progress.get("step", 0)) >= 1, 30, "a probe step")
    # When an operator preempts it, and (as a train --deploy job's last step does) a deployment is recorded
    client.preempt(handle.job_id, reason="drill")
    assert handle.wait(timeout_s=60).state is JobState.SUCCEEDED
    registry = client.registry
    registry.append_event(handle.job_id, Event(at=iso(utc_now()), type="deployed", reason="det serves v1 to 100 %"))
    # Then the receiver saw the preemption with its reason, both starts, and the deployment, all signed
    want = ["started", "preempted", "started", "deployed"]
    seen = poll(lambda: [s for s in receiver.seen if s["path"] == "/ops"] if len(receiver.seen) >= 4 else None, 30,
                "four events")  # fmt: skip
    assert [s["type"] for s in seen] == want and all(s["signed"] for s in seen)
    assert seen[1]["doc"]["reason"] == "drill" and seen[1]["doc"]["job"]["state"] == "queued"
    assert seen[3]["doc"]["reason"] == "det serves v1 to 100 %"


def test_a_malformed_answer_or_stream_entry_fails_one_delivery_never_the_notifier(wiped, services, receiver, notifiers):
    # Given an endpoint that answers garbage instead of an HTTP status line (http.client raises, not an OSError)
    garbage = socket.socket()
    garbage.bind(("127.0.0.1", 0))
    garbage.listen(8)

    def answer_garbage() -> None:
        while True:
            try:
                conn, _ = garbage.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(b"FOO 200\r\n\r\n")

    threading.Thread(target=answer_garbage, daemon=True).start()
    store = _store(services)
    bad = store.add(f"http://127.0.0.1:{garbage.getsockname()[1]}/x", team="vision", job_id=None, events=["cancelled"],
                    by="test")  # fmt: skip
    _, outcome = send_test(store, bad["id"])
    assert not outcome.ok and "BadStatusLine" in outcome.detail, outcome
    # And a stream entry whose event is not JSON, ahead of a real one
    _subscribe(store, receiver, "/team", events=["cancelled"])
    connect(services.settings.redis_url).xadd(STREAM, {"job": "j-x", "event": "{not json"})
    notifier = notifiers()
    # When a job is cancelled
    job = wiped.submit(ProbeSpec(seconds=0, team="vision")).job_id
    wiped.cancel(job)
    # Then the good endpoint gets it and the notifier is still running after the garbage endpoint's failures
    poll(lambda: receiver.ids("cancelled"), 20, "the cancelled event at the good endpoint")
    assert receiver.seen[-1]["doc"]["job"]["job_id"] == job

    def failures() -> int:
        return sum(e["health"]["consecutive_failures"] for e in store.shown() if e["id"] == bad["id"])

    poll(lambda: failures() >= 2, 20, "the notifier's own failed POST to the garbage endpoint counted")
    # And the notifier still delivers: a second job's event arrives after those failures
    second = wiped.submit(ProbeSpec(seconds=0, team="vision")).job_id
    wiped.cancel(second)
    poll(lambda: second in {s["doc"]["job"]["job_id"] for s in receiver.seen}, 20, "a later event delivered")
    assert notifier.queue.backlog()["events_unread"] == 0
    garbage.close()


def test_a_team_holds_at_most_max_per_team_webhooks(wiped, services):
    store = _store(services)
    for n in range(MAX_PER_TEAM):
        store.add(f"https://hooks.example.com/{n}", team="vision", job_id=None, events=["failed"], by="test")
    with pytest.raises(WebhookRejected, match=f"already has {MAX_PER_TEAM} webhooks"):
        store.add("https://hooks.example.com/one-more", team="vision", job_id=None, events=["failed"], by="test")
    store.add("https://hooks.example.com/other", team="audio", job_id=None, events=["failed"], by="test")
    assert len(store.all()) == MAX_PER_TEAM + 1
