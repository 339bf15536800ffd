"""Step 2: training images/s through yoloq versus plain Ultralytics, same GPU, same dataset, same run.

For each model (yolov8n, yolov8s at imgsz 640, batch 32, 8 DataLoader workers on a ``yoloq dataset synth``
dataset) the plain baseline (bench.gpu.plain_train) and a yoloq training job run one after the other, the order
flipped for every model. Both are measured the same way (bench.gpu.results.images_per_s: whole epochs after the
first, from each epoch's first batch to its last), so start-up, validation, checkpoint upload and ONNX export are
outside the figure on both sides. The bar (issue #8): yoloq ≥ 0.9 × plain. (A daemonic pool child would force
``workers=0``, 4.7× slower: the job process exists to avoid that.)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from bench.gpu.inventory import worker_cuda
from bench.gpu.results import at_least, images_per_s, ratio, verdict
from bench.gpu.stack import TEAM, Harness, JobWatch, run_json, seconds_between
from infra.s3 import S3Store
from tasks.records import parse_iso
from tasks.specs import TrainSpec
from tasks.states import JobState

MIN_RATIO = 0.9
# Progress changes every 0.5 s and carries its own write time (heartbeat_at), so a light poll loses no precision
# and takes no CPU from the job it measures.
POLL_S = 0.1


def plain_train(h: Harness, model: str, data: Path, epochs: int, batch: int, tag: str) -> dict[str, Any]:
    """Plain Ultralytics in its own process, pinned to the worker's GPU; its document plus images/s."""
    p = h.profile
    scratch = h.work / "plain" / tag
    scratch.mkdir(parents=True, exist_ok=True)
    out = scratch / "result.json"
    argv = [sys.executable, "-m", "bench.gpu.plain_train", str(out), f"{model}.yaml", str(data / "data.yaml"),
            str(p.imgsz), str(batch), str(epochs), str(p.workers), p.device, str(scratch)]  # fmt: skip
    env = h.services.env(**({"CUDA_VISIBLE_DEVICES": "0"} if p.on_gpu else {}))
    doc = run_json(argv, out, env, timeout_s=900)
    doc["images_per_s"] = images_per_s([(t, a, e, b) for t, a, e, b in doc["samples"]], batch, p.skip_epochs)
    doc["samples"] = len(doc["samples"])
    return doc


def yoloq_train(h: Harness, model: str, data: Path) -> dict[str, Any]:
    """One yoloq training job submitted through the client, followed to success; its figures."""
    p = h.profile
    spec = TrainSpec(data=str(data), model=f"{model}.yaml", epochs=p.train_epochs, imgsz=p.imgsz, batch=p.train_batch,
                     workers=p.workers, save_period=p.train_epochs, tier="high", team=TEAM,
                     name=f"gpu-validate-train-{model}")  # fmt: skip
    watch = JobWatch(h.client, h.client.submit(spec).job_id, h.home)
    final = watch.until(lambda r: r.state is JobState.SUCCEEDED, "training to finish", 900, poll_s=POLL_S)
    task = final.attempts[0].task_id
    first = watch.first_batch.get(task)
    started = final.attempts[0].started_at
    return {
        "job_id": final.job_id, "queue": final.queue, "memory_mib_estimate": final.memory_mib, "gpu": final.gpu,
        "images_per_s": images_per_s(watch.samples, p.train_batch, p.skip_epochs), "samples": len(watch.samples),
        "batches_per_epoch": watch.batches, "epochs": (final.result or {}).get("epochs"),
        "submitted_to_started_s": seconds_between(final.submitted_at, started),
        "started_to_finished_s": seconds_between(started, final.finished_at),
        "dequeue_to_first_batch_s": round(first - parse_iso(started).timestamp(), 3) if first and started else None,
        "result": {k: v for k, v in (final.result or {}).items() if k in ("best", "onnx", "final_metrics")},
    }  # fmt: skip


def keep_weights(h: Harness, uri: str | None, model: str) -> str | None:
    """Download a trained model's best.pt into the work folder, for the inference step of a later call."""
    if not uri:
        return None
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    target = h.work / "models" / f"{model}-trained.pt"
    target.parent.mkdir(parents=True, exist_ok=True)
    return str(target) if S3Store(h.services.settings).get_file(key, target, bucket=bucket) else None


def one_model(h: Harness, model: str, data: Path, plain_first: bool) -> dict[str, Any]:
    """Plain and yoloq for one model (in the given order); the pair and their ratio."""
    p = h.profile
    runs: dict[str, Any] = {}
    order = ("plain", "yoloq") if plain_first else ("yoloq", "plain")
    for side in order:
        if side == "plain":
            runs["plain"] = plain_train(h, model, data, p.train_epochs, p.train_batch, f"train-{model}")
        else:
            runs["yoloq"] = yoloq_train(h, model, data)
    ours, theirs = runs["yoloq"]["images_per_s"], runs["plain"]["images_per_s"]
    kept = keep_weights(h, runs["yoloq"]["result"].get("best"), model)
    return {"model": model, "order": list(order), "yoloq": runs["yoloq"], "plain": runs["plain"],
            "ratio_yoloq_over_plain": ratio(ours, theirs), "kept_weights": kept}  # fmt: skip


def run(h: Harness) -> dict[str, Any]:
    """Every model of the profile; the verdict is yoloq ≥ 0.9 × plain for each."""
    p = h.profile
    data = h.dataset(p.images, p.imgsz)
    rows = [one_model(h, model, data, plain_first=i % 2 == 0) for i, model in enumerate(p.train_models)]
    cuda = worker_cuda(h)
    parent_ctx = cuda["parent_has_cuda_context"]
    return {
        "config": {"imgsz": p.imgsz, "batch": p.train_batch, "epochs": p.train_epochs, "workers": p.workers,
                   "images": p.images, "measured_epochs": f"epochs >= {p.skip_epochs}", "device": p.device},
        "rows": rows,
        "worker_cuda_after_jobs": cuda,
        "verdicts": {
            **{f"{r['model']}_within_10pct": verdict(at_least(r["ratio_yoloq_over_plain"], MIN_RATIO)) for r in rows},
            "worker_parent_no_cuda_context_after_jobs": verdict(None if parent_ctx is None else not parent_ctx),
        },
    }  # fmt: skip
