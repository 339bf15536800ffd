"""The baseline of bench.infer, in a process of its own: Ultralytics ``predict()`` on the same images.

``python -m bench.infer_baseline OUT.json ONNX SCRATCH LAUNCHED_AT IMAGE...`` prepares the same offline environment as
a yoloq job process (``tasks.offline.prepare_environment`` before Ultralytics is imported), then times
``YOLO(onnx).predict`` (batch 8, then 1) and ``YOLO(.pt).predict`` (batch 1 and 8) of an untrained yolov8n saved from
its yaml. Each warm figure excludes model loading and a warm-up call; the ONNX model's first pass over all images is
also reported from this process's launch (``LAUNCHED_AT``, the parent's ``time.time()``), the counterpart of a yoloq
job's submitted → finished.
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


def main(argv: list[str]) -> None:
    out, onnx, scratch, launched = Path(argv[0]), argv[1], Path(argv[2]), float(argv[3])
    paths = argv[4:]
    repo = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(repo))
    from tasks.offline import prepare_environment

    prepare_environment(scratch / "ultralytics-config", threads=len(os.sched_getaffinity(0)))
    from tasks.offline import settle_ultralytics

    settle_ultralytics()
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
    main(sys.argv[1:])
