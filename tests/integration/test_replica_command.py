"""Issue 16 item 6 on Kubernetes: serving replicas as plain pods that KEDA scales. ``yoloq replica ALIAS`` is the
``kind: serve`` loop outside the job system, run here as the real command on the session's Redis and S3 with a real
ONNX model registered in the registry: it answers every request pushed on the real ServeQueue; on SIGTERM it answers
what it took, removes its presence entry and exits 0, leaving the rest queued; killed with -9 mid-batch, the batch
it held goes back to the queue (the serving scaler's sweep) and the next replica answers every request.
``yoloq serve ALIAS --external`` hands a deployment's scaling to KEDA: it gets no replica job and the supervisor's
serving scaler leaves it alone. The API's ``GET /api/v1/deployments/{alias}`` gives KEDA numbers only, and a p99
only while traffic flows."""

from __future__ import annotations

import functools
import json
import signal
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import cv2
import numpy as np
import pytest
import yaml

from infra.celery_control import CeleryDispatch
from infra.deployments import Deployments
from infra.model_registry import ModelRegistry
from infra.processes import ManagedProcess
from infra.redis_client import connect
from infra.registry import RedisRegistry
from infra.s3 import S3Store
from infra.serve_queue import Request, ServeQueue, reply_key, taken_key
from infra.serve_replicas import ServeReplicas
from tasks.app import create_app
from tasks.model_records import Deployment
from tasks.records import iso, utc_now
from tasks.replicas import replica_jobs
from tasks.runtime import build_runtime
from tests.fleet import clean_redis, poll, yoloq_cli
from tests.images import encoded
from tests.integration.test_api import serving_api
from tests.integration.test_infer_hostile_images import _tiny_detector
from workers.serving import ServingScaler
from yoloq.serving_view import RECENT_S, deployment

pytestmark = pytest.mark.integration

ALIAS = "defects@prod"
POD = f"pod:{socket.gethostname()}"


@pytest.fixture
def served(services: Any, tmp_path: Path) -> Iterator[ModelRegistry]:
    """defects v1 (a tiny ONNX detector: one 20x20 box of class 0 at the centre of any image) behind defects@prod."""
    clean_redis(services)
    url = services.settings.redis_url
    models = ModelRegistry(connect(url), url)
    (tmp_path / "tiny.onnx").write_bytes(_tiny_detector())
    version = models.register("defects", {"onnx": tmp_path / "tiny.onnx"}, S3Store(services.settings),
                              classes={0: "defect"}, imgsz=64, by="test").version  # fmt: skip
    models.set_alias(ALIAS, version, by="test")
    yield models
    clean_redis(services)


def _replica(services: Any, *args: str) -> ManagedProcess:
    argv = [sys.executable, "-m", "yoloq", "replica", *args]
    return ManagedProcess("replica", argv, services.settings.home / "logs" / "replica.log", services.env())


def _push(queue: ServeQueue, images: list[bytes], wait_s: float = 60) -> list[str]:
    """Detect requests as the API queues them; their ids."""
    ids = []
    for image in images:
        rid, now = uuid.uuid4().hex, time.time()
        queue.push(ALIAS, Request({"id": rid, "version": 1, "conf": 0.25, "deadline": now + wait_s, "enq": now}, image))
        ids.append(rid)
    return ids


def _live(services: Any) -> list[dict[str, Any]]:
    return ServeReplicas(connect(services.settings.redis_url), services.settings.redis_url).live(ALIAS)


def _triggers() -> list[dict[str, Any]]:
    """The KEDA triggers of the example serving deployment (they ask for defects@prod)."""
    docs = yaml.safe_load_all((Path(__file__).resolve().parents[2] / "infra" / "k8s" / "serving.yaml").read_text())
    (scaled,) = [d for d in docs if d["kind"] == "ScaledObject"]
    triggers: list[dict[str, Any]] = scaled["spec"]["triggers"]
    return triggers


def _large_jpeg() -> bytes:
    """A 4000x3000 JPEG (280 KB): ~60 ms to decode, so a batch of two takes long enough to SIGTERM mid-queue."""
    ramp = np.tile(np.linspace(0, 255, 4000, dtype=np.float32), (3000, 1)).astype(np.uint8)
    ok, data = cv2.imencode(".jpg", cv2.merge([ramp, ramp, 255 - ramp]), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return data.tobytes()


def test_a_replica_pod_answers_every_request_and_drains_on_sigterm(services, served, queue, tmp_path):
    # Given defects@prod deployed for KEDA: no replica job, the scaling is someone else's
    done = yoloq_cli(services, "serve", "defects", "--team", "vision", "--external")
    assert done.returncode == 0 and "scaled externally" in done.stdout, done.stderr
    url = services.settings.redis_url
    assert Deployments(connect(url), url).get(ALIAS).scaler == "external"
    assert replica_jobs(RedisRegistry(connect(url), url), ALIAS) == []
    # When `yoloq replica` runs in the foreground
    ready_file = tmp_path / "ready"
    pod = _replica(services, "defects", "--max-batch", "2", "--backend", "onnx", "--ready-file", str(ready_file))
    try:
        poll(ready_file.exists, 120, "the replica to say it is ready")
        (entry,) = _live(services)
        assert (entry["job_id"], entry["state"], entry["versions"], entry["backend"]) == (POD, "ready", [1], "onnx-cpu")
        assert POD in yoloq_cli(services, "serve", "--list").stdout
        # Then every request on the real queue is answered by the model, in batches of at most two
        ids = _push(queue, [encoded(".jpg", 64 + 8 * (n % 4), 48) for n in range(12)])
        replies = [queue.wait_reply(rid, 30) for rid in ids]
        assert all(r and r["version"] == 1 and r["batch"] <= 2 for r in replies), replies
        assert all([d["class_name"] for d in r["detections"]] == ["defect"] for r in replies if r), replies
        # When SIGTERM arrives while requests are queued
        ids = _push(queue, [_large_jpeg()] * 30)
        first = queue.wait_reply(ids[0], 30)
        assert first and first["version"] == 1, first
        pod.proc.send_signal(signal.SIGTERM)
        # Then it drains: what it took is answered, it exits 0, its presence and ready file are gone
        assert pod.proc.wait(timeout=30) == 0, pod.log_path.read_text()[-2000:]
        assert ServeReplicas(connect(url), url).entries(ALIAS) == [] and not ready_file.exists()
        # ... and the rest is still queued, whole, for the next replica: none is lost, none answered twice
        raw = connect(url)
        answered = [rid for rid in ids[1:] if raw.exists(reply_key(rid))]
        assert queue.depth(ALIAS) == len(ids) - 1 - len(answered) > 0, (queue.depth(ALIAS), len(answered))
        taken = queue.take_batch(ALIAS, 64, 0.01, idle_s=0.1)
        assert [r.id for r in taken] == [rid for rid in ids[1:] if rid not in answered]
        assert "drained" in pod.log_path.read_text()
    finally:
        pod.stop(10)


def test_a_replica_killed_mid_batch_loses_no_request(services, served, queue):
    # Given a replica pod busy with a queue of slow requests, scaled externally (the scaler's sweep still runs)
    assert yoloq_cli(services, "serve", "defects", "--team", "vision", "--external").returncode == 0
    raw = connect(services.settings.redis_url)
    pod = _replica(services, "defects", "--max-batch", "4", "--backend", "onnx")
    try:
        poll(lambda: any(e["state"] == "ready" for e in _live(services)), 120, "the replica to be ready")
        ids = _push(queue, [_large_jpeg()] * 24, wait_s=120)
        # When it is killed with -9 while it holds a batch
        poll(lambda: raw.llen(taken_key(ALIAS, POD)) > 0, 30, "the replica to hold a batch")
        pod.proc.kill()
        pod.proc.wait(timeout=10)
        held = raw.llen(taken_key(ALIAS, POD))
        unanswered = [rid for rid in ids if not raw.exists(reply_key(rid))]
        assert held > 0 and queue.depth(ALIAS) == len(unanswered) - held, (held, queue.depth(ALIAS), unanswered)
    finally:
        pod.stop(10)
    # Then once its presence is no longer live, the serving scaler's sweep puts the held batch back in the queue
    rt = build_runtime(services.settings, CeleryDispatch(create_app(services.settings)))
    said: list[str] = []
    scaler = ServingScaler(rt, said.append)
    poll(lambda: scaler.tick(time.time()) or not raw.exists(taken_key(ALIAS, POD)), 30, "the sweep")
    assert queue.depth(ALIAS) == len(unanswered) and any("put back in the queue" in s for s in said), said
    # ... and the next replica answers every request that was not answered before the kill
    pod = _replica(services, "defects", "--max-batch", "4", "--backend", "onnx")
    try:
        replies = {rid: queue.wait_reply(rid, 60) for rid in unanswered}
        assert all(r and r["version"] == 1 for r in replies.values()), replies
    finally:
        pod.stop(10)


def test_a_replica_of_an_unknown_alias_fails_in_one_line(services, served):
    done = yoloq_cli(services, "replica", "ghost")
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1 and last.startswith("yoloq: error: cannot serve ghost@prod: "), done.stderr
    assert ServeReplicas(connect(services.settings.redis_url)).entries("ghost@prod") == []


def test_the_serving_scaler_and_yoloq_serve_leave_an_external_deployment_to_keda(services, served, queue):
    # Given two deployments with a request waiting and no replica: one scaled by yoloq, one external
    url = services.settings.redis_url
    deployments, registry = Deployments(connect(url), url), RedisRegistry(connect(url), url)
    now = iso(utc_now())
    served.set_alias("defects@edge", 1, by="test")
    for alias, scaler in ((ALIAS, "external"), ("defects@edge", "yoloq")):
        deployments.put(Deployment(alias=alias, team="vision", replicas=0, min_replicas=0, scaler=scaler,
                                   created_at=now, created_by="test"), "test", "test")  # fmt: skip
        queue.push(alias, Request({"id": uuid.uuid4().hex, "version": 1}, encoded(".jpg", 64, 48)))
    rt = build_runtime(services.settings, CeleryDispatch(create_app(services.settings)))
    # When the supervisor's serving scaler ticks
    said: list[str] = []
    ServingScaler(rt, said.append).tick(time.time())
    # Then it wakes the yoloq-scaled one with a replica job and leaves the external one as it was
    assert [r.kind for r in replica_jobs(registry, "defects@edge")] == ["serve"]
    assert deployments.get("defects@edge").replicas == 1 and any("defects@edge" in s for s in said)
    assert replica_jobs(registry, ALIAS) == [] and deployments.get(ALIAS).replicas == 0
    # When a yoloq-scaled deployment is handed over with `yoloq serve --external`, its replica jobs are cancelled
    done = yoloq_cli(services, "serve", "defects@edge", "--external", "--json")
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["cancelled"]) == 1 and replica_jobs(registry, "defects@edge") == []
    # ... and `--scaled-by-yoloq` hands it back (it submits its replica job again)
    done = yoloq_cli(services, "serve", "defects@edge", "--scaled-by-yoloq", "--replicas", "1", "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["deployment"]["scaler"] == "yoloq", done.stderr
    assert len(replica_jobs(registry, "defects@edge")) == 1


def test_the_per_alias_route_gives_keda_numbers_and_a_p99_only_while_traffic_flows(services, served, queue):
    # Given defects@prod deployed, and a replica pod
    assert yoloq_cli(services, "serve", "defects", "--team", "vision", "--external").returncode == 0
    pod = _replica(services, "defects", "--backend", "onnx")
    try:
        with serving_api(services, "replica-api") as api:
            # Before any traffic: numbers, never null (KEDA's metrics-api refuses a null)
            code, row = api.call("GET", "/api/v1/deployments/defects")  # a bare name is name@prod
            assert code == 200 and row["alias"] == ALIAS and row["scaler"] == "external"
            assert row["scale"]["p99_ms"] == 0.0 and isinstance(row["scale"]["queued"], int)
            poll(lambda: api.call("GET", f"/api/v1/deployments/{ALIAS}")[1]["scale"]["ready"] == 1, 120, "ready")
            # When requests are answered, the p99 is there to scale on
            for rid in _push(queue, [encoded(".jpg", 64, 48)] * 5):
                assert queue.wait_reply(rid, 30)
            scale = lambda: api.call("GET", f"/api/v1/deployments/{ALIAS}")[1]["scale"]  # noqa: E731
            poll(lambda: scale()["p99_ms"] > 0, 10, "the p99 (figures are recorded just after the replies)")
            assert scale()["queued"] == 0
            # ... and each trigger of infra/k8s/serving.yaml, asked as KEDA asks it, finds a number where it looks
            for trigger in _triggers():
                _, answer = api.call("GET", urlsplit(trigger["metadata"]["url"]).path)
                value = functools.reduce(dict.__getitem__, trigger["metadata"]["valueLocation"].split("."), answer)
                assert isinstance(value, int | float) and not isinstance(value, bool), (trigger["name"], value)
            assert api.call("GET", "/api/v1/deployments/ghost")[0] == 404
            assert api.call("GET", "/api/v1/deployments/Bad%20Name")[0] == 400
    finally:
        pod.stop(10)
    # Then, once it answered nothing for RECENT_S, the alias's p99 no longer counts: KEDA may scale in and to zero
    # (its version's p99, the canary comparison's, stays)
    url = services.settings.redis_url
    later = deployment(connect(url), url, ALIAS, now=time.time() + RECENT_S + 1)
    assert later is not None and later["p99_ms"] is None and later["scale"]["p99_ms"] == 0.0
    assert all(v["p99_ms"] > 0 for v in later["versions"].values()), later["versions"]
