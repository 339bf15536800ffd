"""The unlucky operator's Redis while a deployment serves, and what the drill found in the serving scaler.

1. Redis frozen for real (``kill -STOP`` on the session's redis-server, then ``kill -CONT``) for longer than every
   lease, claim and presence heartbeat, with requests queued and a batch perhaps held by the replica: nothing queued
   is lost, the deployment ends with the one replica it asked for, and it goes on serving.
2. The first runs of that drill saw the waited-out latencies (a p99 of 15 s) make the scaler ask for a second
   replica, which on a full fleet waited in the GPU queue for ever: scale-in protected it as a cold start under way.
   The latencies now count only from the deployment's last change (``routing.serve_scale.judged_p99``), and a
   surplus replica still waiting for a GPU is withdrawn once nothing is queued; the second test asks for that
   replica on purpose (a p99 target no request can meet) and sees it withdrawn."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from infra.audit import AuditLog
from infra.deployments import Deployments
from infra.redis_client import connect
from tasks.states import TERMINAL, JobState
from tests.fleet import poll, stopped, yoloq_cli
from tests.serving import ALIAS, ask, images_of, push, ready_replicas, register

pytestmark = pytest.mark.integration

FREEZE_S = 15.0  # 5x the session's lease TTL (3 s), 3x its claim TTL (5 s), past every presence entry's liveness


def _serve_one(fleet: Any, services: Any, models: Any, trained: Any) -> None:
    """parts served by ``yoloq serve --replicas 1`` on a one-GPU fleet, under a supervisor whose serving scaler takes
    a surplus replica back after 2 s; returns once the replica is ready."""
    fleet.start("0:A100:40")
    services.start_supervisor("--interval", "0.5", "--serve-down-delay", "2")
    models.set_alias(ALIAS, register(models, services, trained), by="test")
    done = yoloq_cli(services, "serve", "parts", "--replicas", "1", "--team", "vision", "--json")
    assert done.returncode == 0, done.stderr
    ready_replicas(services)


def _settled(services: Any) -> dict[str, Any] | None:
    """The deployment as ``yoloq serve --list --json`` shows it, once it has one live replica job, ready."""
    done = yoloq_cli(services, "serve", "--list", "--json")
    assert done.returncode == 0, done.stderr
    [row] = json.loads(done.stdout)
    active = [j for j in row["jobs"] if JobState(j["state"]) not in TERMINAL]
    return dict(row) if len(active) == 1 and [e["state"] for e in row["live"]] == ["ready"] else None


def _scaled(audit: AuditLog, what: str) -> bool:
    """Whether the serving scaler changed the deployment for ``what`` (its audit entries' reasons)."""
    return any(e.get("type") == "deployment-changed" and e.get("by") == "autoscaler"
               and str(e.get("reason", "")).startswith(what) for e in audit.entries(500))  # fmt: skip


def test_a_redis_freeze_while_serving_loses_no_request_and_leaves_one_replica(fleet, services, models, queue, trained):
    # Given parts served by one replica on a one-GPU fleet, answering
    _serve_one(fleet, services, models, trained)
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
    # And the deployment settles on one ready replica of one live job, still asking for one, and serves new requests
    row = poll(lambda: _settled(services), 60, "one ready replica of one live job")
    assert row["deployment"]["replicas"] == 1, row["deployment"]
    assert [ask(queue, image).get("version") for image in images[:4]] == [1] * 4


def test_a_surplus_replica_waiting_for_a_gpu_is_withdrawn_once_the_burst_is_over(fleet, services, models, queue,
                                                                                 trained):  # fmt: skip
    # Given parts served by one replica on a one-GPU fleet, and a p99 target of 1 ms no request meets
    _serve_one(fleet, services, models, trained)
    url = services.settings.redis_url
    deployments = Deployments(connect(url), url)
    current = deployments.get(ALIAS)
    assert current is not None
    deployments.put(current.model_copy(update={"target_p99_ms": 1.0}), "test", "test: a target no request meets")
    # When requests flow, the scaler asks for a second replica on their p99, which waits for a GPU
    audit, images = AuditLog(connect(url)), images_of(trained)
    poll(lambda: ask(queue, images[0]).get("version") == 1 and _scaled(audit, "scale out to 2: p99"), 120,
         "the scaler to ask for a second replica")  # fmt: skip
    # Then once they stop, that replica is withdrawn: the deployment settles on one ready replica of one live job
    row = poll(lambda: _settled(services), 60, "one ready replica of one live job")
    assert row["deployment"]["replicas"] == 1 and _scaled(audit, "scale in to 1"), row["deployment"]
    assert ask(queue, images[1]).get("version") == 1
