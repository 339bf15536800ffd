"""Issue 16 items 3 and 4, serving replicas: a model trained here, registered (artefacts in SeaweedFS, weights in the
trust ledger), served by ``kind: serve`` jobs on real workers of a simulated fleet, and asked over the real Redis
transport from several threads. Every request is answered: batched under load, one by one when they come one by one,
422 for an image that does not decode, boxes in an EXIF-rotated photo's displayed pixels; a version whose artefact
changed in the store is refused while the others serve; a replica preempted under load drains and comes back."""

from __future__ import annotations

import io
import json
import threading
import time
from typing import Any

import cv2
import numpy as np
import pytest

from infra.deployments import Deployments
from infra.redis_client import connect
from infra.s3 import S3Store
from infra.serve_queue import Request
from infra.serve_replicas import ServeReplicas
from infra.serve_stats import ServeStats
from tasks.specs import ServeSpec
from tasks.states import JobState
from tests.fleet import poll, yoloq_cli
from tests.serving import ALIAS, CLASSES, ask, images_of, ready_replicas, register

pytestmark = pytest.mark.integration


def _all_at_once(calls: list[Any]) -> list[Any]:
    """Run the calls in threads released together; their results in order."""
    results: list[Any] = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def run(i: int) -> None:
        barrier.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def _exif_rotated(photo: bytes) -> tuple[bytes, bytes, tuple[int, int]]:
    """A 64x40 crop of ``photo`` as a JPEG whose EXIF says "rotate 90° clockwise to display", the pixels it displays
    as a lossless PNG, and the displayed (width, height)."""
    from PIL import Image

    stored = Image.open(io.BytesIO(photo)).convert("RGB").crop((0, 0, 64, 40))
    exif = Image.Exif()
    exif[0x0112] = 6
    out = io.BytesIO()
    stored.save(out, "JPEG", exif=exif.tobytes(), quality=95)
    shown = cv2.imdecode(np.frombuffer(out.getvalue(), np.uint8), cv2.IMREAD_COLOR)
    assert shown is not None and shown.shape[:2] == (64, 40)
    ok, png = cv2.imencode(".png", shown)
    assert ok
    return out.getvalue(), png.tobytes(), (40, 64)


def test_a_served_alias_batches_under_load_and_answers_every_request(fleet, services, models, queue, trained):
    # Given a trained model registered as parts v1, served by `yoloq serve` with one replica
    fleet.start("0:A100:40")
    models.set_alias(ALIAS, register(models, services, trained), by="test")
    ghost = yoloq_cli(services, "serve", "ghost", "--replicas", "1", "--team", "vision")
    no_team = yoloq_cli(services, "serve", "parts", "--replicas", "1")
    assert ghost.returncode == 1 and "no alias ghost@prod" in ghost.stderr, ghost.stderr
    assert no_team.returncode == 1 and "(--team)" in no_team.stderr, no_team.stderr
    assert Deployments(connect(services.settings.redis_url)).all() == []  # a refused command changed nothing
    done = yoloq_cli(services, "serve", "parts", "--replicas", "1", "--team", "vision", "--max-wait-ms", "50", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["deployment"]["alias"] == ALIAS and len(doc["submitted"]) == 1
    [entry] = ready_replicas(services)
    job_id = doc["submitted"][0]
    assert (entry["job_id"], entry["gpu"], entry["backend"], entry["versions"]) == (job_id, "0", "onnx-cpu", [1])
    assert entry["cold_start_s"] > 0 and ServeStats(connect(services.settings.redis_url)).cold_starts(ALIAS)
    images = images_of(trained)
    # When 16 requests come from 16 threads at once, then 4 one after another
    together = _all_at_once([lambda i=i: ask(queue, images[i % len(images)]) for i in range(16)])
    alone = [ask(queue, images[0]) for _ in range(4)]
    # Then every one is answered by v1, several per batch under load and alone when they come alone
    assert all(r.get("version") == 1 and isinstance(r.get("detections"), list) for r in together + alone), together
    assert max(r["batch"] for r in together) > 1 and [r["batch"] for r in alone] == [1] * 4
    assert set(together[0]["timings_ms"]) == {"queue", "infer"}
    # And an image that does not decode gets 422 and the next request is still answered
    bad = ask(queue, b"\xff\xd8\xff\xe0 a torn jpeg")
    assert (bad["status"], bad["error"]) == (422, "the image does not decode")
    assert ask(queue, images[1]).get("version") == 1
    # And a photo rotated by its EXIF tag gets boxes in its displayed pixels: those of the same pixels sent upright
    rotated, upright, (width, height) = _exif_rotated(images[2])
    found = ask(queue, rotated, conf=0.001)["detections"]
    assert found and found == ask(queue, upright, conf=0.001)["detections"]
    assert all(0 <= d["box"][0] <= d["box"][2] <= width and 0 <= d["box"][1] <= d["box"][3] <= height for d in found)
    assert {d["class_name"] for d in found} <= set(CLASSES.values())
    # And the figures count every request (the torn one as an error) and the batcher's histogram
    stats = ServeStats(connect(services.settings.redis_url))
    figures = poll(lambda: (f := stats.version("parts", 1))["requests"] == 24 and f, 10, "figures of the last reply")
    assert figures["errors"] == 1 and figures["p99_ms"] is not None
    assert max(stats.batch_sizes(ALIAS)) > 1
    # And a request whose caller has gone (deadline passed) is dropped unanswered
    late = Request({"id": "late", "version": 1, "deadline": time.time() - 1, "enq": time.time() - 31}, images[0])
    queue.push(ALIAS, late)
    assert queue.wait_reply("late", 2) is None and queue.depth(ALIAS) == 0
    assert Deployments(connect(services.settings.redis_url)).get(ALIAS) is not None


def test_a_version_whose_artefact_changed_in_the_store_is_refused_while_the_others_serve(
    fleet, client, services, models, queue, trained, tmp_path
):
    # Given parts v1 stable and v2 as a 50 % canary, and v2's ONNX file swapped in the store after it was registered
    # for another loadable graph (same model, other metadata)
    import onnx

    fleet.start("0:A100:40")
    v1, v2 = register(models, services, trained), register(models, services, trained)
    models.set_alias(ALIAS, v1, by="test")
    models.set_canary(ALIAS, v2, 50, by="test")
    swapped = onnx.load(str(trained["onnx"]))
    swapped.doc_string = "not what the registry recorded"
    onnx.save(swapped, str(tmp_path / "swapped.onnx"))
    S3Store(services.settings).put_file(models.version("parts", v2).artefacts["onnx"].uri.split("/", 3)[3],
                                        tmp_path / "swapped.onnx")  # fmt: skip
    # When a replica job is submitted through the Python client (kind serve is a job spec like any other)
    handle = client.submit(ServeSpec(alias="parts", team="vision", tier="high"))
    [entry] = ready_replicas(services)
    # Then it serves v1 and refuses v2: v2's requests get 503 with the reason, v1's are answered
    image = images_of(trained)[0]
    assert entry["versions"] == [v1]
    refused = ask(queue, image, version=v2)
    assert refused["status"] == 503 and "sha256" in refused["error"] and "not the" in refused["error"], refused
    assert ask(queue, image, version=v1)["version"] == v1
    events = client.job(handle.job_id).events
    assert any(e.type == "serve-version-refused" and "sha256" in (e.reason or "") for e in events)
    # And when the alias moves to a new version at run time, the replica loads it and answers with it
    v3 = register(models, services, trained)
    models.set_alias(ALIAS, v3, by="test")
    presence = ServeReplicas(connect(services.settings.redis_url), services.settings.redis_url)
    poll(lambda: v3 in presence.live(ALIAS)[0]["versions"], 30, "the replica to load the new stable version")
    assert ask(queue, image, version=v3)["version"] == v3
    assert client.job(handle.job_id).state is JobState.RUNNING


def test_a_replica_preempted_under_load_drains_and_no_request_is_lost(fleet, client, services, models, queue, trained):
    # Given parts served by two replicas on two GPUs from its weights (the torch backend: loaded through the trust
    # ledger the registry recorded them in), and four threads asking without pause
    fleet.start("0:A100:40,1:A100:40")
    models.set_alias(ALIAS, register(models, services, trained), by="test")
    done = yoloq_cli(services, "serve", "parts", "--replicas", "2", "--team", "vision", "--backend", "torch", "--json")
    assert done.returncode == 0, done.stderr
    jobs = json.loads(done.stdout)["submitted"]
    assert {e["backend"] for e in ready_replicas(services, 2)} == {"torch-fp32-cpu"}
    images, replies, stop, lock = images_of(trained), list[dict[str, Any]](), threading.Event(), threading.Lock()

    def load(offset: int) -> None:
        i = offset
        while not stop.is_set():
            reply = ask(queue, images[i % len(images)])
            with lock:
                replies.append(reply)
            i += 1

    threads = [threading.Thread(target=load, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    try:
        poll(lambda: len(replies) >= 20, 60, "requests flowing")
        # When an operator preempts one replica
        victim = jobs[0]
        assert yoloq_cli(services, "preempt", victim).returncode == 0
        # Then it drains and is requeued, and its next attempt serves again, while the other takes the load
        poll(lambda: [a.outcome for a in client.job(victim).attempts][:1] == ["preempted"], 60, "the drained attempt")
        task = poll(lambda: len(a := client.job(victim).attempts) == 2 and a[1].task_id, 60, "a second attempt")
        presence = ServeReplicas(connect(services.settings.redis_url), services.settings.redis_url)
        poll(lambda: any(e["task_id"] == task and e["state"] == "ready" for e in presence.live(ALIAS)), 120,
             "the requeued replica ready")  # fmt: skip
        seen = len(replies)
        poll(lambda: len(replies) >= seen + 20, 60, "requests after the requeue")
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    # And every request was answered, none dropped
    assert len(replies) >= 60 and all(r.get("version") == 1 for r in replies), [r for r in replies if not r][:3]
    record = client.job(victim)
    assert record.state is JobState.RUNNING and record.preemptions[0].by.startswith("cli:")
    drained = [e for e in record.events if e.type == "serve-drained"]
    assert len(drained) == 1 and "preempt requested" in (drained[0].reason or "")
    # And `yoloq serve --list` shows both replicas; `--stop` cancels them (they drain, none fails) and drops it
    listed = json.loads(yoloq_cli(services, "serve", "--list", "--json").stdout)
    assert [sorted(j["job_id"] for j in row["jobs"]) for row in listed] == [sorted(jobs)]
    assert {e["state"] for e in listed[0]["live"]} == {"ready"}
    stopped = yoloq_cli(services, "serve", "parts", "--stop", "--json")
    assert stopped.returncode == 0 and sorted(json.loads(stopped.stdout)["cancelled"]) == sorted(jobs)
    poll(lambda: all(client.job(j).state is JobState.CANCELLED for j in jobs), 60, "both replicas cancelled")
    assert Deployments(connect(services.settings.redis_url)).get(ALIAS) is None and presence.live(ALIAS) == []
