"""Preemption on the GPU: the job checkpoints, its GPU memory comes back at once, and the resume loses nothing.

Issue #8's bar: request → GPU memory back (NVML) ≤ checkpoint save + upload + 0.5 s, i.e. at most 0.5 s after the
checkpoint is published; the resumed attempt finishes the asked epochs and trains each batch exactly once.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.gpu.nvml import Nvml, wait_released
from bench.gpu.results import batches_redone, parse_checkpoint, parse_resume
from bench.gpu.stack import JobWatch
from bench.harness.procs import job_process
from infra.processes import ManagedProcess
from tasks.records import JobRecord, parse_iso
from tasks.specs import TrainSpec
from tasks.states import JobState
from tests.gpu.device import marks
from yoloq.client import Client

pytestmark = marks()

EPOCHS = 3
SLACK_S = 0.5


def _inside_epoch_1(record: JobRecord) -> bool:
    p = record.progress
    return record.state is JobState.RUNNING and p.get("epoch") == 1 and 2 <= p.get("batch", 0) <= p["batches"] - 2


def test_preempt_frees_the_gpu_within_the_checkpoint_time_and_the_resume_loses_nothing(
    gpu_worker: ManagedProcess, client: Client, nvml: Nvml, shapes_640: Path
) -> None:
    # Given a yolov8n job inside its second epoch, its job process holding GPU memory
    spec = TrainSpec(data=str(shapes_640), model="yolov8n.yaml", epochs=EPOCHS, imgsz=640, batch=8, workers=4,
                     save_period=1, tier="low", team="vision")  # fmt: skip
    watch = JobWatch(client, client.submit(spec).job_id, client.settings.home)
    watch.until(_inside_epoch_1, "mid-epoch 1", 300)
    pid = job_process(watch.job_id)
    assert pid is not None and pid in (nvml.processes(0) or {})

    # When the operator preempts it
    requested = time.time()
    client.preempt(watch.job_id, reason="gpu test", by="test")
    freed = wait_released(nvml, pid)

    # Then its memory is back within 0.5 s of the checkpoint being published
    final = watch.until(lambda r: r.state is JobState.SUCCEEDED, "the resumed job to finish", 600)
    ckpt = next(e for e in final.events if e.type == "checkpoint" and "preempted mid-epoch" in e.reason)
    published = parse_iso(ckpt.at).timestamp()
    assert freed is not None and freed - requested <= published - requested + SLACK_S, (freed, published, requested)
    assert parse_checkpoint(ckpt.reason) is not None

    # And the resumed attempt finished every epoch, training each remaining batch exactly once
    assert len(final.attempts) == 2 and final.attempts[0].outcome == "preempted"
    assert (final.result or {})["epochs"] == EPOCHS
    resumed_at = parse_resume(next(e.reason for e in final.events if e.type == "resume"))
    assert resumed_at is not None and resumed_at[0] == 1
    assert batches_redone(watch.batches, EPOCHS, resumed_at, int((final.result or {})["batches_this_attempt"])) == 0
