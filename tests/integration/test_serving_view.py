"""The serving view on a real `yoloq api`: GET /api/v1/deployments (what KEDA's metrics-api trigger reads) and the
serving series in /metrics, from real Redis state written by the registry, the queue, replicas' presence and stats."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from infra.celery_control import CeleryDispatch
from infra.deployments import Deployments
from infra.model_registry import ModelRegistry
from infra.redis_client import connect
from infra.redis_clock import RedisClock
from infra.s3 import S3Store
from infra.serve_queue import Request, ServeQueue
from infra.serve_replicas import ServeReplicas
from infra.serve_stats import ServeStats
from tasks.app import create_app
from tasks.model_records import Deployment
from tasks.runtime import build_runtime
from tests.fleet import clean_redis
from tests.integration.test_api import serving_api
from tests.integration.test_model_registry import make_onnx
from workers.serving import ServingScaler
from yoloq.serving_view import RECENT_S, deployment, deployments, recent_p99

pytestmark = pytest.mark.integration


def _serving_state(services: Any, tmp_path: Path) -> None:
    """defects@prod: v1 stable, v2 a 20 % canary; 3 requests queued; one ready replica; figures for both versions."""
    url = services.settings.redis_url
    redis = connect(url)
    models, store = ModelRegistry(redis, url), S3Store(services.settings)
    for n in (1, 2):
        models.register("defects", {"onnx": make_onnx(tmp_path / f"m{n}.onnx")}, store, classes={0: "scratch"},
                        imgsz=64, by="test")  # fmt: skip
    models.set_alias("defects@prod", 1, "test")
    models.set_canary("defects@prod", 2, 20, "test")
    deployment = Deployment(alias="defects@prod", team="vision", replicas=2, min_replicas=1,
                            created_at="2026-12-05T00:00:00Z", created_by="test")  # fmt: skip
    Deployments(redis, url).put(deployment, "test", "test")
    queue = ServeQueue(connect(url, binary=True), url)
    for n in range(3):
        queue.push("defects@prod", Request({"id": f"r{n}", "version": 1}, b"\xff\xd8"))
    replica = {"job_id": "jA", "task_id": "tA", "state": "ready", "backend": "onnx-cpu", "versions": [1, 2],
               "cold_start_s": 1.5}  # fmt: skip
    ServeReplicas(redis, url).put("defects@prod", replica)
    stats = ServeStats(redis, url)
    stats.record("defects@prod", "defects", 1, latencies_ms=[10.0, 20.0, 30.0], detections=[1, 2, 0],
                 confidences=[0.9, 0.8, 0.7], errors=0, batch_size=3)  # fmt: skip
    stats.record("defects@prod", "defects", 2, latencies_ms=[50.0], detections=[0], confidences=[], errors=1,
                 batch_size=1)  # fmt: skip
    stats.record_cold_start("defects@prod", 1.5)


def test_deployments_route_and_metrics_show_the_serving_state(services, tmp_path):
    clean_redis(services)
    _serving_state(services, tmp_path)
    with serving_api(services) as api:
        code, view = api.call("GET", "/api/v1/deployments")
        assert code == 200
        row = view["deployments"]["defects@prod"]
        assert (row["replicas"], row["queued"], row["ready"], row["cold_start_s"]) == (2, 3, 1, 1.5)
        assert [r["job_id"] for r in row["live"]] == ["jA"]
        assert {v: f["share"] for v, f in row["versions"].items()} == {"1": 80.0, "2": 20.0}
        assert (row["versions"]["1"]["requests"], row["versions"]["2"]["errors"]) == (3, 1)
        assert row["batch_sizes"] == {"1": 1, "3": 1}
        assert row["p99_ms"] == max(row["versions"]["1"]["p99_ms"], row["versions"]["2"]["p99_ms"])
        code, text = api.call("GET", "/metrics")
        assert code == 200
        lines = set(str(text).splitlines())
        for line in ('yoloq_serve_queued{alias="defects@prod"} 3.0',
                     'yoloq_serve_replicas_ready{alias="defects@prod"} 1.0',
                     'yoloq_serve_replicas_desired{alias="defects@prod"} 2.0',
                     'yoloq_serve_version_share{alias="defects@prod",version="2"} 20.0',
                     'yoloq_serve_requests_total{alias="defects@prod",version="1"} 3.0',
                     'yoloq_serve_batches_total{alias="defects@prod",size="3"} 1.0'):  # fmt: skip
            assert line in lines, (line, [x for x in lines if x.startswith("yoloq_serve")])
    clean_redis(services)


def test_no_deployment_is_an_empty_view(services):
    clean_redis(services)
    with serving_api(services) as api:
        assert api.call("GET", "/api/v1/deployments") == (200, {"deployments": {}})


def test_two_aliases_serving_one_version_each_scale_on_their_own_traffic(services, tmp_path):
    # Given defects@prod's v1 also behind defects@edge, with traffic on prod only
    clean_redis(services)
    _serving_state(services, tmp_path)
    url = services.settings.redis_url
    redis = connect(url)
    ModelRegistry(redis, url).set_alias("defects@edge", 1, "test")
    edge = Deployment(alias="defects@edge", team="vision", replicas=1, min_replicas=0,
                      created_at="2026-12-05T00:00:00Z", created_by="test")  # fmt: skip
    Deployments(redis, url).put(edge, "test", "test")
    stats = ServeStats(redis, url)
    # Then the version's figures count every request, and each alias's load only its own
    assert stats.version("defects", 1)["requests"] == 3
    assert (stats.alias_load("defects@prod")["requests"], stats.alias_load("defects@prod")["p99_ms"]) == (4, 50.0)
    assert stats.alias_load("defects@edge") == {"requests": 0, "p99_ms": None, "counted": 0, "answered_at": None}
    now = time.time()
    assert deployment(redis, url, "defects@edge", now=now)["scale"]["p99_ms"] == 0.0  # type: ignore[index]
    assert deployment(redis, url, "defects@prod", now=now)["scale"]["p99_ms"] == 50.0  # type: ignore[index]
    # ... and the serving scaler sees prod's requests per second, none on edge
    rt = build_runtime(services.settings, CeleryDispatch(create_app(services.settings)))
    scaler = ServingScaler(rt, lambda _: None)
    for alias in ("defects@prod", "defects@edge"):
        scaler._load(Deployments(redis, url).get(alias), now - 1, [])  # type: ignore[arg-type]
    stats.record("defects@prod", "defects", 1, latencies_ms=[5.0] * 10, detections=[0] * 10, confidences=[],
                 errors=0, batch_size=10)  # fmt: skip
    # (the p99 the scaler judges: only the requests answered after a count it read)
    since = stats.alias_load("defects@prod", since_requests=4)
    assert (since["p99_ms"], since["counted"], stats.alias_load("defects@prod")["p99_ms"]) == (5.0, 10, 50.0)
    assert stats.alias_load("defects@prod", since_requests=14)["p99_ms"] is None
    prod = scaler._load(Deployments(redis, url).get("defects@prod"), now, [])  # type: ignore[arg-type]
    edge_load = scaler._load(Deployments(redis, url).get("defects@edge"), now, [])  # type: ignore[arg-type]
    assert (prod.rps, edge_load.rps, edge_load.p99_ms) == (10.0, 0.0, None)
    # And what KEDA and /metrics read is the p99 of the last RECENT_S on Redis's clock: a slow burst answered just
    # over a minute ago no longer counts, one answered within it does
    now = RedisClock(redis).now()
    for ms, at in ((9000.0, now - RECENT_S - 1), (5.0, now)):
        stats.record("defects@edge", "defects", 1, latencies_ms=[ms] * 50, detections=[0] * 50, confidences=[],
                     errors=0, batch_size=0, at=at)  # fmt: skip
    assert deployment(redis, url, "defects@edge")["scale"]["p99_ms"] == 5.0  # type: ignore[index]
    assert recent_p99(stats, "defects@edge", now - 2) == 9000.0 and recent_p99(stats, "defects@edge", now + 61) is None
    assert deployments(redis, url)["deployments"]["defects@edge"]["p99_ms"] == 5.0
    clean_redis(services)
