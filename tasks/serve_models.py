"""A serving replica's models: each version of its alias fetched from S3 into the attempt's folder, checked, loaded
into a detector and warmed up before it answers anything; and :func:`detect`, one version's share of a batch.

Checks before a byte is loaded: the copy's sha256 must be the one the model registry recorded for the artefact (the
bucket is never trusted: anyone who can write to it could swap a file), and weights, being pickles, also pass the
trust rule (:func:`tasks.trust.trusted_copy`: the registry recorded them in the ledger). A version that fails any
check, is missing, or does not load is *refused*: the replica answers its requests with an error and keeps serving
the other versions; it tries the version again after :data:`RETRY_REFUSED_S`.

Which detector (:mod:`tasks.detectors`): ``auto`` is PyTorch FP16 from the weights on a GPU and ONNX Runtime from
the ONNX export on the CPU; ``onnx`` and ``torch`` force one; ``engine`` runs a TensorRT engine artefact and needs
``tensorrt`` importable on the worker (:func:`check_backend`, else SpecRejected before anything loads).
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from infra.model_registry import ModelRegistry
from infra.serve_queue import Request
from tasks.detectors import Detector, OnnxDetector, TorchDetector
from tasks.errors import BrokerUnavailable, JobFailed, SpecRejected
from tasks.infer_runner import input_stride
from tasks.model_records import Artefact, ArtefactKind, ModelVersion
from tasks.postprocess import PAD, batch, decode, letterbox
from tasks.runner import Control
from tasks.trust import TrustedPath, sha256_of, trusted_copy

log = logging.getLogger("yoloq.serve")
RETRY_REFUSED_S = 60.0  # a refused version is tried again after this long (an operator may restore its artefact)
UNLOAD_IDLE_S = 30.0  # a version the alias no longer names is dropped once no request asked for it this long
_ARTEFACT: dict[str, ArtefactKind] = {"onnx": "onnx", "torch": "weights", "engine": "engine"}


def check_backend(backend: str) -> None:
    """SpecRejected when the replica's backend cannot run on this worker at all (``engine`` without TensorRT)."""
    if backend != "engine":
        return
    try:
        import tensorrt  # noqa: F401  # the check is the import
    except ImportError:
        raise SpecRejected(
            "backend engine needs a GPU worker whose image ships TensorRT; use auto, onnx or torch"
        ) from None


def plan(record: ModelVersion, backend: str, device: str) -> tuple[str, ArtefactKind]:
    """(detector, artefact kind) for a version: ``auto`` takes the weights on a GPU and the ONNX graph on the CPU,
    falling back to whichever the version has; JobFailed when it lacks what the backend needs."""
    kinds = record.artefacts
    if backend == "auto":
        gpu = device != "cpu"
        backend = "torch" if ("weights" in kinds and (gpu or "onnx" not in kinds)) else "onnx"
    artefact = _ARTEFACT[backend]
    if artefact not in kinds:
        raise JobFailed(f"{record.name} v{record.version} has no {artefact} artefact, which backend {backend} needs")
    return backend, artefact


def fetch_checked(artefact: Artefact, control: Control, folder: Path) -> TrustedPath:
    """The artefact's private copy, returned only when its sha256 is the one the registry recorded."""
    local = trusted_copy(artefact.uri, control.store, control.trust, folder)
    digest = sha256_of(local)
    if digest != artefact.sha256:
        raise JobFailed(f"{artefact.uri} has sha256 {digest[:16]}…, not the {artefact.sha256[:16]}… the registry "
                        "recorded; refused, not loaded")  # fmt: skip
    return local


class EngineDetector:
    """A TensorRT engine on the GPU through Ultralytics' AutoBackend (the engine file is not a pickle; it was checked
    against the registry and the trust ledger like any artefact). Engines have a fixed input: the full square."""

    name = "tensorrt"

    def __init__(self, model: TrustedPath, batch: int, device: str) -> None:
        import torch
        from ultralytics.nn.autobackend import AutoBackend

        self.torch = torch
        self.device = torch.device(f"cuda:{device}")
        self.backend = AutoBackend(str(model), device=self.device, fp16=True)
        self.names = {int(k): str(v) for k, v in dict(self.backend.names).items()}
        self.batch = int(getattr(self.backend, "batch", batch) or batch)

    def raw(self, blob: np.ndarray) -> np.ndarray:
        """One engine execution; the output back on the host as float32."""
        with self.torch.inference_mode():
            x = self.torch.from_numpy(blob).to(self.device)
            out = self.backend(x.half() if self.backend.fp16 else x)
            first = out[0] if isinstance(out, (list, tuple)) else out
            return np.asarray(first.float().cpu().numpy(), dtype=np.float32)


def build_detector(kind: str, path: TrustedPath, batch: int, device: str) -> Detector:
    """The detector of one version (the torch and engine ones import torch: never in a Celery process)."""
    if kind == "onnx":
        return OnnxDetector(path, batch)
    from tasks.offline import settle_ultralytics

    settle_ultralytics()
    if kind == "engine":
        return EngineDetector(path, batch, device)
    return TorchDetector(path, batch, device)


@dataclass
class Loaded:
    """A version ready to answer: its record (class names, input size), detector and letterbox stride."""

    record: ModelVersion
    detector: Detector
    stride: int | None
    last_used: float

    def warm_up(self, size: int) -> float:
        """Run one batch of ``size`` grey images (allocations, kernel choice) so the first request does not pay for
        it; returns the seconds it took."""
        side = self.record.imgsz
        blob = np.full((min(size, self.detector.batch), 3, side, side), PAD / 255.0, dtype=np.float32)
        started = time.perf_counter()
        self.detector.raw(blob)
        return time.perf_counter() - started


def _one_line(err: BaseException) -> str:
    return (str(err) or type(err).__name__).splitlines()[0][:300]


class Models:
    """The versions one replica holds (loaded, warmed) or refused (with the reason and when)."""

    def __init__(self, registry: ModelRegistry, name: str, control: Control, workdir: Path, *,
                 backend: str, device: str, max_batch: int) -> None:  # fmt: skip
        self.registry, self.name, self.control, self.workdir = registry, name, control, workdir
        self.backend, self.device, self.max_batch = backend, device, max_batch
        self.loaded: dict[int, Loaded] = {}
        self.refused: dict[int, tuple[str, float]] = {}

    def get(self, version: int) -> Loaded | str:
        """The version ready to answer (loaded and warmed now if it was not), or why it cannot answer."""
        now = time.monotonic()
        if (have := self.loaded.get(version)) is not None:
            have.last_used = now
            return have
        refused = self.refused.get(version)
        if refused is not None and now - refused[1] < RETRY_REFUSED_S:
            return refused[0]
        try:
            loaded = self._load(version)
        except BrokerUnavailable:
            raise  # Redis, not the version: the replica's loop rides it out
        except Exception as err:  # a version that cannot load must never stop the others being served
            reason = f"{self.name} v{version} refused: {_one_line(err)}"
            log.warning("%s", reason)
            self.refused[version] = (reason, now)
            self._note("serve-version-refused", reason, version=version)
            return reason
        self.refused.pop(version, None)
        self.loaded[version] = loaded
        return loaded

    def sync(self, needed: list[int]) -> None:
        """Hold every version the alias names now; drop those it no longer names once they are idle."""
        for version in needed:
            self.get(version)
        now = time.monotonic()
        for version in [v for v, have in self.loaded.items() if v not in needed]:
            if now - self.loaded[version].last_used > UNLOAD_IDLE_S:
                del self.loaded[version]
                # The detector holds the model in memory: its copy on disk goes too (a pod's emptyDir is small).
                shutil.rmtree(self.workdir / f"v{version}", ignore_errors=True)
                self._note("serve-version-unloaded", f"{self.name} v{version} unloaded: the alias no longer names it",
                           version=version)  # fmt: skip

    def backends(self) -> str:
        """The detectors in use, e.g. ``onnx-cpu`` (what the presence entry shows)."""
        return "+".join(sorted({have.detector.name for have in self.loaded.values()})) or self.backend

    def _load(self, version: int) -> Loaded:
        record = self.registry.version(self.name, version)
        kind, artefact = plan(record, self.backend, self.device)
        started = time.perf_counter()
        path = fetch_checked(record.artefacts[artefact], self.control, self.workdir / f"v{version}")
        detector = build_detector(kind, path, self.max_batch, self.device)
        if not detector.names:
            detector.names = dict(record.classes)
        loaded = Loaded(record, detector, input_stride(detector), time.monotonic())
        warm_s = loaded.warm_up(self.max_batch)
        took = time.perf_counter() - started
        self._note("serve-version-loaded", f"{self.name} v{version} loaded ({detector.name}, {artefact} sha256 "
                   f"checked) and warmed up in {took:.2f} s", version=version, seconds=round(took, 3),
                   warm_s=round(warm_s, 3))  # fmt: skip
        return loaded

    def _note(self, kind: str, reason: str, **fields: Any) -> None:
        try:
            self.control.note(kind, reason, **fields)
        except BrokerUnavailable as err:  # an event, not the serving: go on
            log.warning("event %s not recorded: %s", kind, err)


DEFAULT_CONF = 0.25


@dataclass
class Reply:
    """One request's answer (``body``, the JSON its caller gets) and what the serving figures count of it."""

    request_id: str
    body: dict[str, Any]
    enq: float | None
    detections: int = 0
    confidences: list[float] = field(default_factory=list)
    error: bool = False

    def latency_ms(self, now: float) -> float:
        """Milliseconds from the request's arrival in the queue to ``now`` (0 when it did not say)."""
        return round(max(now - self.enq, 0.0) * 1000, 3) if self.enq is not None else 0.0


def _enq(request: Request) -> float | None:
    enq = request.meta.get("enq")
    return float(enq) if isinstance(enq, int | float) else None


def error_reply(request: Request, reason: str, status: int) -> Reply:
    """An error answer (``status`` is what the API answers with: 422 image, 503 version refused, 500 replica)."""
    return Reply(request.id, {"id": request.id, "error": reason, "status": status}, _enq(request), error=True)


def decode_image(data: bytes) -> np.ndarray | None:
    """BGR pixels as displayed (``IMREAD_COLOR`` applies a JPEG's EXIF orientation), or None when they do not
    decode."""
    import cv2

    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        return None
    return image if image is not None and image.size else None


def _conf(request: Request) -> float:
    conf = request.meta.get("conf")
    return float(conf) if isinstance(conf, int | float) and 0 <= conf <= 1 else DEFAULT_CONF


def _answer(request: Request, loaded: Loaded, found: list[dict[str, Any]], *, queue_ms: float, infer_ms: float,
            size: int) -> Reply:  # fmt: skip
    names = loaded.record.classes or loaded.detector.names
    detections = [{"box": d["box"], "class_id": d["cls"], "class_name": names.get(d["cls"], d["name"]),
                   "confidence": d["conf"]} for d in found]  # fmt: skip
    body = {"id": request.id, "version": loaded.record.version, "detections": detections,
            "timings_ms": {"queue": queue_ms, "infer": round(infer_ms, 3)}, "batch": size}  # fmt: skip
    return Reply(request.id, body, _enq(request), len(found), [float(d["conf"]) for d in found])


def detect(loaded: Loaded, requests: list[Request], taken_at: float) -> list[Reply]:
    """Answer one version's requests of a batch: decode, letterbox and run them together (as many per call as the
    detector takes), decode the boxes into each image's displayed pixels; an image that does not decode gets 422."""
    side, replies, ready = loaded.record.imgsz, [], []
    for request in requests:
        image = decode_image(request.image)
        if image is None:
            replies.append(error_reply(request, "the image does not decode", 422))
        else:
            ready.append((request, letterbox(image, side, loaded.stride)))
    names = loaded.record.classes or loaded.detector.names
    for first in range(0, len(ready), loaded.detector.batch):
        chunk = ready[first : first + loaded.detector.batch]
        started = time.perf_counter()
        blob, prepared = batch([prep for _, prep in chunk], side)
        output = loaded.detector.raw(blob)
        found = [decode(output[i], prep, _conf(request), names) for i, ((request, _), prep)
                 in enumerate(zip(chunk, prepared, strict=True))]  # fmt: skip
        infer_ms = (time.perf_counter() - started) * 1000
        for (request, _), dets in zip(chunk, found, strict=True):
            enq = _enq(request)
            queue_ms = round(max(taken_at - enq, 0.0) * 1000, 3) if enq is not None else 0.0
            replies.append(_answer(request, loaded, dets, queue_ms=queue_ms, infer_ms=infer_ms, size=len(chunk)))
    return replies
