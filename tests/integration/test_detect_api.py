"""Issue 16 item 5, the detect API as a real `yoloq api` process on the session's Redis and S3: the detect scope and
nothing else, per-tenant rate limits, every hostile upload refused with nothing queued, the three input forms reaching
a replica and its answer coming back, canary stickiness, 404 for what is not deployed, 503 when no replica answers, and
a request to a deployment scaled to zero waking the supervisor.

The "replica" here is a thread draining the deployment's list with the real ServeQueue (real Redis) and decoding each
image with OpenCV, so its answer proves the bytes arrived whole; the real replica is tested in its own module."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from infra.deployments import Deployments
from infra.model_registry import ModelRegistry
from infra.redis_client import connect
from infra.s3 import S3Store
from infra.serve_queue import Request, ServeQueue, requests_key
from infra.wake import CHANNEL
from tasks.model_records import Deployment
from tasks.records import iso, utc_now
from tests.fleet import poll, yoloq_cli
from tests.images import encoded, png, png_bomb
from tests.integration.test_api import TOKEN, Api, serving_api

pytestmark = pytest.mark.integration

ALIAS = "parts@prod"
ROUTE = "/v1/models/parts/detect"  # a bare name is name@prod
ADMIN = f"Bearer {TOKEN}"
TIMEOUT_S = 2.0
BURST = 40
SETTINGS = {"YOLOQ_DETECT_TIMEOUT_S": str(TIMEOUT_S), "YOLOQ_DETECT_RATE": "0.5", "YOLOQ_DETECT_BURST": str(BURST),
            "YOLOQ_DETECT_MAX_MIB": "20", "YOLOQ_DETECT_MAX_MPX": "40"}  # fmt: skip
JPEG = encoded(".jpg", 64, 48)
Reply = tuple[int, Any, Message]


@pytest.fixture(scope="module")
def api(services: Any) -> Iterator[Api]:
    """One `yoloq api` for the module, with a short replica timeout and a slow refill (2 s a token)."""
    with serving_api(services, "detect-api", SETTINGS) as running:
        yield running


@pytest.fixture
def redis(binary_redis: Any) -> Any:
    """The session's Redis as bytes, wiped before and after the test (tests/conftest.py)."""
    return binary_redis


def post(api: Api, body: bytes, kind: str | None = "image/jpeg", auth: str | None = ADMIN, path: str = ROUTE,
         headers: dict[str, str] | None = None) -> Reply:  # fmt: skip
    """POST ``body`` → (status, JSON body, response headers)."""
    request = urllib.request.Request(api.base + path, data=body, method="POST", headers=headers or {})
    if kind:
        request.add_header("Content-Type", kind)
    if auth:
        request.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read()), response.headers
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), err.headers


def multipart(data: bytes, field: str = "image") -> tuple[bytes, str]:
    """A multipart/form-data body with one file field."""
    boundary = uuid.uuid4().hex
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="frame.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n").encode()  # fmt: skip
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def make_key(services: Any, name: str, *scopes: str, team: str = "vision") -> str:
    """`yoloq key create NAME --team TEAM --scope S...` → "Bearer <key>"."""
    done = yoloq_cli(services, "key", "create", name, "--team", team, *[a for s in scopes for a in ("--scope", s)])
    assert done.returncode == 0, done.stderr
    return f"Bearer {done.stdout.strip()}"


def deploy(services: Any, tmp_path: Path, versions: int = 1, deployed: bool = True, alias: str = ALIAS,
           replicas: int = 1) -> ModelRegistry:  # fmt: skip
    """Register ``versions`` versions of model ``parts``, point ``alias`` at v1 and (optionally) deploy it with
    ``replicas`` desired (0: scaled to zero)."""
    url = services.settings.redis_url
    text = connect(url)
    registry, store = ModelRegistry(text, url), S3Store(services.settings)
    store.ensure_bucket()
    artefact = tmp_path / "parts.onnx"
    artefact.write_bytes(b"an onnx graph (never loaded here)")
    for _ in range(versions):  # 0: the versions are there already
        registry.register("parts", {"onnx": artefact}, store, classes={0: "scratch", 1: "dent"}, imgsz=64, by="test")
    registry.set_alias(alias, 1, by="test")
    if deployed:
        deployment = Deployment(alias=alias, team="vision", replicas=replicas, min_replicas=min(replicas, 1),
                                created_at=iso(utc_now()), created_by="test")  # fmt: skip
        Deployments(text, url).put(deployment, by="test", reason="test")
    return registry


class Replica:
    """A stand-in replica: takes batches with the real ServeQueue, decodes each image and answers with one box around
    the whole decoded image (or the 422 a real replica sends for an image that does not decode)."""

    def __init__(self, services: Any, alias: str = ALIAS) -> None:
        url = services.settings.redis_url
        self.queue, self.alias = ServeQueue(connect(url, binary=True), url), alias
        self.seen: list[Request] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Replica:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        self.thread.join(5)

    def _run(self) -> None:
        while not self.stopping.is_set():
            batch = self.queue.take_batch(self.alias, 8, 0.005, idle_s=0.2)
            self.seen += batch
            self.queue.answer((r.id, self._reply(r, len(batch))) for r in batch)

    @staticmethod
    def _reply(request: Request, batch: int) -> dict[str, Any]:
        image = cv2.imdecode(np.frombuffer(request.image, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            return {"id": request.id, "error": "the image does not decode", "status": 422}
        height, width = image.shape[:2]
        box = {"box": [0.0, 0.0, float(width), float(height)], "class_id": 1, "class_name": "dent", "confidence": 0.9}
        return {"id": request.id, "version": request.meta["version"], "detections": [box],
                "timings_ms": {"queue": 1.5, "infer": 3.0}, "batch": batch}  # fmt: skip


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("run.sh", "#!/bin/sh\n")
    return buffer.getvalue()


# --- who may call it --------------------------------------------------------------------------------------------------


def test_the_detect_scope_calls_detect_and_nothing_else(api: Api, services: Any, redis: Any, tmp_path: Path) -> None:
    deploy(services, tmp_path)
    camera = make_key(services, "line-7", "detect")
    ci = make_key(services, "ci", "submit")
    # No key, a wrong key: 401; a valid key without the detect scope: 403, before its body is read
    assert post(api, JPEG, auth=None)[0] == 401
    assert post(api, JPEG, auth="Bearer yq_nope_nope")[0] == 401
    code, doc, _ = post(api, JPEG, auth=ci)
    assert (code, doc) == (403, {"error": "key 'ci' may not detect: that needs the admin or detect scope"})
    assert redis.llen(requests_key(ALIAS)) == 0
    # The detect key reads nothing and writes nothing else
    for path in ("/api/v1/jobs", "/api/v1/status", "/api/v1/models", "/metrics", "/status", "/openapi.json"):
        code, doc = api.call("GET", path, auth=camera)
        assert code == 403 and "may not read" in doc["error"], (path, doc)
    probe = {"kind": "probe", "seconds": 0, "tier": "low", "team": "vision"}
    assert api.call("POST", "/api/v1/jobs", probe, auth=camera)[0] == 403
    assert api.call("GET", "/api/v1/jobs", auth=ci)[0] == 200  # any other scope still reads
    # And it detects
    with Replica(services):
        code, doc, _ = post(api, JPEG, auth=camera)
    assert code == 200 and doc["detections"][0]["box"] == [0.0, 0.0, 64.0, 48.0], doc


def test_keys_act_only_for_the_team_that_serves_the_alias(api: Api, services: Any, redis: Any, tmp_path: Path) -> None:
    # Given parts@prod served by team vision, and keys of team retail with every scope but admin
    deploy(services, tmp_path, versions=2)
    camera = make_key(services, "retail-cam", "detect", team="retail")
    release = make_key(services, "retail-ops", "operate", "submit", team="retail")
    ci = make_key(services, "vision-ci", "submit")
    # Then retail may not call, move, serve or deploy to vision's alias; nothing is queued or moved
    code, doc, _ = post(api, JPEG, auth=camera)
    assert (code, doc) == (403, {"error": "key 'retail-cam' acts for team retail, not for team vision"})
    assert redis.llen(requests_key(ALIAS)) == 0
    moves = (("POST", "rollback", None), ("PUT", "", {"version": 2}), ("PUT", "canary", {"version": 2, "share": 50}))
    for method, tail, body in moves:
        path = f"/api/v1/models/parts/aliases/prod/{tail}".rstrip("/")
        code, doc = api.call(method, path, body, auth=release)
        assert code == 403 and "not for team vision" in doc["error"], (path, doc)
    serve = {"kind": "serve", "alias": ALIAS, "tier": "low", "team": "retail"}
    pipeline = {"kind": "train", "data": "s3://yoloq/datasets/x/", "team": "retail", "deploy": ALIAS}
    for spec in (serve, pipeline):
        code, doc = api.call("POST", "/api/v1/jobs", spec, auth=release)
        assert code == 403 and "not for team vision" in doc["error"], (spec, doc)
    # And a submit-only key of the serving team may not move the alias through a pipeline either
    code, doc = api.call("POST", "/api/v1/jobs", {**pipeline, "team": "vision"}, auth=ci)
    assert code == 403 and "may not model" in doc["error"], doc
    assert ModelRegistry(connect(services.settings.redis_url)).alias(ALIAS).version == 1


def test_the_route_is_in_the_openapi_document_with_its_three_body_forms(api: Api) -> None:
    code, doc = api.call("GET", "/openapi.json")
    route = doc["paths"]["/v1/models/{alias}/detect"]["post"]
    assert code == 200 and {"multipart/form-data", "image/*", "application/octet-stream", "application/json"} == set(
        route["requestBody"]["content"]
    )
    assert {"413", "415", "422", "429", "503"} <= set(route["responses"])


# --- the three forms reach a replica, and its answer comes back -------------------------------------------------------


def test_multipart_raw_and_uri_bodies_reach_a_replica(api: Api, services: Any, redis: Any, tmp_path: Path) -> None:
    deploy(services, tmp_path)
    store = S3Store(services.settings)
    store.put_bytes("frames/0001.png", encoded(".png", 40, 30))
    form, form_type = multipart(encoded(".webp", 32, 16, 64, 101))
    cases = [
        (form, form_type, "", (32, 16)),
        (JPEG, "image/jpeg", "?conf=0.6", (64, 48)),
        (encoded(".bmp", 20, 10), "application/octet-stream", "", (20, 10)),
        (encoded(".png", 12, 8), None, "", (12, 8)),  # urllib labels it form-urlencoded: the bytes decide
        (b'{"uri": "s3://%s/frames/0001.png"}' % store.bucket.encode(), "application/json", "", (40, 30)),
    ]
    with Replica(services) as replica:
        for body, kind, query, (width, height) in cases:
            code, doc, _ = post(api, body, kind, path=ROUTE + query)
            assert code == 200, doc
            assert doc["model"] == ALIAS and doc["version"] == 1
            assert doc["detections"] == [{"box": [0.0, 0.0, width, height], "class_id": 1, "class_name": "dent",
                                          "confidence": 0.9}]  # fmt: skip
            assert doc["timings_ms"]["queue"] == 1.5 and doc["timings_ms"]["total"] > 0
        # What the replica saw: the image bytes as sent, and the request's meta
        assert replica.seen[1].image == JPEG
        meta = replica.seen[1].meta
        assert (meta["name"], meta["version"], meta["conf"]) == ("parts", 1, 0.6)
        assert meta["enq"] <= time.time() < meta["deadline"] <= meta["enq"] + TIMEOUT_S + 0.01
        assert replica.seen[0].meta["conf"] == 0.25  # the default
        # An image that passes the checks but does not decode: the replica's 422 comes back as it sent it
        code, doc, _ = post(api, png(8, 8, b"not zlib at all"), "image/png")
        assert (code, doc) == (422, {"error": "the image does not decode"})
    assert redis.llen(requests_key(ALIAS)) == 0


def test_a_request_key_stays_on_its_side_of_a_canary(api: Api, services: Any, redis: Any, tmp_path: Path) -> None:
    registry = deploy(services, tmp_path, versions=2)
    registry.set_canary(ALIAS, 2, 50, by="test")
    with Replica(services) as replica:
        keyed = {post(api, JPEG, headers={"X-Request-Key": "camera-17"})[1]["version"] for _ in range(8)}
        drawn = {post(api, JPEG)[1]["version"] for _ in range(20)}
    assert len(keyed) == 1  # same key, same version
    assert drawn == {1, 2}  # without a key each request draws (50 %: all 20 on one side is a 2e-6 chance)
    assert [r.meta["version"] for r in replica.seen[:8]] == [next(iter(keyed))] * 8


# --- what is refused, and queues nothing ------------------------------------------------------------------------------


def test_every_hostile_upload_gets_its_error_and_nothing_is_queued(api: Api, services: Any, redis: Any,
                                                                    tmp_path: Path) -> None:  # fmt: skip
    deploy(services, tmp_path)
    store = S3Store(services.settings)
    store.put_bytes("frames/evil.jpg", JPEG + _zip())
    no_image_field, no_image_type = multipart(JPEG, field="file")
    bomb = png_bomb(30000, 30000)  # 900 Mpx in under 1 MB
    assert len(bomb) < 1 << 20
    cases: list[tuple[str, bytes, str | None, int, str]] = [
        ("empty", b"", "image/jpeg", 400, "empty upload"),
        ("tiff", encoded(".tif"), "image/tiff", 415, "unsupported upload: TIFF"),
        ("gif", b"GIF89a" + bytes(30), "image/gif", 415, "unsupported upload: GIF"),
        ("pdf", b"%PDF-1.7\n" + bytes(30), "application/pdf", 415, "unsupported upload: PDF"),
        ("html as jpeg", b"<html>hi</html>", "image/jpeg", 415, "unsupported upload: not an image"),
        ("bomb", bomb, "image/png", 413, "image of 30000x30000 (900.0 Mpx) is over the 40 Mpx limit"),
        ("truncated", JPEG[: len(JPEG) // 2], "image/jpeg", 422, "not a whole image: truncated JPEG"),
        ("jpeg+zip", JPEG + _zip(), "image/jpeg", 422, "not a plain image"),
        ("png+html", encoded(".png") + b"<script>x</script>", "image/png", 422, "not a plain image"),
        ("multipart without image", no_image_field, no_image_type, 400, "a multipart upload needs its image"),
        ("json without uri", b'{"url": "s3://x/y"}', "application/json", 400, 'a JSON body must be {"uri"'),
        ("json not json", b"{nope", "application/json", 400, 'a JSON body must be {"uri"'),
        ("uri not s3", b'{"uri": "file:///etc/passwd"}', "application/json", 400, "must be s3://bucket/key"),
        ("uri dot-dot", b'{"uri": "s3://yoloq/a/../b.jpg"}', "application/json", 400, "has a '..' segment"),
        ("uri missing", b'{"uri": "s3://yoloq/frames/none.jpg"}', "application/json", 400, "no object at s3://"),
        ("uri polyglot", b'{"uri": "s3://%s/frames/evil.jpg"}' % store.bucket.encode(), "application/json", 422,
         "not a plain image"),
        ("bad alias", JPEG, "image/jpeg", 400, "model name 'Bad'"),
    ]  # fmt: skip
    for what, body, kind, status, reason in cases:
        code, doc, _ = post(api, body, kind, path="/v1/models/Bad/detect" if what == "bad alias" else ROUTE)
        assert code == status and reason in doc["error"], (what, code, doc)
    assert redis.llen(requests_key(ALIAS)) == 0
    assert not list(redis.scan_iter(match="yoloq:serve:reply:*"))


def test_a_body_over_the_cap_is_refused_while_it_streams(api: Api, redis: Any, services: Any, tmp_path: Path) -> None:
    deploy(services, tmp_path)
    host, port = api.base.removeprefix("http://").split(":")
    head = (f"POST {ROUTE} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Content-Type: image/jpeg\r\n")  # fmt: skip
    # Declared: refused from the headers alone
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"{head}Content-Length: {21 << 20}\r\n\r\n".encode())
        assert sock.recv(4096).decode(errors="replace").startswith("HTTP/1.1 413")
    # Chunked, 50 MB: cut off at the cap with a 413, not a reset
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"{head}Transfer-Encoding: chunked\r\n\r\n".encode())
        piece = JPEG[:2] + bytes((1 << 20) - 2)
        try:
            for _ in range(50):
                sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
        except OSError:  # the server may answer and stop reading before the last chunk
            pass
        answer = sock.recv(4096).decode(errors="replace")
    assert answer.startswith("HTTP/1.1 413") and f"request body over {20 << 20} bytes" in answer, answer[:200]
    assert redis.llen(requests_key(ALIAS)) == 0


def test_a_tenant_over_its_rate_gets_429_with_retry_after(api: Api, services: Any, redis: Any) -> None:
    camera, other = make_key(services, "line-8", "detect"), make_key(services, "line-9", "detect")
    # The burst is spent (each request takes a token before its body is read, even a refused one) ...
    assert all(post(api, b"", auth=camera)[0] == 400 for _ in range(BURST))
    code, doc, headers = post(api, JPEG, auth=camera)
    spent = time.monotonic()
    assert code == 429 and headers["Retry-After"] == "2", (code, doc)  # 0.5 tokens/s: 2 s to the next one
    assert doc == {"error": "tenant line-8 is over its detect rate (0.5/s, burst 40); retry after 2 s"}
    # ... another tenant is not affected ...
    assert post(api, b"", auth=other)[0] == 400
    # ... and the bucket refills after the wait it named
    poll(lambda: post(api, b"", auth=camera)[0] == 400, 10, "a token to refill")
    assert time.monotonic() - spent > 1.0


# --- what is not deployed, or not answered ----------------------------------------------------------------------------


def test_an_unknown_or_undeployed_alias_is_404(api: Api, services: Any, redis: Any, tmp_path: Path) -> None:
    code, doc, _ = post(api, JPEG)
    assert code == 404 and doc["error"].startswith("no alias parts@prod"), doc
    deploy(services, tmp_path, deployed=False)
    code, doc, _ = post(api, JPEG, path="/v1/models/parts@prod/detect")
    assert (code, doc) == (404, {"error": "alias parts@prod is not deployed (yoloq serve parts@prod)"})
    assert redis.llen(requests_key(ALIAS)) == 0


def test_no_replica_is_a_503_after_the_timeout(api: Api, services: Any, redis: Any, tmp_path: Path) -> None:
    deploy(services, tmp_path)
    started = time.monotonic()
    code, doc, _ = post(api, JPEG)
    took = time.monotonic() - started
    assert (code, doc) == (503, {"error": f"no replica of {ALIAS} answered within 2 s; retry later"})
    assert TIMEOUT_S <= took < TIMEOUT_S + 5
    # The request waits in the list (a scale-from-zero signal); its deadline tells a late replica to drop it
    waiting = Request.decode(redis.lindex(requests_key(ALIAS), 0))
    assert waiting is not None and waiting.meta["deadline"] < time.time()


def test_waiters_beyond_the_cap_get_503_at_once_and_the_cap_frees_as_they_end(services: Any, redis: Any,
                                                                               tmp_path: Path) -> None:  # fmt: skip
    deploy(services, tmp_path)
    with serving_api(services, "detect-api-capped", {**SETTINGS, "YOLOQ_DETECT_MAX_WAITING": "1"}) as capped:
        # Given one request waiting for a replica that never comes
        first: list[Reply] = []
        caller = threading.Thread(target=lambda: first.append(post(capped, JPEG)))
        caller.start()
        poll(lambda: redis.llen(requests_key(ALIAS)) == 1, 10, "the first request to wait")
        # When another arrives, it is refused at once: no second Redis connection is held
        started = time.monotonic()
        code, doc, _ = post(capped, JPEG)
        assert (code, doc) == (503, {"error": "1 detect requests are waiting on this API process; retry later"})
        assert time.monotonic() - started < TIMEOUT_S
        caller.join(TIMEOUT_S + 10)
        assert first[0][0] == 503 and "answered within" in first[0][1]["error"]
        # Then once the first has ended, the next one may wait again
        code, doc, _ = post(capped, JPEG)
        assert (code, doc) == (503, {"error": f"no replica of {ALIAS} answered within 2 s; retry later"})


# --- waking a deployment scaled to zero -------------------------------------------------------------------------------


def test_a_request_to_a_deployment_scaled_to_zero_wakes_the_supervisor(api: Api, services: Any, redis: Any,
                                                                        tmp_path: Path) -> None:  # fmt: skip
    # Given parts@prod served by one replica and parts@cold scaled to zero, and a subscriber on the wake channel
    cold = "parts@cold"
    deploy(services, tmp_path)
    deploy(services, tmp_path, versions=0, alias=cold, replicas=0)
    subscriber = connect(services.settings.redis_url).pubsub()  # type: ignore[no-untyped-call]  # untyped in redis-py 7
    subscriber.subscribe(CHANNEL)
    poll(lambda: subscriber.get_message(timeout=0.1), 5, "the subscription to be confirmed")
    try:
        # When a request reaches the served deployment, nothing is published ...
        with Replica(services):
            assert post(api, JPEG)[0] == 200
        # ... and when one reaches the cold deployment, one wake-up is, after the request is on its list (so the
        # scaler's tick sees a request waiting and no replica)
        answer: list[Reply] = []
        caller = threading.Thread(target=lambda: answer.append(post(api, JPEG, path="/v1/models/parts@cold/detect")))
        caller.start()
        woken = poll(lambda: subscriber.get_message(ignore_subscribe_messages=True, timeout=0.1), 10, "a wake-up")
        assert (woken["channel"], woken["data"]) == (CHANNEL, f"serve:{cold}")  # the first: none for parts@prod
        assert redis.llen(requests_key(cold)) == 1
        caller.join(TIMEOUT_S + 10)
        assert answer[0][:2] == (503, {"error": f"no replica of {cold} answered within 2 s; retry later"})
        assert subscriber.get_message(ignore_subscribe_messages=True, timeout=0.2) is None  # one PUBLISH, no more
    finally:
        subscriber.close()
