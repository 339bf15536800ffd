"""What the serving tests share: one tiny model trained by a real job (``train_parts``, the session's ``trained``
fixture), its registration as ``parts``, and one detect request over the real Redis transport as the API sends it."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from infra.model_registry import ModelRegistry
from infra.redis_client import connect
from infra.s3 import S3Store
from infra.serve_queue import Request, ServeQueue
from infra.serve_replicas import ServeReplicas
from tasks.model_records import ArtefactKind
from tasks.states import JobState
from tests.fleet import Fleet, clean_redis, poll, small_dataset, small_train
from workers.stack import Services

ALIAS = "parts@prod"
CLASSES = {0: "class_0", 1: "class_1"}


def train_parts(services: Services, folder: Path) -> dict[str, Path]:
    """A one-epoch model trained by a real job on a fleet of its own (its dynamic-batch ONNX export and best.pt), and
    the images it saw: ``{"onnx", "weights", "images"}``."""
    from yoloq.client import Client

    data = small_dataset(folder / "data", seed=5)
    clean_redis(services)
    fleet = Fleet(services)
    fleet.start("0:A100:40")
    try:
        record = Client(services.settings).submit(small_train(str(data))).wait(timeout_s=300)
    finally:
        fleet.stop()
        clean_redis(services)
    assert record.state is JobState.SUCCEEDED and record.result, record.events[-1]
    store = S3Store(services.settings)
    files = {"onnx": folder / "best.onnx", "weights": folder / "best.pt"}
    for kind, uri in (("onnx", record.result["onnx"]), ("weights", record.result["best"])):
        assert store.get_file(uri.split("/", 3)[3], files[kind])
    return {**files, "images": data / "images" / "val"}


def register(models: ModelRegistry, services: Services, trained: dict[str, Path]) -> int:
    """Register the trained model as a new version of ``parts``; its number."""
    files: dict[ArtefactKind, Path] = {"onnx": trained["onnx"], "weights": trained["weights"]}
    return models.register("parts", files, S3Store(services.settings), classes=CLASSES, imgsz=64, by="test").version


def push(queue: ServeQueue, image: bytes, version: int = 1, conf: float = 0.25, wait_s: float = 30) -> str:
    """Queue one detect request as the API does (its deadline ``wait_s`` away); its id."""
    rid, now = uuid.uuid4().hex, time.time()
    meta = {"id": rid, "version": version, "conf": conf, "deadline": now + wait_s, "enq": now}
    queue.push(ALIAS, Request(meta, image))
    return rid


def ask(queue: ServeQueue, image: bytes, version: int = 1, conf: float = 0.25, wait_s: float = 30) -> dict[str, Any]:
    """One detect request over the real transport, as the API sends it; the reply (``{}`` when none came)."""
    return queue.wait_reply(push(queue, image, version, conf, wait_s), wait_s) or {}


def images_of(trained: dict[str, Path]) -> list[bytes]:
    """The training run's validation images, as sent by a camera."""
    return [p.read_bytes() for p in sorted(trained["images"].iterdir())]


def ready_replicas(services: Services, n: int = 1, timeout_s: float = 120) -> list[dict[str, Any]]:
    """Block until at least ``n`` replicas of :data:`ALIAS` say ready; their presence entries."""
    presence = ServeReplicas(connect(services.settings.redis_url), services.settings.redis_url)
    ready: list[dict[str, Any]] = poll(lambda: len(r := [e for e in presence.live(ALIAS) if e["state"] == "ready"]) >= n
                                       and r, timeout_s, f"{n} ready replica(s) of {ALIAS}")  # fmt: skip
    return ready
