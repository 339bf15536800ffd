"""Step 4: dequeue → first training batch on the worker, against the cold ``import torch, ultralytics`` + CUDA cost.

yoloq has no pre-started, pre-imported job process yet (docs/architecture.md, "Known gaps"): every attempt starts
``python -m tasks.job_process`` and pays the cold import. So this step reports what exists: two jobs in a row on
the same worker (the second always on a worker that has just run a job: warm in every sense available today), each
cancelled right after its first batch, split into dequeue → job process started → first batch; and, in the same run,
a bare process timing the cold import plus CUDA initialisation (6.4 s on an H100, BRIEF §5). The issue's bar,
≤ 1 s on a warm worker, needs the warm start that is not built: the verdict says so rather than pretend.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.gpu.results import at_most, verdict
from bench.gpu.stack import ROOT, TEAM, Harness, JobWatch
from bench.harness import procs
from tasks.records import JobRecord, parse_iso
from tasks.specs import TrainSpec
from tasks.states import TERMINAL

TARGET_S = 1.0
COLD = """
import json, sys, time
t0 = time.perf_counter()
import torch, ultralytics
t1 = time.perf_counter()
cuda = torch.cuda.is_available() and sys.argv[1] != "cpu"
if cuda:
    torch.zeros(1, device="cuda"); torch.cuda.synchronize()
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "cuda_init_s": (t2 - t1) if cuda else None, "total_s": t2 - t0}))
"""


def cold_import(h: Harness) -> dict[str, Any]:
    """A bare process: ``import torch, ultralytics`` then the first CUDA tensor, timed inside it."""
    env = h.services.env(YOLO_OFFLINE="1", YOLO_CONFIG_DIR=str(h.work / "cold-config"),
                         MPLCONFIGDIR=str(h.work / "cold-config" / "mpl"))  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", COLD, h.profile.device], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300, check=False)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"cold import failed: {done.stderr[-800:]}")
    doc: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return {**{k: round(v, 3) if v is not None else None for k, v in doc.items()},
            "process_wall_s": round(time.perf_counter() - started, 3)}  # fmt: skip


def process_start(pid: int | None) -> float | None:
    """Wall-clock start of a process from /proc (10 ms resolution: clock ticks since boot vs uptime)."""
    if pid is None:
        return None
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])  # field 22, starttime
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))


def one_job(h: Harness, n: int) -> dict[str, Any]:
    """Submit a training job, note when its job process starts and when its first batch ends, cancel it."""
    p = h.profile
    spec = TrainSpec(data=str(h.dataset(p.images, p.imgsz)), model="yolov8n.yaml", epochs=1, imgsz=p.imgsz,
                     batch=p.train_batch, workers=p.workers, tier="high", team=TEAM,
                     name=f"gpu-validate-warm-{n}")  # fmt: skip
    deadline = time.monotonic() + 300  # a warm worker: its standby job process has finished importing (+ CUDA init)
    while not any(h.home.glob("work/standby-*/standby-ready")) and time.monotonic() < deadline:
        time.sleep(0.05)
    watch = JobWatch(h.client, h.client.submit(spec).job_id, h.home)
    pids: dict[str, int | None] = {"pid": None}

    def first_batch(record: JobRecord) -> bool:
        if pids["pid"] is None:
            pids["pid"] = procs.job_process(record.job_id)
            pids["start"] = process_start(pids["pid"])  # type: ignore[assignment]
        return bool(record.attempts) and record.attempts[-1].task_id in watch.first_batch

    running = watch.until(first_batch, "the first batch", 600, poll_s=0.01)
    h.client.cancel(running.job_id, by="gpu-validate")
    final = watch.until(lambda r: r.state in TERMINAL, "the cancel", 120)
    started = parse_iso(running.attempts[-1].started_at or "").timestamp()
    batch_at = watch.first_batch[running.attempts[-1].task_id]
    proc_start = pids.get("start")
    note = next((e.model_dump() for e in final.events if e.type == "first-batch"), {})
    return {
        "job_id": final.job_id, "state": final.state.value, "warm": note.get("warm"),
        "handover_to_first_batch_s": note.get("seconds"),
        "submitted_to_dequeued_s": round(started - parse_iso(running.submitted_at).timestamp(), 3),
        "dequeue_to_job_process_s": round(proc_start - started, 3) if proc_start else None,
        "job_process_to_first_batch_s": round(batch_at - proc_start, 3) if proc_start else None,
        "dequeue_to_first_batch_s": round(batch_at - started, 3),
    }  # fmt: skip


def run(h: Harness) -> dict[str, Any]:
    """The cold import figure and two jobs in a row on one worker (the verdict is on the second)."""
    cold = cold_import(h)
    jobs = [one_job(h, n) for n in (1, 2)]
    warm = jobs[-1]["dequeue_to_first_batch_s"]
    return {
        "warm_start_built": True,
        "note": "each job is submitted once the worker's standby job process is ready (tasks/standby.py); a "
        "negative dequeue_to_job_process_s means the process was started before the job arrived",
        "cold_import_and_cuda": cold,
        "jobs": jobs,
        "target_s": TARGET_S,
        "verdicts": {"warm_worker_dequeue_to_first_batch_le_1s": verdict(at_most(warm, TARGET_S))},
    }
