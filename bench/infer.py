"""Images/s of yoloq's infer job vs Ultralytics ``predict()`` on the same images, in the same run.

A local stack with one simulated GPU. An export job turns an untrained ``yolov8n.yaml`` into ONNX (imgsz 160, dynamic
batch); then, R rounds interleaved (the order flips every round): one yoloq infer job over 512 synthetic 160×160 JPEGs
(batch 8, conf 0.25) and one baseline process (:mod:`bench.infer_baseline`) that runs Ultralytics ``predict()`` on
the same files with the same ONNX file (batch 8 and 1) and with the same untrained model saved as ``.pt`` (batch 1
and 8). yoloq's in-job rate (``result.images_per_s``: reading, decoding, letterbox, ONNX Runtime, NMS, detections
written to S3 in JSON-lines shards; session creation excluded) is compared with ``predict()``'s warm rate (model
loaded, one warm-up call excluded; results kept in memory, nothing written). End to end: the job's submitted →
finished vs the baseline's process launch → first ONNX pass over all images done. Writes bench/results/infer.json
and infer.md.
Run: ``.venv/bin/python -m bench.infer``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as `python bench/infer.py`: make the repository importable
    sys.path.insert(0, str(ROOT))

from bench.harness import report  # noqa: E402
from bench.harness.stack import BenchStack, yoloq_fleet  # noqa: E402
from infra.redis_client import connect  # noqa: E402
from infra.s3 import S3Store  # noqa: E402
from tasks.records import JobRecord, parse_iso  # noqa: E402
from tasks.specs import ExportSpec, InferSpec  # noqa: E402
from tasks.states import JobState  # noqa: E402
from tasks.synth import SynthConfig, synthesize  # noqa: E402
from yoloq.client import Client  # noqa: E402

RESULTS = ROOT / "bench" / "results"
GPUS = "0:A100:40"
IMAGES, IMGSZ, BATCH, CONF = 512, 160, 8, 0.25  # 512: a 2 s window per pass, less at the mercy of a neighbour
BASELINES = ("onnx_b8", "onnx_b1", "pt_b8", "pt_b1")
TARGET = 1.0  # yoloq's in-job images/s ≥ predict() with the same ONNX model and batch


def finished(client: Client, job_id: str, timeout_s: float = 300) -> JobRecord:
    record = client.job(job_id)
    deadline = time.monotonic() + timeout_s
    while record.state not in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED):
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {record.state.value} after {timeout_s:.0f}s")
        time.sleep(0.05)
        record = client.job(job_id)
    if record.state is not JobState.SUCCEEDED:
        raise RuntimeError(f"job {job_id} ended {record.state.value}: {record.error}")
    return record


def seconds(start: str | None, end: str | None) -> float:
    return (parse_iso(end or "") - parse_iso(start or "")).total_seconds()


def yoloq_once(client: Client, model_uri: str, source: Path) -> dict[str, Any]:
    """One infer job over the folder; its in-job rate and its registry timings."""
    spec = InferSpec(model=model_uri, source=str(source), imgsz=IMGSZ, batch=BATCH, conf=CONF, team="bench",
                     memory_gb=2, name="bench-infer")  # fmt: skip
    record = finished(client, client.submit(spec).job_id)
    result = record.result or {}
    if result.get("refused"):
        raise RuntimeError(f"infer job refused images: {result['refused'][:3]}")
    return {
        "job_id": record.job_id, "images": result["images"], "images_per_s": result["images_per_s"],
        "shards": result["shards"], "submitted_to_finished_s": seconds(record.submitted_at, record.finished_at),
        "started_to_finished_s": seconds(record.started_at, record.finished_at),
    }  # fmt: skip


def baseline_once(onnx: Path, paths: list[str], scratch: Path) -> dict[str, Any]:
    """One baseline process (bench.infer_baseline) over the same images; its figures."""
    out = scratch / "baseline.json"
    out.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "bench.infer_baseline", str(out), str(onnx), str(scratch), repr(time.time()), *paths]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(f"baseline failed ({done.returncode}): {done.stderr[-2000:]}")
    doc: dict[str, Any] = json.loads(out.read_text())
    return doc


def export_onnx(client: Client, store: S3Store, target: Path, imgsz: int = IMGSZ) -> str:
    """The untrained yolov8n as ONNX through yoloq's own export job; downloaded to ``target``; returns its URI."""
    spec = ExportSpec(model="yolov8n.yaml", imgsz=imgsz, team="bench", memory_gb=2, name="bench-export")
    record = finished(client, client.submit(spec).job_id)
    uri = str((record.result or {})["onnx"])
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not store.get_file(key, target, bucket=bucket):
        raise RuntimeError(f"exported model {uri} is missing")
    return uri


def measure(stack: BenchStack, rounds: int) -> dict[str, Any]:
    settings = stack.services.settings
    client, store = Client(settings), S3Store(settings)
    data = synthesize(stack.home / "images", SynthConfig(images=IMAGES, imgsz=IMGSZ)).parent
    source = data / "images"
    paths = sorted(str(p) for p in source.rglob("*.jpg"))
    if len(paths) != IMAGES:
        raise RuntimeError(f"expected {IMAGES} images under {source}, found {len(paths)}")
    onnx = stack.home / "model.onnx"
    uri = export_onnx(client, store, onnx)
    scratch = stack.home / "baseline"
    scratch.mkdir()
    ours: list[dict[str, Any]] = []
    theirs: list[dict[str, Any]] = []
    for index in range(rounds):
        steps: list[Callable[[], None]] = [lambda: ours.append(yoloq_once(client, uri, source)),
                                           lambda: theirs.append(baseline_once(onnx, paths, scratch))]  # fmt: skip
        for step in steps if index % 2 == 0 else steps[::-1]:
            step()
        print(f"round {index + 1}/{rounds}: yoloq {ours[-1]['images_per_s']:.0f} img/s in job, "
              f"{ours[-1]['submitted_to_finished_s']:.2f} s end to end; predict() onnx b8 "
              f"{theirs[-1]['onnx_b8']['images_per_s']:.0f}, .pt b8 {theirs[-1]['pt_b8']['images_per_s']:.0f} img/s",
              flush=True)  # fmt: skip
    return {
        "model": uri,
        "yoloq": ours,
        "baseline": theirs,
        "machine": report.machine(connect(settings.redis_url)),
    }


def med(values: list[float]) -> float:
    return float(statistics.median(values))


def run(rounds: int) -> dict[str, Any]:
    """Start the stack, measure, stop everything; returns the results document."""
    with yoloq_fleet(GPUS) as stack:
        measured = measure(stack, rounds)
    ours, theirs = measured["yoloq"], measured["baseline"]
    rate = {"yoloq": med([r["images_per_s"] for r in ours])}
    rate |= {name: med([b[name]["images_per_s"] for b in theirs]) for name in BASELINES}
    end_to_end = {
        "yoloq_submitted_to_finished_s": med([r["submitted_to_finished_s"] for r in ours]),
        "yoloq_started_to_finished_s": med([r["started_to_finished_s"] for r in ours]),
        "predict_onnx_launch_to_done_s": med([b["onnx_first_pass"]["launch_to_done_s"] for b in theirs]),
    }
    ratio = {name: rate["yoloq"] / rate[name] for name in BASELINES}
    # Each round's yoloq job runs next to its baseline process: their ratio shares the neighbour's load of the moment
    paired = med([r["images_per_s"] / b["onnx_b8"]["images_per_s"] for r, b in zip(ours, theirs, strict=True)])
    # The fastest round of each: what each path does when the neighbour is quiet (a shared box's noise only slows)
    best = {"yoloq": max(r["images_per_s"] for r in ours), "onnx_b8": max(b["onnx_b8"]["images_per_s"] for b in theirs)}
    return {
        "config": {"images": IMAGES, "imgsz": IMGSZ, "batch": BATCH, "conf": CONF, "rounds": rounds, "gpus": GPUS,
                   "model": "yolov8n.yaml, untrained", "onnx": measured["model"]},
        "machine": measured["machine"], "images_per_s": rate, "ratio_yoloq_over": ratio, "end_to_end_s": end_to_end,
        "ratio_onnx_b8_per_round_median": paired, "best_round_images_per_s": best,
        "shards_per_job": max(r["shards"] for r in ours),
        "target": f"yoloq in-job img/s >= {TARGET:g}x predict() with the same ONNX at batch {BATCH}",
        "meets_target": min(ratio["onnx_b8"], paired, best["yoloq"] / best["onnx_b8"]) >= TARGET,
        "runs": {"yoloq": ours, "baseline": theirs},
        "leaked_pids": stack.leaked,
    }  # fmt: skip


def markdown(doc: dict[str, Any]) -> str:
    """The results as Markdown: images/s side by side, the ratios, end-to-end times."""
    m, c, rate, ratio, e2e = doc["machine"], doc["config"], doc["images_per_s"], doc["ratio_yoloq_over"], doc[
        "end_to_end_s"]  # fmt: skip
    labels = {"onnx_b8": f"Ultralytics `YOLO(model.onnx).predict()`, batch {c['batch']}",
              "onnx_b1": "Ultralytics `YOLO(model.onnx).predict()`, batch 1",
              "pt_b8": f"Ultralytics `YOLO(model.pt).predict()`, batch {c['batch']}",
              "pt_b1": "Ultralytics `YOLO(model.pt).predict()`, batch 1"}  # fmt: skip
    lines = [
        f"Inference of {c['model']} (imgsz {c['imgsz']}, conf {c['conf']}) over {c['images']} synthetic JPEGs, "
        f"{c['rounds']} rounds interleaved, medians; one simulated GPU ({c['gpus']}), CPU inference.",
        f"{m['at']}, {m['nproc']} cores ({m['cpu']}), Python {m['python']}; another workload shared the machine.",
        "",
        "| path | images/s | yoloq ÷ this |",
        "|---|---|---|",
        f"| yoloq infer job (ONNX Runtime, batch {c['batch']}), in-job rate | {rate['yoloq']:.0f} | 1.00× |",
        *(f"| {labels[name]} | {rate[name]:.0f} | {ratio[name]:.2f}× |" for name in BASELINES),
        "",
        f"Target (issue 16 item 7): {doc['target']}: {ratio['onnx_b8']:.2f}× (medians), "
        f"{doc['ratio_onnx_b8_per_round_median']:.2f}× (median of each round's ratio), "
        f"{doc['best_round_images_per_s']['yoloq'] / doc['best_round_images_per_s']['onnx_b8']:.2f}× (best round of "
        f"each: {doc['best_round_images_per_s']['yoloq']:.0f} vs {doc['best_round_images_per_s']['onnx_b8']:.0f}), "
        f"{'met' if doc['meets_target'] else 'not met'}.",
        "",
        f"Detections: {doc['shards_per_job']} JSON-lines shard(s) per job, one S3 PUT per 1,024 images from a "
        "background thread (tasks/infer_results.py). Until issue 16 item 7 the job PUT one JSON per image (8 in "
        "flight): 44 % of its loop, 82 images/s, 0.56× `predict()` (2026-11-23, AMD EPYC, this table's layout).",
        "",
        "| end to end, all images | seconds |",
        "|---|---|",
        f"| yoloq job, submitted → finished (registry) | {e2e['yoloq_submitted_to_finished_s']:.2f} |",
        f"| yoloq job, started → finished (registry) | {e2e['yoloq_started_to_finished_s']:.2f} |",
        f"| `predict()` ONNX batch {c['batch']}, process launch → first pass done (cold) | "
        f"{e2e['predict_onnx_launch_to_done_s']:.2f} |",
        "",
        "yoloq's in-job rate covers reading, decoding, letterbox, ONNX Runtime, NMS and writing the shards to S3 "
        "(session creation excluded); `predict()`'s warm rate excludes model loading and one warm-up call and "
        "writes nothing. The model is untrained (random weights): no box reaches conf 0.25 (predict() found "
        f"{doc['runs']['baseline'][0]['onnx_b8']['detections']}), so NMS costs nothing on either path. "
        "The `.pt` is the same architecture saved from `yolov8n.yaml` (different random weights; speed is the same).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run, print and store the benchmark; exit 1 if any process it started outlived it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of both paths (default 5)")
    args = parser.parse_args()
    doc = run(args.rounds)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "infer.json").write_text(json.dumps(doc, indent=2) + "\n")
    table = markdown(doc)
    (RESULTS / "infer.md").write_text(table)
    print(table)
    if doc["leaked_pids"]:
        sys.exit(f"leaked processes: {doc['leaked_pids']}")


if __name__ == "__main__":
    main()
