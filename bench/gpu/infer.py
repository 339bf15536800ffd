"""Step 6: a yoloq ``infer`` job over 512 images (v8n, imgsz 640) against ``predict()`` at batch 1 and 32, FP16.

The model is the yolov8n that step 2 trained (kept in the work folder). yoloq runs an ``infer`` job over the folder
with those ``.pt`` weights: on a GPU worker its ``auto`` backend is the PyTorch model in FP16 (tasks/detectors.py;
``result.images_per_s``: decode, letterbox, forward, NMS, one JSON per image to S3; ``result.backend`` says which
ran). Without trained weights, an untrained yolov8n is exported to ONNX by an ``export`` job and run on ONNX Runtime
(CPU). The baseline process (bench.gpu.predict) runs Ultralytics ``predict()`` on the same weights and images.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from bench.gpu.results import ratio, verdict
from bench.gpu.stack import TEAM, Harness, JobWatch, run_json, seconds_between
from tasks.specs import ExportSpec, InferSpec
from tasks.states import JobState


def _finished(h: Harness, job_id: str, what: str) -> Any:
    watch = JobWatch(h.client, job_id, h.home)
    return watch.until(lambda r: r.state is JobState.SUCCEEDED, what, 900, poll_s=0.05)


def yoloq_infer(h: Harness, weights: str, source: Path, batch: int) -> dict[str, Any]:
    """The infer job over ``source`` with .pt weights (an export to ONNX first for an untrained yaml); its figures."""
    p = h.profile
    model, export_doc = weights, {}
    if not weights.endswith(".pt"):
        export_spec = ExportSpec(model=weights, imgsz=p.imgsz, tier="high", team=TEAM, name="gpu-validate-export")
        export = _finished(h, h.client.submit(export_spec).job_id, "the ONNX export")
        model = str((export.result or {})["onnx"])
        export_doc = {"export_job": export.job_id, "export_s": seconds_between(export.started_at, export.finished_at)}
    spec = InferSpec(model=model, source=str(source), imgsz=p.imgsz, batch=batch, tier="high", team=TEAM,
                     name="gpu-validate-infer")  # fmt: skip
    final = _finished(h, h.client.submit(spec).job_id, "inference")
    result = final.result or {}
    return {
        **export_doc, "model": model, "backend": result.get("backend"),
        "job_id": final.job_id, "batch": batch, "images": result.get("images"),
        "refused": len(result.get("refused") or []), "images_per_s_in_job": result.get("images_per_s"),
        "submitted_to_finished_s": seconds_between(final.submitted_at, final.finished_at),
    }  # fmt: skip


def predict_baseline(h: Harness, weights: str, source: Path) -> dict[str, Any]:
    """``predict()`` at each batch size of the profile, in a process pinned to the worker's GPU."""
    p = h.profile
    scratch = h.work / "predict"
    scratch.mkdir(parents=True, exist_ok=True)
    out = scratch / "result.json"
    argv = [sys.executable, "-m", "bench.gpu.predict", str(out), weights, p.device, "1" if p.half else "0",
            str(p.imgsz), ",".join(str(b) for b in p.infer_batches), str(scratch), str(source)]  # fmt: skip
    env = h.services.env(**({"CUDA_VISIBLE_DEVICES": "0"} if p.on_gpu else {}))
    return run_json(argv, out, env, timeout_s=900)


def run(h: Harness) -> dict[str, Any]:
    """Both paths over the same images and weights; rates side by side and what yoloq's path runs on."""
    p = h.profile
    source = h.dataset(p.small_images, p.imgsz, seed=1) / "images"
    trained = h.work / "models" / "yolov8n-trained.pt"
    weights = str(trained) if trained.exists() else "yolov8n.yaml"
    ours = yoloq_infer(h, weights, source, max(p.infer_batches))
    theirs = predict_baseline(h, weights, source)
    gpu_path = str(ours.get("backend", "")).endswith("cuda")
    big = f"b{max(p.infer_batches)}"
    return {
        "weights": weights if weights.endswith(".pt") else "untrained yolov8n (step 2's model was not found)",
        "yoloq": ours,
        "predict": theirs,
        "note": None if gpu_path else f"yoloq's infer job ran on {ours.get('backend')}: the GPU was not used",
        "ratio_yoloq_over_predict": {
            k: ratio(ours["images_per_s_in_job"], v["images_per_s"]) for k, v in theirs["runs"].items()
        },
        "predict_batched_over_b1": ratio(theirs["runs"][big]["images_per_s"], theirs["runs"]["b1"]["images_per_s"]),
        "verdicts": {"yoloq_infer_batched_on_gpu": verdict(gpu_path)},
    }
