"""The infer job body: a folder or ``s3://`` prefix of images → one JSON of detections per image in S3.

Batched through one of two detectors (:mod:`tasks.detectors`): the PyTorch model in FP16 when the job process has a
GPU and the model is ``.pt`` weights, else ONNX Runtime on the CPU (no torch in the hot path: 2.3× the images/s of
``predict()`` on .pt here, BRIEF §5; a ``.pt`` model is exported to ONNX first). Images are checked one by one
before anything decodes them (issue 15 item 10): the type comes from the content's magic bytes (never the file
name) and the size from the header (:mod:`tasks.image_header`), so a file that is not an image, is over
:data:`MAX_BYTES` or :data:`MAX_PIXELS`, cannot be letterboxed, is cut short or fails to decode is one entry in the
result's ``refused`` list with its reason, and the rest of the job goes on. Each image is letterboxed as soon as it
is decoded, so at most one full-size image is in memory. Detections already written by an earlier attempt are
skipped, so a preempted job resumes.
"""

from __future__ import annotations

import io
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from tasks.datasets import key_path, split_s3
from tasks.detectors import Detector, OnnxDetector, TorchDetector, choose
from tasks.errors import DatasetError
from tasks.export_runner import fetch_model
from tasks.image_header import BadHeader, ImageHeader, NotAnImage, read_header, truncation
from tasks.postprocess import Prepared, decode, letterbox
from tasks.runner import Control
from tasks.specs import InferSpec
from tasks.trust import TrustedPath, open_model

MAX_BYTES = 50 * 1024 * 1024
MAX_PIXELS = 64_000_000  # 192 MB once decoded to BGR; a TIFF tile counts too (the decoder buffers one whole)
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


def _over_limits(header: ImageHeader, imgsz: int) -> str | None:
    """Why an image of this declared size is refused before it decodes, or None."""
    size = f"{header.width}x{header.height} {header.format}"
    if header.pixels > MAX_PIXELS:
        return f"{size} is {header.pixels / 1e6:.0f} megapixels, over the {MAX_PIXELS // 1_000_000} megapixel limit"
    if header.tile and header.tile[0] * header.tile[1] > MAX_PIXELS:
        return f"{size} has {header.tile[0]}x{header.tile[1]} tiles, over the {MAX_PIXELS // 1_000_000} megapixel limit"
    gain = min(imgsz / header.width, imgsz / header.height)
    if round(header.width * gain) < 1 or round(header.height * gain) < 1:
        return f"{size} is too thin to letterbox to {imgsz} pixels"
    return None


def _inspect(stream: BinaryIO, imgsz: int) -> ImageHeader | str:
    """The image's header when its content and declared size are acceptable, else the reason (nothing decoded)."""
    try:
        header = read_header(stream)
    except (NotAnImage, BadHeader) as exc:
        return str(exc)
    return _over_limits(header, imgsz) or header


def _triage(files: list[Path], imgsz: int) -> Inputs:
    inputs = Inputs()
    for path in files:
        if path.stat().st_size > MAX_BYTES:
            inputs.refused.append({"file": path.name, "reason": f"larger than {MAX_BYTES // 2**20} MiB"})
            continue
        with path.open("rb") as stream:
            checked = _inspect(stream, imgsz)
        if isinstance(checked, str):
            inputs.refused.append({"file": path.name, "reason": checked})
        else:
            inputs.images.append(path)
    return inputs


def _load(path: Path, imgsz: int) -> Prepared | str:
    """The letterboxed image, or the reason it cannot be used; the bytes decoded are the bytes checked."""
    import cv2

    with path.open("rb") as stream:
        data = stream.read(MAX_BYTES + 1)
    checked = _inspect(io.BytesIO(data), imgsz) if len(data) <= MAX_BYTES else f"larger than {MAX_BYTES // 2**20} MiB"
    if isinstance(checked, str):
        return checked
    cut = truncation(data, checked)
    if cut:
        return cut
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        return letterbox(image, imgsz) if image is not None else f"does not decode as {checked.format}"
    except cv2.error as exc:
        return f"does not decode as {checked.format} ({str(getattr(exc, 'err', '') or exc).strip()[:200]})"


def _onnx_model(model: TrustedPath, spec: InferSpec) -> Path:
    """The ONNX graph to run: the model itself (size-checked), or an export of the weights the trust rule checked."""
    if model.suffix.lower() == ".onnx":  # as tasks.trust judges it: a size-capped graph, no record
        return model
    from tasks.offline import settle_ultralytics

    settle_ultralytics()
    return Path(open_model(model).export(format="onnx", imgsz=spec.imgsz, dynamic=True, simplify=False))


def _run_batch(detector: Detector, prepared: list[Prepared], spec: InferSpec) -> list[list[dict[str, Any]]]:
    output = detector.raw(np.stack([p.tensor for p in prepared]))
    return [decode(output[i], prepared[i], spec.conf, detector.names) for i in range(len(prepared))]


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
    inputs = _triage(_source_files(spec, control, workdir), spec.imgsz)
    prefix = f"jobs/{control.job_id}/results/detections/"
    done = {Path(key).stem for key, _, _ in control.store.list_objects(prefix)}
    todo = [p for p in inputs.images if p.stem not in done]
    started, written = time.monotonic(), 0
    with ThreadPoolExecutor(max_workers=UPLOADERS, thread_name_prefix="detections") as uploads:
        pending: list[Future[None]] = []
        for first in range(0, len(todo), batch):
            control.check()
            loaded = [(p, _load(p, spec.imgsz)) for p in todo[first : first + batch]]
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
