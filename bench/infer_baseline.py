"""The baseline of bench.infer, in a process of its own: Ultralytics ``predict()`` on the same images.

``python -m bench.infer_baseline OUT.json ONNX SCRATCH LAUNCHED_AT IMAGE...`` prepares the same offline environment as
a yoloq job process (``tasks.offline.prepare_environment`` before Ultralytics is imported), then times
``YOLO(onnx).predict`` (batch 8, then 1) and ``YOLO(.pt).predict`` (batch 1 and 8) of an untrained yolov8n saved from
its yaml. Each warm figure excludes model loading and a warm-up call; the ONNX model's first pass over all images is
also reported from this process's launch (``LAUNCHED_AT``, the parent's ``time.time()``), the counterpart of a yoloq
job's submitted → finished.

``python -m bench.infer_baseline --sequential OUT.json ONNX SCRATCH IMGSZ CONF IMAGE...`` is bench.serve's baseline:
one ``predict()`` call per image, sequentially, on the image decoded from its bytes as a server would get it;
:func:`raw_ort` is its other baseline, run in bench.serve's own process.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

IMGSZ, CONF = 160, 0.25


def _pass(model: Any, paths: list[str], batch: int) -> tuple[float, int]:
    """One predict() over every image; (seconds, detections)."""
    t0 = time.perf_counter()
    results = model.predict(paths, imgsz=IMGSZ, batch=batch, conf=CONF, verbose=False)
    seconds = time.perf_counter() - t0
    if len(results) != len(paths):
        raise RuntimeError(f"predict() returned {len(results)} results for {len(paths)} images")
    return seconds, sum(len(r.boxes) for r in results)


def _warm(model: Any, paths: list[str], batch: int) -> dict[str, Any]:
    model.predict(paths[: 2 * batch], imgsz=IMGSZ, batch=batch, conf=CONF, verbose=False)  # warm-up
    seconds, found = _pass(model, paths, batch)
    return {"batch": batch, "images": len(paths), "seconds": seconds, "images_per_s": len(paths) / seconds,
            "detections": found}  # fmt: skip


def _offline(scratch: Path) -> None:
    """The same offline environment as a yoloq job process, before Ultralytics is imported."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tasks.offline import prepare_environment

    prepare_environment(scratch / "ultralytics-config", threads=len(os.sched_getaffinity(0)))
    from tasks.offline import settle_ultralytics

    settle_ultralytics()


def sequential(argv: list[str]) -> None:
    """One predict() per image, timed call by call (bench.serve's baseline)."""
    out, onnx, scratch, paths = Path(argv[0]), argv[1], Path(argv[2]), argv[5:]
    imgsz, conf = int(argv[3]), float(argv[4])
    _offline(scratch)
    import cv2
    import numpy as np
    from ultralytics import YOLO

    from bench.harness.report import summary

    model = YOLO(onnx, task="detect")
    bodies = [Path(p).read_bytes() for p in paths]

    def once(body: bytes) -> int:
        image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        return len(model.predict(image, imgsz=imgsz, conf=conf, verbose=False)[0].boxes)

    for body in bodies[:3]:  # warm-up
        once(body)
    took, found, started = [], 0, time.perf_counter()
    for body in bodies:
        t0 = time.perf_counter()
        found += once(body)
        took.append(time.perf_counter() - t0)
    seconds = time.perf_counter() - started
    out.write_text(json.dumps({"images": len(bodies), "images_per_s": len(bodies) / seconds,
                               "latency_ms": summary(took), "detections": found}))  # fmt: skip


def raw_ort(onnx: Path, bodies: list[bytes], imgsz: int, conf: float, size: int) -> dict[str, Any]:
    """ONNX Runtime at batch ``size`` in the caller's process, with a replica's image decode, letterbox, box decode
    and NMS (bench.serve's ceiling for one replica): images/s and the time of each batch."""
    from bench.harness.report import summary
    from tasks.detectors import OnnxDetector
    from tasks.infer_runner import input_stride
    from tasks.postprocess import batch, decode, letterbox
    from tasks.serve_models import decode_image

    detector = OnnxDetector(onnx, size)
    stride = input_stride(detector)

    def run(group: list[bytes]) -> int:
        preps = [letterbox(decode_image(body), imgsz, stride) for body in group]  # type: ignore[arg-type]
        blob, preps = batch(preps, imgsz)
        out = detector.raw(blob)
        return sum(len(decode(out[i], p, conf, detector.names)) for i, p in enumerate(preps))

    run(bodies[:size])  # warm-up
    took, found, started = [], 0, time.perf_counter()
    for first in range(0, len(bodies), size):
        t0 = time.perf_counter()
        found += run(bodies[first : first + size])
        took.append(time.perf_counter() - t0)
    seconds = time.perf_counter() - started
    return {"images": len(bodies), "images_per_s": len(bodies) / seconds, "batch_ms": summary(took),
            "detections": found}  # fmt: skip


def main(argv: list[str]) -> None:
    out, onnx, scratch, launched = Path(argv[0]), argv[1], Path(argv[2]), float(argv[3])
    paths = argv[4:]
    _offline(scratch)
    from ultralytics import YOLO

    doc: dict[str, Any] = {}
    model = YOLO(onnx, task="detect")
    first_s, _ = _pass(model, paths, 8)
    doc["onnx_first_pass"] = {"images": len(paths), "seconds": first_s, "launch_to_done_s": time.time() - launched}
    doc["onnx_b8"] = _warm(model, paths, 8)
    doc["onnx_b1"] = _warm(model, paths, 1)
    pt = scratch / "yolov8n-untrained.pt"
    YOLO("yolov8n.yaml").save(str(pt))
    model = YOLO(str(pt))
    doc["pt_b1"] = _warm(model, paths, 1)
    doc["pt_b8"] = _warm(model, paths, 8)
    import torch

    doc["torch_threads"] = torch.get_num_threads()
    out.write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--sequential"]:
        sequential(sys.argv[2:])
    else:
        main(sys.argv[1:])
