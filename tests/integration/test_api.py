"""The HTTP API as a real `yoloq api` process: auth on every route, typed errors that change nothing, jobs through
real workers, Prometheus metrics parsed, and the status page rendered in headless Chromium."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from infra.cordon import CordonStore
from infra.local_redis import start_redis
from infra.processes import ManagedProcess, free_port
from tasks.states import JobState
from tests.fleet import poll

pytestmark = pytest.mark.integration

TOKEN = "test-token-" + os.urandom(16).hex()
ARTEFACTS = Path(__file__).resolve().parents[2] / "test-artefacts"


class Api:
    """A running `yoloq api` and a tiny HTTP client for it."""

    def __init__(self, base: str) -> None:
        self.base = base

    def call(self, method: str, path: str, body: Any = None, auth: str | None = f"Bearer {TOKEN}",
             raw: bytes | None = None) -> tuple[int, Any]:  # fmt: skip
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if auth:
            request.add_header("Authorization", auth)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, text = response.status, response.read().decode()
        except urllib.error.HTTPError as err:
            status, text = err.code, err.read().decode()
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def chunked_post(self, path: str, chunks: int, size: int) -> str:
        """A body with no Content-Length (chunked): the cap must hold while it is read."""
        host, port = self.base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n"
                         "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode())  # fmt: skip
            try:
                for _ in range(chunks):
                    sock.sendall(f"{size:x}\r\n".encode() + b" " * size + b"\r\n")
                sock.sendall(b"0\r\n\r\n")
            except OSError:  # the server may answer and close before the last chunk
                pass
            return sock.recv(4096).decode(errors="replace")

    def oversized_post(self, path: str, length: int) -> str:
        """Announce a body but send none: the refusal must come from the headers alone (a client that sends the
        whole body first may see a broken pipe instead, since the server may close without reading it)."""
        host, port = self.base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n"
                         f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n".encode())  # fmt: skip
            return sock.recv(4096).decode(errors="replace")


@contextlib.contextmanager
def serving_api(services: Any, name: str = "api", env: dict[str, str] | None = None) -> Iterator[Api]:
    """A real `yoloq api` on the session's services (YOLOQ_API_TOKEN is the admin key; ``env``: more settings), once
    /healthz answers; stopped at the end (logs in ``logs/{name}.log``)."""
    port = free_port()
    env = {**services.env(), "YOLOQ_API_TOKEN": TOKEN, **(env or {})}
    proc = ManagedProcess(name, [sys.executable, "-m", "yoloq", "api", "--port", str(port)],
                          services.settings.home / "logs" / f"{name}.log", env)  # fmt: skip
    client = Api(f"http://127.0.0.1:{port}")

    def healthy() -> bool:
        try:
            return client.call("GET", "/healthz", auth=None)[0] == 200
        except OSError:
            return False

    try:
        poll(healthy, 30, "the API to answer /healthz")
        yield client
    finally:
        proc.stop(10)


@pytest.fixture
def api(services: Any, fleet: Any) -> Iterator[Api]:
    with serving_api(services) as client:
        yield client


def test_every_route_but_healthz_needs_the_token(api: Api) -> None:
    for path in ("/api/v1/queues", "/api/v1/jobs", "/api/v1/status", "/api/v1/audit", "/metrics", "/status"):
        assert api.call("GET", path, auth=None)[0] == 401, path
        assert api.call("GET", path, auth="Bearer wrong")[0] == 401, path
    wrong_basic = "Basic " + base64.b64encode(b"ops:nope").decode()
    assert api.call("GET", "/status", auth=wrong_basic)[0] == 401
    assert api.call("POST", "/api/v1/jobs", {"kind": "probe", "seconds": 0, "tier": "low", "team": "vision"},
                    auth=None)[0] == 401  # fmt: skip
    assert api.call("GET", "/api/v1/queues")[0] == 200
    right_basic = "Basic " + base64.b64encode(f"ops:{TOKEN}".encode()).decode()
    assert api.call("GET", "/status", auth=right_basic)[0] == 200


def test_openapi_is_generated_from_the_specs_and_guarded(api: Api) -> None:
    assert api.call("GET", "/openapi.json", auth=None)[0] == 401
    code, doc = api.call("GET", "/openapi.json")
    assert code == 200 and doc["openapi"].startswith("3.")
    body = doc["paths"]["/api/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["discriminator"]["propertyName"] == "kind"
    assert {"TrainSpec", "InferSpec", "ExportSpec", "ProbeSpec"} <= set(doc["components"]["schemas"])
    assert "/api/v1/jobs/{job_id}/promote" in doc["paths"] and "/healthz" in doc["paths"]


def test_bad_requests_get_typed_errors_and_change_nothing(api: Api, client: Any) -> None:
    before = len(client.jobs(limit=1000))
    cases = [
        ("POST", "/api/v1/jobs", {"kind": "probe", "seconds": 0, "tier": "urgentest", "team": "vision"}, 400),
        ("POST", "/api/v1/jobs", {"kind": "probe", "seconds": -1, "tier": "low", "team": "vision"}, 400),
        ("POST", "/api/v1/jobs", {"kind": "train", "tier": "low", "team": "vision"}, 400),
        ("GET", "/api/v1/jobs?tier=urgentest", None, 400),
        ("GET", "/api/v1/jobs/j-does-not-exist", None, 404),
        ("GET", "/api/v1/audit?limit=abc", None, 400),
        # Issue 15 item 5: locations decided at the door, never on a GPU; a remote caller cannot probe host paths
        ("POST", "/api/v1/jobs", {"kind": "train", "data": "/etc/passwd", "team": "vision"}, 400),
        ("POST", "/api/v1/jobs", {"kind": "train", "data": "../../etc/passwd", "team": "vision"}, 400),
        ("POST", "/api/v1/jobs", {"kind": "train", "data": "file:///etc/passwd", "team": "vision"}, 400),
        ("POST", "/api/v1/jobs", {"kind": "train", "data": "http://169.254.169.254/x", "team": "vision"}, 400),
        ("POST", "/api/v1/jobs", {"kind": "infer", "model": "s3:///x", "source": "s3://imgs/a", "team": "v"}, 400),
        ("POST", "/api/v1/jobs", {"kind": "infer", "model": "/srv/w.pt", "source": "s3://i/../b", "team": "v"}, 400),
        ("GET", "/api/v1/jobs?limit=-1", None, 400),
        # Issue 15 item 5: strict types, printable names (each of these was accepted)
        ("POST", "/api/v1/jobs", {"kind": "probe", "seconds": "5", "team": "vision"}, 400),
        ("POST", "/api/v1/jobs", {"kind": "probe", "seconds": True, "team": "vision"}, 400),
        ("POST", "/api/v1/jobs", {"kind": "probe", "memory_gb": "2", "team": "vision"}, 400),
        ("POST", "/api/v1/jobs", {"kind": "probe", "team": "vision", "name": "ok\nFORGED log line"}, 400),
        ("POST", "/api/v1/jobs", {"kind": "probe", "team": "Bad Team"}, 400),
        ("POST", "/api/v1/jobs/j-does-not-exist/cancel", {}, 404),
    ]
    for method, path, body, status in cases:
        code, doc = api.call(method, path, body)
        assert code == status and isinstance(doc, dict) and doc["error"], (path, body, code, doc)
        assert "does not exist" not in doc["error"], doc  # nothing about which host paths exist
    assert api.call("POST", "/api/v1/jobs", raw=b"{not json")[0] == 400
    assert api.call("POST", "/api/v1/jobs", raw=b"[1, 2]")[0] == 400
    deep = b"[" * 100_000  # a RecursionError in the JSON parser was a 500 with a traceback
    assert api.call("POST", "/api/v1/jobs", raw=deep)[0] == 400
    assert api.call("POST", "/api/v1/jobs/j-does-not-exist/cancel", raw=deep)[0] == 404
    assert api.oversized_post("/api/v1/jobs", 2 << 20).startswith("HTTP/1.1 413")
    assert api.chunked_post("/api/v1/jobs", 40, 64 << 10).startswith("HTTP/1.1 413")
    assert api.call("GET", "/api/v1/no-such-view") == (404, {"error": "Not Found"})
    assert api.call("POST", "/api/v1/jobs/j-1/explode", {})[0] == 404
    assert len(client.jobs(limit=1000)) == before


def test_jobs_run_through_the_api_and_show_in_views_and_metrics(api: Api, fleet: Any, client: Any) -> None:
    fleet.start("0:A100:40")
    code, submitted = api.call("POST", "/api/v1/jobs", {"kind": "probe", "seconds": 3, "tier": "low", "team": "vision"})
    assert code == 201 and submitted["state"] == "queued" and submitted["queue"].startswith("yoloq.low.")
    job_id = submitted["job_id"]
    poll(lambda: api.call("GET", f"/api/v1/jobs/{job_id}")[1]["state"] == "running", 30, "the job to run")
    busy = {f.name: f for f in text_string_to_metric_families(api.call("GET", "/metrics")[1])}
    util = [s.value for s in busy["yoloq_gpu_utilization_ratio"].samples]
    used = [s.value for s in busy["yoloq_gpu_memory_used_bytes"].samples]
    assert util == [1.0] and used == [client.job(job_id).memory_mib * 2**20]
    queues = api.call("GET", "/api/v1/queues")[1]
    assert queues["tiers"]["low"] == {"waiting": 0, "unacked": 1, "oldest_wait_s": 0.0, "depth": 1}
    assert queues["total"] == 1
    code, _ = api.call("POST", f"/api/v1/jobs/{job_id}/freeze", {})
    assert code == 200 and client.job(job_id).frozen
    assert client.audit(job_id=job_id)[0]["by"] == "key:admin"  # YOLOQ_API_TOKEN is the key named admin
    poll(lambda: client.job(job_id).state is JobState.SUCCEEDED, 30, "the job to finish")
    code, text = api.call("GET", "/metrics")
    assert code == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    depth = {s.labels["tier"]: s.value for s in families["yoloq_queue_depth"].samples}
    assert depth == {"critical": 0, "high": 0, "medium": 0, "low": 0, "batch": 0}
    started = [s for s in families["yoloq_time_to_start_seconds"].samples
               if s.name.endswith("_count") and s.labels["tier"] == "low"]  # fmt: skip
    assert started and started[0].value >= 1
    workers = {s.labels["state"]: s.value for s in families["yoloq_workers"].samples}
    assert workers == {"busy": 0, "idle": 1}
    total = [s.value for s in families["yoloq_gpu_memory_total_bytes"].samples]
    used = [s.value for s in families["yoloq_gpu_memory_used_bytes"].samples]
    assert total == [40 * 1024 * 2**20] and used == [0.0]


def test_status_page_in_headless_chromium_shows_a_submitted_job(api: Api, fleet: Any, client: Any) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    fleet.start("0:A100:40,1:T4:16")
    running = client.submit({"kind": "probe", "seconds": 20, "tier": "low", "team": "vision", "memory_gb": 20})
    running.wait({JobState.RUNNING}, timeout_s=30)
    held = client.submit({"kind": "probe", "seconds": 0, "tier": "critical", "team": "risk"})  # awaits approval
    CordonStore(client.rt.registry.client).cordon(socket.gethostname(), 1, "test: ECC errors", "test", "now")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"):  # fmt: skip
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        browser.set_page_load_timeout(30)
        browser.set_window_size(1280, 2000)  # the whole page in the kept screenshot
        browser.get(api.base.replace("http://", f"http://ops:{TOKEN}@") + "/status")
        body = poll(lambda: (t := browser.find_element(By.TAG_NAME, "body").text) and running.job_id in t and t,
                    30, "the page to show the running job")  # fmt: skip
        assert held.job_id in body and "awaiting approval" in body
        assert "refresh failed" not in body and "gpu0@" in body
        assert "cordoned: test: ECC errors" in body
        ARTEFACTS.mkdir(exist_ok=True)
        assert browser.save_screenshot(str(ARTEFACTS / "status-page.png"))
    finally:
        browser.quit()
        client.cancel(running.job_id)


def test_a_frozen_redis_fails_requests_together_and_never_holds_healthz(services, tmp_path):
    """Issue 15 item 3: with Redis stopped mid-flight (SIGSTOP), five status calls fail with 503 together, within
    about one Redis timeout, and /healthz answers meanwhile; serially (one event loop) the fifth would wait five."""
    # Given an API on a Redis of its own, with a 1 s Redis timeout, answering
    redis = start_redis("", tmp_path, prefer_configured=False)
    port, timeout_s = free_port(), 1.0
    env = {**services.env(), "YOLOQ_REDIS_URL": redis.url, "YOLOQ_API_TOKEN": TOKEN,
           "YOLOQ_BROKER_TIMEOUT_S": str(timeout_s), "YOLOQ_HOME": str(tmp_path)}  # fmt: skip
    proc = ManagedProcess("api-frozen", [sys.executable, "-m", "yoloq", "api", "--port", str(port)],
                          tmp_path / "api.log", env)  # fmt: skip
    api = Api(f"http://127.0.0.1:{port}")
    try:
        poll(lambda: _answers(api) and api.call("GET", "/api/v1/status")[0] == 200, 30, "the API on its Redis")
        assert redis.process is not None
        os.kill(redis.process.pid, signal.SIGSTOP)
        try:
            # When five status calls arrive while Redis hangs
            with ThreadPoolExecutor(5) as pool:
                started = time.monotonic()
                calls = [pool.submit(api.call, "GET", "/api/v1/status") for _ in range(5)]
                # Then liveness answers at once (a 1 s client timeout; it took 14.7 s on the old API)
                with urllib.request.urlopen(api.base + "/healthz", timeout=1) as response:
                    assert response.status == 200
                codes = [call.result()[0] for call in calls]
                elapsed = time.monotonic() - started
        finally:
            os.kill(redis.process.pid, signal.SIGCONT)
        # And every call failed with 503, together: well under the five timeouts a serial server needs
        assert codes == [503] * 5
        assert elapsed < 3 * timeout_s, f"five calls took {elapsed:.1f} s against a {timeout_s} s Redis timeout"
        poll(lambda: api.call("GET", "/api/v1/status")[0] == 200, 30, "the API to recover with Redis")
    finally:
        proc.stop(10)
        redis.stop()


def _answers(api: Api) -> bool:
    try:
        return api.call("GET", "/healthz", auth=None)[0] == 200
    except OSError:
        return False
