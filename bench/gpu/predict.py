"""Ultralytics ``predict()`` in a process of its own: the inference baseline of the GPU validation.

``python -m bench.gpu.predict OUT.json WEIGHTS DEVICE HALF IMGSZ BATCHES SCRATCH SOURCE_DIR``

WEIGHTS is a ``.pt`` (the model yoloq trained in step 2) or a yaml (an untrained model is built and saved as .pt).
For each batch size in BATCHES (comma-separated): a warm-up call on ``2 × batch`` images, then one streamed pass over
every JPEG under SOURCE_DIR, timed; images/s and the detections found. FP16 when HALF is ``1`` (GPU only). The same
offline environment as a yoloq job process (``tasks.offline``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CONF = 0.25


def _pass(model: Any, paths: list[str], opts: dict[str, Any]) -> tuple[float, int, int]:
    """One streamed predict() over ``paths``; (seconds, results, detections)."""
    t0 = time.perf_counter()
    results = detections = 0
    for result in model.predict(paths, stream=True, verbose=False, conf=CONF, **opts):
        results += 1
        detections += len(result.boxes)
    return time.perf_counter() - t0, results, detections


def measure(argv: list[str]) -> dict[str, Any]:
    """Every batch size of the command line; images/s of each."""
    weights, device, half, imgsz, batches, scratch, source = argv
    sys.path.insert(0, str(ROOT))
    from tasks.offline import prepare_environment

    prepare_environment(Path(scratch) / "ultralytics-config", threads=len(os.sched_getaffinity(0)))
    from tasks.offline import settle_ultralytics

    settle_ultralytics()
    from ultralytics import YOLO

    if weights.endswith(".yaml"):
        saved = Path(scratch) / "untrained.pt"
        YOLO(weights).save(str(saved))
        weights = str(saved)
    model = YOLO(weights)
    paths = sorted(str(p) for p in Path(source).rglob("*.jpg"))
    doc: dict[str, Any] = {"weights": weights, "device": device, "half": half == "1", "images": len(paths), "runs": {}}
    for batch in (int(b) for b in batches.split(",")):
        opts = {"imgsz": int(imgsz), "batch": batch, "device": device, "half": half == "1"}
        _pass(model, paths[: 2 * batch], opts)  # warm-up: CUDA kernels, cuDNN autotune, pinned buffers
        seconds, results, found = _pass(model, paths, opts)
        if results != len(paths):
            raise RuntimeError(f"predict() returned {results} results for {len(paths)} images")
        doc["runs"][f"b{batch}"] = {"batch": batch, "seconds": round(seconds, 3),
                                    "images_per_s": round(len(paths) / seconds, 1), "detections": found}  # fmt: skip
    return doc


if __name__ == "__main__":
    Path(sys.argv[1]).write_text(json.dumps(measure(sys.argv[2:])))
    sys.stdout.flush()
    os._exit(0)
