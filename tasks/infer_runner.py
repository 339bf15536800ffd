"""The infer job body: a folder or ``s3://`` prefix of images → one JSON of detections per image in S3.

Batched through one of two detectors (:mod:`tasks.detectors`): the PyTorch model in FP16 when the job process has a
GPU and the model is ``.pt`` weights, else ONNX Runtime on the CPU (no torch in the hot path: 2.3× the images/s of
``predict()`` on .pt here, BRIEF §5; a ``.pt`` model is exported to ONNX first). Images are validated one by one:
a file that is not an image, is too large or does not decode is listed in the result with its reason and the rest
of the job goes on. Detections already written by an earlier attempt are skipped, so a preempted job resumes.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tasks.datasets import key_path, split_s3
from tasks.detectors import Detector, OnnxDetector, TorchDetector, choose
from tasks.errors import DatasetError
from tasks.export_runner import fetch_model
from tasks.postprocess import decode, letterbox
from tasks.runner import Control
from tasks.specs import InferSpec

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
MAX_BYTES = 50 * 1024 * 1024
MAX_PIXELS = 64_000_000
UPLOADERS = 8  # per-image JSON PUTs in flight (one at a time cost 45 % of the job's time)


@dataclass
class Inputs:
    """The images to run on, and every file that was refused with its reason."""

    images: list[Path] = field(default_factory=list)
    refused: list[dict[str, str]] = field(default_factory=list)


def _source_files(spec: InferSpec, control: Control, workdir: Path) -> list[Path]:
    if not spec.source.startswith("s3://"):
        root = Path(spec.source)
        if not root.is_dir():
            raise DatasetError(f"inference source {spec.source} is not a folder")
        return sorted(p for p in root.rglob("*") if p.is_file())
    bucket, prefix = split_s3(spec.source)
    listing = control.store.list_objects(prefix, bucket=bucket)
    if not listing:
        raise DatasetError(f"inference source {spec.source} does not exist or is empty")
    files = []
    for key, _, _ in listing:
        rel = key_path(spec.source, prefix, key)
        if rel is None:
            continue
        target = workdir / "input" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        control.store.get_file(key, target, bucket=bucket)
        files.append(target)
    return files


def _triage(files: list[Path]) -> Inputs:
    inputs = Inputs()
    for path in files:
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            inputs.refused.append({"file": path.name, "reason": f"not an image file ({path.suffix or 'no suffix'})"})
        elif path.stat().st_size > MAX_BYTES:
            inputs.refused.append({"file": path.name, "reason": f"larger than {MAX_BYTES // 2**20} MiB"})
        else:
            inputs.images.append(path)
    return inputs


def _load(path: Path) -> np.ndarray | str:
    """The decoded BGR image, or the reason it cannot be used."""
    import cv2

    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        return "does not decode as an image"
    if image.shape[0] * image.shape[1] > MAX_PIXELS:
        return f"more than {MAX_PIXELS // 1_000_000} megapixels"
    return image


def _onnx_model(model: Path, spec: InferSpec) -> Path:
    if model.suffix == ".onnx":
        return model
    from tasks.offline import settle_ultralytics

    settle_ultralytics()
    from ultralytics import YOLO

    return Path(YOLO(str(model)).export(format="onnx", imgsz=spec.imgsz, dynamic=True, simplify=False))


def _run_batch(detector: Detector, images: list[np.ndarray], spec: InferSpec) -> list[list[dict[str, Any]]]:
    prepared = [letterbox(image, spec.imgsz) for image in images]
    output = detector.raw(np.stack([p.tensor for p in prepared]))
    return [decode(output[i], prepared[i], spec.conf, detector.names) for i in range(len(images))]


def _detector(spec: InferSpec, control: Control, workdir: Path, device: str) -> Detector:
    """The job's detector: torch (FP16 on a GPU) for .pt weights on a GPU, else ONNX Runtime on the CPU."""
    model = fetch_model(spec.model, control, workdir)
    if choose(spec.backend, model, device) == "torch":
        from tasks.offline import settle_ultralytics

        settle_ultralytics()
        return TorchDetector(model, spec.batch, device)
    return OnnxDetector(_onnx_model(model, spec), spec.batch)


def _settle(pending: list[Future[None]], keep: int) -> list[Future[None]]:
    """Wait for uploads until at most ``keep`` are in flight; an upload error fails the job here."""
    while len(pending) > keep:
        pending.pop(0).result()
    return pending


def run_infer(spec: InferSpec, control: Control, workdir: Path, cache: Path, device: str = "cpu") -> dict[str, Any]:
    """Run detection over every image of the source; per-image JSON lands under ``jobs/{id}/results/detections/``."""
    workdir.mkdir(parents=True, exist_ok=True)
    detector = _detector(spec, control, workdir, device)
    batch = detector.batch
    inputs = _triage(_source_files(spec, control, workdir))
    prefix = f"jobs/{control.job_id}/results/detections/"
    done = {Path(key).stem for key, _, _ in control.store.list_objects(prefix)}
    todo = [p for p in inputs.images if p.stem not in done]
    started, written = time.monotonic(), 0
    with ThreadPoolExecutor(max_workers=UPLOADERS, thread_name_prefix="detections") as uploads:
        pending: list[Future[None]] = []
        for first in range(0, len(todo), batch):
            control.check()
            loaded = [(p, _load(p)) for p in todo[first : first + batch]]
            inputs.refused += [{"file": p.name, "reason": str(img)} for p, img in loaded if isinstance(img, str)]
            good = [(p, img) for p, img in loaded if not isinstance(img, str)]
            found = _run_batch(detector, [img for _, img in good], spec) if good else []
            for (path, _), dets in zip(good, found, strict=True):
                doc = {"image": path.name, "detections": dets}
                pending.append(uploads.submit(control.store.put_json, f"{prefix}{path.stem}.json", doc))
            written += len(good)
            pending = _settle(pending, keep=UPLOADERS * 4)
            control.progress(step=min(first + batch, len(todo)) + len(done), steps=len(inputs.images) + len(done))
        _settle(pending, keep=0)
    if written + len(done) == 0:
        raise DatasetError(f"no usable image in {spec.source}: " + "; ".join(f"{r['file']}: {r['reason']}"
                                                                           for r in inputs.refused[:5]))  # fmt: skip
    rate = round(written / (time.monotonic() - started), 1) if written else None
    return {"detections": control.store.uri(prefix), "images": written + len(done), "resumed_after": len(done),
            "refused": inputs.refused, "images_per_s": rate, "backend": detector.name}  # fmt: skip
