"""Warm start: attempt hand-over → first trained batch, with a pre-imported standby job process versus a cold one.

The same tiny training job (yolov8n from its yaml, imgsz 64, 1 epoch, batch 4, synthetic shapes) runs ``RUNS`` times
on one simulated GPU with ``YOLOQ_WARM_START`` on (each job submitted once the worker's standby is ready, as on a
fleet between jobs), then off, in the same run. The figure is the job's
``first-batch`` event (the pool child's hand-over time to the job process's first-batch marker), plus the
Celery-level start (``started_at`` − ``submitted_at``) for context. Issue #8's target, on a GPU: ≤ 1 s warm,
against 6.4 s cold there (import + CUDA init); on this CPU machine the cold import alone is ~3 s.

Run: ``.venv/bin/python -m bench.warm_start``; writes bench/results/warm_start.{json,md}.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.harness.report import write_results
from bench.harness.stack import poll, yoloq_fleet
from tasks.records import parse_iso
from tasks.specs import TrainSpec
from tasks.synth import SynthConfig, synthesize
from yoloq.client import Client

RUNS = 4


def phase(warm: bool, data: Path) -> list[dict[str, Any]]:
    """``RUNS`` sequential trainings on one worker; each one's first-batch figures."""
    os.environ["YOLOQ_WARM_START"] = "true" if warm else "false"
    try:
        with yoloq_fleet("0:A100:40", prefix="yoloq-warm-") as stack:
            client = Client(stack.services.settings)
            spec = TrainSpec(data=str(data), epochs=1, imgsz=64, batch=4, workers=0, tier="low", team="bench",
                             memory_gb=4)  # fmt: skip
            rows = []
            for _ in range(RUNS):
                if warm:  # a warm worker: its standby has finished importing (as on a fleet between jobs)
                    poll(lambda: any(stack.home.glob("work/standby-*/standby-ready")), 0.05, 120)
                record = client.submit(spec).wait(timeout_s=300)
                first = next(e.model_dump() for e in record.events if e.type == "first-batch")
                dequeue = (parse_iso(record.started_at or "") - parse_iso(record.submitted_at)).total_seconds()
                rows.append({"first_batch_s": first["seconds"], "warm": first["warm"], "dequeue_s": round(dequeue, 3),
                             "state": record.state.value})  # fmt: skip
            return rows
    finally:
        os.environ.pop("YOLOQ_WARM_START", None)


def _samples(rows: list[dict[str, Any]]) -> str:
    return ", ".join(f"{r['first_batch_s']:.2f}" for r in rows)


def main() -> None:
    """Both phases; JSON + Markdown with medians and the ratio."""
    with tempfile.TemporaryDirectory(prefix="yoloq-warm-data-") as tmp:
        data = synthesize(Path(tmp), SynthConfig(images=16, imgsz=64)).parent
        warm, cold = phase(True, data), phase(False, data)
    med = {name: statistics.median(r["first_batch_s"] for r in rows) for name, rows in (("warm", warm), ("cold", cold))}
    doc = {"runs": RUNS, "warm": warm, "cold": cold, "median_first_batch_s": med,
           "speedup": round(med["cold"] / max(med["warm"], 1e-9), 2)}  # fmt: skip
    write_results("warm_start", doc, [
        f"Attempt hand-over → first trained batch, yolov8n @64 on CPU, {RUNS} sequential jobs per phase, same run.",
        "",
        "| job process | median s | samples s | all warm/cold as asked |",
        "|---|---|---|---|",
        *(f"| {name} | {med[name]:.2f} | {_samples(rows)} | {all(r['warm'] is (name == 'warm') for r in rows)} |"
          for name, rows in (("warm", warm), ("cold", cold))),
        "",
        f"Warm start is {doc['speedup']}× faster to the first batch (cold = `import torch, ultralytics` and the rest "
        "of the job process's start-up; on a GPU the cold path also pays CUDA initialisation).",
    ])  # fmt: skip


if __name__ == "__main__":
    main()
