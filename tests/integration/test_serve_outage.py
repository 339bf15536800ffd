"""The unlucky operator's Redis while a deployment serves: frozen for real (``kill -STOP`` on the session's
redis-server, then ``kill -CONT``) for longer than every lease, claim and presence heartbeat, with requests queued
and a batch perhaps held by the replica. Nothing queued is lost; the replica the waited-out latencies make the
serving scaler ask for, which finds no free GPU, is withdrawn once the burst is over (it used to wait for a GPU for
ever: a cold start not begun was protected like one under way); the deployment ends with the one replica it asked
for, and goes on serving."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from infra.audit import AuditLog
from infra.redis_client import connect
from tasks.states import TERMINAL, JobState
from tests.fleet import poll, stopped, yoloq_cli
from tests.serving import ALIAS, ask, images_of, push, ready_replicas, register

pytestmark = pytest.mark.integration

FREEZE_S = 15.0  # 5x the session's lease TTL (3 s), 3x its claim TTL (5 s), past every presence entry's liveness


def _listed(services: Any) -> dict[str, Any]:
    """The deployment as ``yoloq serve --list --json`` shows it."""
    done = yoloq_cli(services, "serve", "--list", "--json")
    assert done.returncode == 0, done.stderr
    [row] = json.loads(done.stdout)
    assert row["deployment"]["alias"] == ALIAS
    return dict(row)


def _scaled(audit: AuditLog, what: str) -> bool:
    """Whether the serving scaler changed the deployment for ``what`` (its audit entries' reasons)."""
    return any(e.get("type") == "deployment-changed" and e.get("by") == "autoscaler"
               and str(e.get("reason", "")).startswith(what) for e in audit.entries(500))  # fmt: skip


def test_a_redis_freeze_while_serving_loses_no_request_and_leaves_one_replica(fleet, services, models, queue, trained):
    # Given parts served by `yoloq serve --replicas 1` on a one-GPU fleet under a supervisor whose serving scaler
    # takes a surplus replica back after 2 s
    fleet.start("0:A100:40")
    services.start_supervisor("--interval", "0.5", "--serve-down-delay", "2")
    models.set_alias(ALIAS, register(models, services, trained), by="test")
    done = yoloq_cli(services, "serve", "parts", "--replicas", "1", "--team", "vision", "--json")
    assert done.returncode == 0, done.stderr
    ready_replicas(services)
    images = images_of(trained)
    assert ask(queue, images[0]).get("version") == 1
    # When twelve requests are queued and Redis freezes at once, for longer than the replica's lease and heartbeat
    waiting = [push(queue, images[i % len(images)], wait_s=FREEZE_S + 120) for i in range(12)]
    assert services.redis.process is not None
    with stopped(services.redis.process.pid):
        time.sleep(FREEZE_S)  # the outage itself, not a wait for something to happen
    # Then every one of them is answered after the thaw
    replies = [queue.wait_reply(rid, 120) for rid in waiting]
    assert all(r is not None and r.get("version") == 1 for r in replies), replies

    # And while requests flow, their waited-out latencies (a p99 far over target) make the scaler ask for a second
    # replica, which waits for a GPU the one-GPU fleet does not have
    audit = AuditLog(connect(services.settings.redis_url))
    poll(lambda: ask(queue, images[0]).get("version") == 1 and _scaled(audit, "scale out to 2"), 60,
         "the scaler to ask for a second replica")  # fmt: skip

    # And once they stop, that replica is withdrawn instead of waiting for a GPU for ever: the deployment settles on
    # one ready replica of one live job
    def settled() -> dict[str, Any] | None:
        row = _listed(services)
        active = [j for j in row["jobs"] if JobState(j["state"]) not in TERMINAL]
        return row if len(active) == 1 and [e["state"] for e in row["live"]] == ["ready"] else None

    row = poll(settled, 60, "one ready replica of one live job")
    # And it serves new requests
    assert [ask(queue, image).get("version") for image in images[:4]] == [1] * 4
    assert row["deployment"]["replicas"] == 1 and _scaled(audit, "scale in to 1"), row["deployment"]
