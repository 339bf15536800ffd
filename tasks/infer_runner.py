"""The infer job body: a folder or ``s3://`` prefix of images → detections in JSON-lines shards in S3.

Batched through one of two detectors (:mod:`tasks.detectors`): the PyTorch model in FP16 when the job process has a
GPU and the model is ``.pt`` weights, else ONNX Runtime on the CPU (no torch in the hot path: 2.3× the images/s of
``predict()`` on .pt here, BRIEF §5; a ``.pt`` model is exported to ONNX first). Images are checked one by one
before anything decodes them (issue 15 item 10): the type comes from the content's magic bytes (never the file
name) and the size from the header (:mod:`tasks.image_header`), so a file that is not an image, is over
:data:`MAX_BYTES` or :data:`MAX_PIXELS`, cannot be letterboxed, is cut short or fails to decode is one entry in the
result's ``refused`` list with its reason, and the rest of the job goes on. Each image is letterboxed as soon as it
is decoded (at most one full-size image in memory) the way ``predict()`` letterboxes it alone, and batched with
others of its letterboxed shape (:func:`_batches`). Detections go to :class:`tasks.infer_results.ShardWriter`, one
PUT per shard off the critical path; images already in a shard are skipped, so a preempted job resumes.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from tasks.datasets import key_path, split_s3
from tasks.detectors import Detector, OnnxDetector, TorchDetector, choose
from tasks.errors import DatasetError
from tasks.export_runner import fetch_model
from tasks.image_header import BadHeader, ImageHeader, NotAnImage, read_header, truncation
from tasks.infer_results import ShardWriter, detections_prefix, shard_keys
from tasks.postprocess import Prepared, batch, decode, letterbox
from tasks.runner import Control
from tasks.specs import InferSpec
from tasks.trust import TrustedPath, open_model

MAX_BYTES = 50 * 1024 * 1024
MAX_PIXELS = 64_000_000  # 192 MB once decoded to BGR; a TIFF tile counts too (the decoder buffers one whole)
HELD = 4  # batches' worth of letterboxed images that may wait for others of their shape


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


def _load(path: Path, imgsz: int, stride: int | None = None) -> Prepared | str:
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
        return letterbox(image, imgsz, stride) if image is not None else f"does not decode as {checked.format}"
    except cv2.error as exc:
        return f"does not decode as {checked.format} ({str(getattr(exc, 'err', '') or exc).strip()[:200]})"


def _onnx_model(model: TrustedPath, spec: InferSpec) -> Path:
    """The ONNX graph to run: the model itself (size-checked), or an export of the weights the trust rule checked."""
    if model.suffix.lower() == ".onnx":  # as tasks.trust judges it: a size-capped graph, no record
        return model
    from tasks.offline import settle_ultralytics

    settle_ultralytics()
    return Path(open_model(model).export(format="onnx", imgsz=spec.imgsz, dynamic=True, simplify=False))


def _detector(spec: InferSpec, control: Control, workdir: Path, device: str) -> Detector:
    """The job's detector: torch (FP16 on a GPU) for .pt weights on a GPU, else ONNX Runtime on the CPU."""
    model = fetch_model(spec.model, control, workdir)
    if choose(spec.backend, model, device) == "torch":
        from tasks.offline import settle_ultralytics

        settle_ultralytics()
        return TorchDetector(model, spec.batch, device)
    return OnnxDetector(_onnx_model(model, spec), spec.batch)


def input_stride(detector: Detector) -> int | None:
    """The stride to letterbox to a minimal rectangle for, as ``predict()`` does for a model that takes any multiple of
    it (a dynamic ONNX graph, PyTorch weights); None for a fixed input shape (the full square)."""
    if (declared := getattr(detector, "stride", None)) is not None:
        return int(declared)
    net = getattr(detector, "net", None)
    if net is not None:
        return int(max(net.stride))
    session = getattr(detector, "session", None)
    if session is None or all(isinstance(side, int) for side in session.get_inputs()[0].shape[2:]):
        return None
    return int(session.get_modelmeta().custom_metadata_map.get("stride", 32))


def _batches(todo: list[tuple[str, Path]], spec: InferSpec, stride: int | None, size: int,
             refused: list[dict[str, str]]) -> Iterator[list[tuple[str, Prepared]]]:  # fmt: skip
    """Batches of up to ``size`` images of one letterboxed shape, so each image gets the input ``predict()`` gives it
    alone; at most :data:`HELD` batches' worth of letterboxed images wait for company."""
    buckets: dict[tuple[int, ...], list[tuple[str, Prepared]]] = {}
    held = 0
    for name, path in todo:
        loaded = _load(path, spec.imgsz, stride)
        if isinstance(loaded, str):
            refused.append({"file": path.name, "reason": loaded})
            continue
        bucket = buckets.setdefault(loaded.tensor.shape, [])
        bucket.append((name, loaded))
        held += 1
        if len(bucket) == size or held >= HELD * size:
            ready = buckets.pop(
                loaded.tensor.shape if len(bucket) == size else max(buckets, key=lambda k: len(buckets[k]))
            )
            held -= len(ready)
            yield ready
    yield from buckets.values()


def _names(spec: InferSpec, workdir: Path, files: list[Path]) -> list[tuple[str, Path]]:
    """Each file with its name in the results: its path relative to the source (unique, unlike its stem)."""
    root = workdir / "input" if spec.source.startswith("s3://") else Path(spec.source)
    return [(path.relative_to(root).as_posix(), path) for path in files]


def _infer_all(todo: list[tuple[str, Path]], spec: InferSpec, control: Control, detector: Detector, *,
               shards: ShardWriter, refused: list[dict[str, str]], steps: tuple[int, int]) -> int:  # fmt: skip
    """Run every image; each batch's detections go to the shard writer. Returns the number of images run."""
    written = 0
    for group in _batches(todo, spec, input_stride(detector), detector.batch, refused):
        control.check()
        blob, prepared = batch([p for _, p in group], spec.imgsz)
        output = detector.raw(blob)
        for i, ((name, _), prep) in enumerate(zip(group, prepared, strict=True)):
            shards.add(name, decode(output[i], prep, spec.conf, detector.names))
        written += len(group)
        control.progress(step=steps[0] + written, steps=steps[1])
    return written


def run_infer(spec: InferSpec, control: Control, workdir: Path, cache: Path, device: str = "cpu") -> dict[str, Any]:
    """Run detection over every image of the source; detections land in JSON-lines shards (tasks.infer_results)."""
    workdir.mkdir(parents=True, exist_ok=True)
    detector = _detector(spec, control, workdir, device)
    inputs = _triage(_source_files(spec, control, workdir), spec.imgsz)
    prefix = detections_prefix(control.job_id)
    shards = ShardWriter(control.store, prefix)
    named = _names(spec, workdir, inputs.images)
    todo = [(name, path) for name, path in named if name not in shards.done]
    resumed = len(named) - len(todo)
    started = time.monotonic()
    try:
        written = _infer_all(todo, spec, control, detector, shards=shards, refused=inputs.refused,
                             steps=(resumed, len(named)))  # fmt: skip
    except BaseException:
        with contextlib.suppress(Exception):  # what is done is kept (a preempted attempt loses nothing); its error wins
            shards.close()
        raise
    shards.close()
    if written + resumed == 0:
        raise DatasetError(f"no usable image in {spec.source}: " + "; ".join(f"{r['file']}: {r['reason']}"
                                                                           for r in inputs.refused[:5]))  # fmt: skip
    rate = round(written / (time.monotonic() - started), 1) if written else None
    return {"detections": control.store.uri(prefix), "shards": len(shard_keys(control.store, prefix)),
            "images": written + resumed, "resumed_after": resumed, "refused": inputs.refused,
            "images_per_s": rate, "backend": detector.name}  # fmt: skip
