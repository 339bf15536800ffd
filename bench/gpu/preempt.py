"""Step 3: ``yoloq preempt`` of a running v8n, v8s and v8m job mid-epoch on the GPU, then its resume.

Per model: a low-tier training job (imgsz 640, batch 16, 8 workers, 2 epochs, checkpoint every epoch) is followed
until it is inside its last epoch (≥ 2 batches done, ≥ 2 left); then the operator's preempt request goes in and
NVML is polled every 5 ms until the job process no longer holds GPU memory. The bar (issue #8): request → GPU memory
back ≤ checkpoint save + upload + 0.5 s, i.e. ≤ (request → checkpoint published) + 0.5 s. The resumed attempt must
finish the same number of epochs and train every batch of the interrupted epoch exactly once (plain Ultralytics
``resume=True`` restarts at the next epoch).
"""

from __future__ import annotations

import time
from typing import Any

from bench.gpu.results import at_most, batches_redone, parse_checkpoint, parse_resume, verdict
from bench.gpu.stack import TEAM, Harness, JobWatch, event_time, seconds_between
from bench.harness import procs
from tasks.records import JobRecord, parse_iso
from tasks.specs import TrainSpec
from tasks.states import JobState

SLACK_S = 0.5


def in_last_epoch(epochs: int) -> Any:
    """A predicate: running inside the last epoch with at least 2 batches done and 2 left (a true mid-epoch stop)."""

    def check(record: JobRecord) -> bool:
        p = record.progress
        return (record.state is JobState.RUNNING and "batch" in p and p["epoch"] >= epochs - 1
                and 2 <= p["batch"] <= p["batches"] - 2)  # fmt: skip

    return check


def watch_release(h: Harness, pid: int, timeout_s: float = 120) -> tuple[float | None, float]:
    """(time the pid left NVML's process list, None without NVML; time the process exited), polled every 5 ms."""
    freed: float | None = None
    exited: float | None = None
    deadline = time.monotonic() + timeout_s
    while True:
        holders = h.nvml.processes(0)
        now = time.time()
        if freed is None and holders is not None and pid not in holders:
            freed = now
        if exited is None and not procs.alive(pid):
            exited = now
        if exited is not None and (freed is not None or holders is None):
            return freed, exited
        if time.monotonic() > deadline:
            raise TimeoutError(f"job process {pid} still runs or holds GPU memory {timeout_s:.0f}s after preempt")
        time.sleep(0.005)


def _checkpoint(record: JobRecord) -> tuple[float, str]:
    for e in record.events:
        if e.type == "checkpoint" and "preempted mid-epoch" in e.reason:
            return parse_iso(e.at).timestamp(), e.reason
    raise RuntimeError(f"job {record.job_id} has no mid-epoch checkpoint event: {[e.type for e in record.events]}")


def resume_figures(watch: JobWatch, final: JobRecord, epochs: int) -> dict[str, Any]:
    """How the resumed attempt went: where it resumed, batches redone, epochs done, its cold start."""
    resume = event_time(final, "resume")
    resumed_at = parse_resume(resume[1]) if resume else None
    result = final.result or {}
    redone = (batches_redone(watch.batches, epochs, resumed_at, int(result["batches_this_attempt"]))
              if resumed_at and "batches_this_attempt" in result else None)  # fmt: skip
    second = final.attempts[1] if len(final.attempts) > 1 else None
    started = second.started_at if second else None
    first_batch = watch.first_batch.get(second.task_id) if second else None
    return {
        "resumed_at": resumed_at, "batches_redone": redone, "epochs_done": result.get("epochs"),
        "epochs_asked": epochs, "requeue_to_resumed_start_s": seconds_between(final.attempts[0].ended_at, started),
        "resumed_dequeue_to_first_batch_s": (round(first_batch - parse_iso(started).timestamp(), 3)
                                             if first_batch and started else None),
        "gpus": [a.gpu for a in final.attempts],
    }  # fmt: skip


def one_model(h: Harness, model: str) -> dict[str, Any]:
    """Submit, preempt mid-epoch, follow the resume to the end; the figures and checks of this model."""
    p = h.profile
    spec = TrainSpec(data=str(h.dataset(p.images, p.imgsz)), model=f"{model}.yaml", epochs=p.preempt_epochs,
                     imgsz=p.imgsz, batch=p.preempt_batch, workers=p.workers, save_period=1, tier="low", team=TEAM,
                     name=f"gpu-validate-preempt-{model}")  # fmt: skip
    idle_used = h.nvml.used_mib(0)
    watch = JobWatch(h.client, h.client.submit(spec).job_id, h.home)
    seen = watch.until(in_last_epoch(p.preempt_epochs), "mid-epoch progress", 900)
    pid = procs.job_process(seen.job_id)
    held = (h.nvml.processes(0) or {}).get(pid or -1)
    requested = time.time()
    h.client.preempt(seen.job_id, reason="gpu-validate", by="gpu-validate")
    freed, exited = watch_release(h, pid) if pid else (None, None)
    final = watch.until(lambda r: r.state is JobState.SUCCEEDED, "the resumed job to finish", 900)
    ckpt_at, reason = _checkpoint(final)
    note = parse_checkpoint(reason)
    published_s = round(ckpt_at - requested, 3)
    return {
        "model": model, "job_id": final.job_id, "pid_found": pid is not None, "gpu_mib_held_by_job": held,
        "device_used_idle_mib": idle_used, "stopped_at": seen.progress, "batches_per_epoch": watch.batches,
        "checkpoint_mb": note.mb if note else None, "checkpoint_publish_s": note.publish_s if note else None,
        "request_to_saved_s": round(published_s - note.publish_s, 3) if note else None,
        "request_to_checkpoint_published_s": published_s,
        "request_to_gpu_free_s": round(freed - requested, 3) if freed else None,
        "request_to_process_exit_s": round(exited - requested, 3) if exited else None,
        "target_s": round(published_s + SLACK_S, 3), **resume_figures(watch, final, p.preempt_epochs),
    }  # fmt: skip


def run(h: Harness) -> dict[str, Any]:
    """Every model of the profile, one after the other; a verdict per model and check."""
    rows = [one_model(h, model) for model in h.profile.preempt_models]
    verdicts: dict[str, str] = {}
    for r in rows:
        m = r["model"]
        verdicts[f"{m}_gpu_free_within_target"] = verdict(at_most(r["request_to_gpu_free_s"], r["target_s"]))
        verdicts[f"{m}_same_epochs"] = verdict(r["epochs_done"] == r["epochs_asked"])
        verdicts[f"{m}_no_batch_redone_or_skipped"] = verdict(None if r["batches_redone"] is None
                                                               else r["batches_redone"] == 0)  # fmt: skip
    p = h.profile
    config = {"imgsz": p.imgsz, "batch": p.preempt_batch, "epochs": p.preempt_epochs, "workers": p.workers,
              "images": p.images, "slack_s": SLACK_S,
              "gpu_free_measured_by": "NVML" if h.nvml.ok else "not measured"}  # fmt: skip
    return {"config": config, "rows": rows, "verdicts": verdicts}
