"""``yoloq webhook add|list|rm|test`` and ``yoloq notifier``: get told when a job changes (docs/notifications.md).

A webhook is a URL that receives a signed JSON POST for each event of a team's jobs or of one job (held, released,
started, preempted, succeeded, failed, cancelled, deployed). Its secret is shown once, when it is added; lists show a
dead endpoint with the reason. ``yoloq notifier`` delivers (``yoloq up`` starts one).
"""

from __future__ import annotations

import json
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

import click

from routing.notify import EVENTS
from yoloq.cli import session
from yoloq.cli.session import ACTOR

if TYPE_CHECKING:
    from infra.webhooks import WebhookStore

EVENT_NAMES = ",".join(EVENTS)


def _store() -> WebhookStore:
    from infra.webhooks import WebhookStore

    client = session.client()
    return WebhookStore(client.registry.client, client.settings.redis_url, client.settings.webhook_networks())


@click.group("webhook")
def webhook_group() -> None:
    """Webhooks: a signed POST to your URL when a team's or a job's state changes."""


@webhook_group.command("add")
@click.option("--url", required=True, help="http(s) URL that receives the POSTs (no redirect is followed).")
@click.option("--team", default=None, help="Every job of this team.")
@click.option("--job", "job_id", default=None, help="This one job.")
@click.option("--events", default=EVENT_NAMES, show_default=True, help="Comma-separated event types to send.")
@click.option("--json", "as_json", is_flag=True, help="Print the subscription with its secret as JSON.")
def add_cmd(url: str, team: str | None, job_id: str | None, events: str, as_json: bool) -> None:
    """Subscribe URL to a team's or one job's events; prints the signing secret (shown only now)."""
    wanted = [e.strip() for e in events.split(",") if e.strip()]
    entry = _store().add(url, team=team, job_id=job_id, events=wanted, by=ACTOR)
    if as_json:
        click.echo(json.dumps(entry))
        return
    click.echo(entry["secret"])
    scope = f"team {team}" if team else f"job {job_id}"
    click.echo(f"webhook {entry['id']} ({scope}, events {','.join(entry['events'])}) → {url}: the secret above "
               "signs every POST (X-Yoloq-Signature); shown once, store it now", err=True)  # fmt: skip


def _line(e: dict[str, Any]) -> str:
    scope = f"team={e['team']}" if e.get("team") else f"job={e['job_id']}"
    state = e["state"] if e["state"] != "dead" else f"DEAD ({e.get('dead_reason')})"
    failing = e["health"]["consecutive_failures"]
    tail = f"  failing {failing}x: {e['health']['last_error']}" if failing and e["state"] != "dead" else ""
    return f"{e['id']}  {scope:<20} {e['url']}  events={','.join(e['events'])}  {state}{tail}"


@webhook_group.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_cmd(as_json: bool) -> None:
    """Every webhook with its state (a dead endpoint with the reason) and health; secrets masked."""
    from infra.notify_queue import NotifyQueue

    store = _store()
    entries = store.shown()
    backlog = NotifyQueue(session.client().registry.client, "cli").backlog()
    if as_json:
        click.echo(json.dumps({"webhooks": entries, **backlog}, indent=2))
        return
    for e in entries:
        click.echo(_line(e))
    click.echo(f"{backlog['deliveries_queued']} deliveries queued, {backlog['events_unread']} events not yet read")


@webhook_group.command("rm")
@click.argument("webhook_id")
def rm_cmd(webhook_id: str) -> None:
    """Delete a webhook: nothing more is sent to it."""
    _store().remove(webhook_id)
    click.echo(f"webhook {webhook_id}: removed")


@webhook_group.command("test")
@click.argument("webhook_id")
@click.option("--json", "as_json", is_flag=True)
def test_cmd(webhook_id: str, as_json: bool) -> None:
    """POST a signed test event now and say how it went; a dead endpoint that answers 2xx is active again."""
    from infra.webhooks import send_test

    event_id, outcome = send_test(_store(), webhook_id)
    if as_json:
        click.echo(json.dumps({"id": webhook_id, "event_id": event_id, "ok": outcome.ok, "detail": outcome.detail}))
    else:
        click.echo(f"webhook {webhook_id}: test event {event_id} {'delivered' if outcome.ok else 'failed'} "
                   f"({outcome.detail})")  # fmt: skip
    if not outcome.ok:
        raise SystemExit(1)


@click.command("notifier")
@click.option("--interval", "interval_s", type=click.FloatRange(0.05), default=1.0, show_default=True,
              help="Longest wait for new events, seconds.")  # fmt: skip
@click.option("--timeout", "timeout_s", type=click.FloatRange(0.1, 60), default=5.0, show_default=True,
              help="Seconds one POST may take.")  # fmt: skip
@click.option("--lease", "lease_s", type=click.FloatRange(0.5), default=30.0, show_default=True,
              help="A delivery taken by a notifier that dies is due again after this many seconds.")  # fmt: skip
def notifier_cmd(interval_s: float, timeout_s: float, lease_s: float) -> None:
    """Deliver webhooks (run one or more; they share the work through Redis)."""
    from infra.settings import load_settings
    from workers.notifier import Options, build_notifier

    def say(text: str) -> None:
        click.echo(f"[{time.strftime('%H:%M:%S')}] {text}")

    if lease_s <= timeout_s:
        raise click.BadParameter("must exceed --timeout (a POST in flight must not be retried meanwhile)",
                                 param_hint="--lease")  # fmt: skip
    options = Options(interval_s=interval_s, timeout_s=timeout_s, lease_s=lease_s,
                      claim_idle_ms=int(max(lease_s, 1.0) * 1000))  # fmt: skip
    notifier = build_notifier(load_settings(), options, say)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    notifier.run(stop)
