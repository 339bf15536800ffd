"""Real Ultralytics training as yoloq jobs: S3 checkpoints, mid-epoch preemption, resume on another worker."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from infra.s3 import S3Store
from tasks.checkpoints import CheckpointStore
from tasks.records import parse_iso
from tasks.specs import TrainSpec
from tasks.states import JobState
from tasks.synth import SynthConfig, synthesize
from tests.fleet import poll, yoloq_cli

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthesize(tmp_path_factory.mktemp("synth"), SynthConfig(images=48, imgsz=64, classes=3))


def _spec(data: Path, epochs: int = 2, **extra: object) -> TrainSpec:
    return TrainSpec(data=str(data.parent), model="yolov8n.yaml", epochs=epochs, imgsz=64, batch=4, workers=0,
                     save_period=1, tier="low", team="vision", memory_gb=4, **extra)  # type: ignore[arg-type]  # fmt: skip


def _batch(client, job_id: str) -> tuple[int, int]:
    progress = client.job(job_id).progress
    return int(progress.get("epoch", 0)), int(progress.get("batch", 0))


def test_training_job_succeeds_with_loadable_artefacts_in_s3(fleet, client, services, dataset, tmp_path):
    fleet.start("0:A100:40")
    record = client.submit(_spec(dataset)).wait(timeout_s=300)
    assert record.state is JobState.SUCCEEDED, record.events[-1]
    store = S3Store(services.settings)
    for name in ("best", "last", "onnx", "metrics"):
        assert record.result[name].startswith(f"s3://{store.bucket}/jobs/{record.job_id}/results/")
    weights = tmp_path / "best.pt"
    assert store.get_file(f"jobs/{record.job_id}/results/best.pt", weights)
    assert torch.load(weights, map_location="cpu", weights_only=False)["model"] is not None  # stripped: weights only
    history = store.get_json(f"jobs/{record.job_id}/results/metrics.json")
    assert [row["epoch"] for row in history] == [0, 1]
    progress = record.progress
    assert {k: progress[k] for k in ("epoch", "epochs", "batch", "batches")} == {"epoch": 1, "epochs": 2, "batch": 9,
                                                                               "batches": 9}  # fmt: skip
    assert {"map50", "map50_95", "box_loss"} <= set(progress)  # the previous epoch's headline metrics


@pytest.fixture(scope="module")
def long_epochs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Epochs of ~50 batches: an operator's CLI request lands mid-epoch, not in the epoch's save (where it would be
    obeyed at the boundary: a legitimate stop, but not the one this test is about)."""
    return synthesize(tmp_path_factory.mktemp("synth-long"), SynthConfig(images=240, imgsz=64, classes=3))


def test_preempted_training_resumes_mid_epoch_on_another_worker(fleet, client, services, long_epochs):
    # Given a training job running on GPU 0, a few batches into its first epoch
    fleet.start("0:A100:40,1:A100:40")
    handle = client.submit(_spec(long_epochs, epochs=2))
    poll(lambda: _batch(client, handle.job_id) >= (0, 4), 240, "training a few batches in")
    first_gpu, batches = handle.refresh().gpu, int(client.job(handle.job_id).progress["batches"])
    # When an operator preempts it with the CLI
    assert yoloq_cli(services, "preempt", handle.job_id).returncode == 0
    record = handle.wait(timeout_s=300)
    # Then it checkpointed mid-epoch, resumed elsewhere from that checkpoint and finished every epoch once
    assert record.state is JobState.SUCCEEDED, record.events[-1]
    assert [a.outcome for a in record.attempts] == ["preempted", "succeeded"]
    assert record.attempts[1].gpu != first_gpu
    resumes = [e.reason or "" for e in record.events if e.type == "resume"]
    assert len(resumes) == 1
    epoch, batch = (int(v) for v in re.search(r"at epoch (\d+), batch (\d+)", resumes[0]).groups())  # type: ignore[union-attr]
    assert epoch == 0 and batch > 4, resumes  # a mid-epoch checkpoint, not an epoch boundary
    assert record.result["batches_this_attempt"] == 2 * batches - batch  # not one batch redone or lost
    history = S3Store(services.settings).get_json(f"jobs/{record.job_id}/results/metrics.json")
    assert [row["epoch"] for row in history] == [0, 1]


def test_preempt_during_validation_checkpoints_without_waiting_for_it(fleet, client, services, tmp_path):
    # Given a job whose validation is long (most images in the val split): its first epoch's batches are done
    data = synthesize(tmp_path / "val-heavy", SynthConfig(images=200, imgsz=64, classes=3, val_fraction=0.9))
    fleet.start("0:A100:40")
    handle = client.submit(_spec(data, epochs=2))
    poll(lambda: client.job(handle.job_id).progress.get("batch") == 5, 240, "the first epoch's last batch (5 of 5)")
    # When it is preempted while it validates
    client.preempt(handle.job_id, reason="test: during validation")
    record = handle.wait(timeout_s=300)
    # Then the checkpoint was written during validation (not after it), one batch back, and the resume finished
    assert record.state is JobState.SUCCEEDED, record.events[-1]
    notes = [e.reason for e in record.events if e.type == "checkpoint"]
    watched = "preempted during validation (abandoned mid-batch)"  # by the watch thread, not at a batch end
    assert any(n.startswith(watched) and "epoch 0, batch 4)" in n for n in notes), notes
    saves = [e.model_dump() for e in record.events if e.type == "checkpoint"]
    assert all(e["bytes"] > 1_000_000 and e["publish_s"] > 0 for e in saves), "the supervisor's restart-cost inputs"
    assert [a.outcome for a in record.attempts] == ["preempted", "succeeded"]
    assert record.result["batches_this_attempt"] == 1 + 5, "the epoch's last batch again, then all of epoch 1"


def test_attempts_start_in_a_pre_imported_job_process(fleet, client, dataset):
    # Given a worker (its pool child keeps a warm job process with torch and Ultralytics imported)
    fleet.start("0:A100:40")
    # When two training jobs run one after the other
    records = [client.submit(_spec(dataset, epochs=1)).wait(timeout_s=240) for _ in range(2)]
    # Then each got a warm job process (the second one the standby started after the first attempt)
    for record in records:
        assert record.state is JobState.SUCCEEDED, record.events[-1]
        first = [e.model_dump() for e in record.events if e.type == "first-batch"]
        assert len(first) == 1 and first[0]["warm"] is True, first
        assert "warm (pre-imported) job process" in first[0]["reason"]
        # recorded when the first batch was trained: ahead of the attempt's first checkpoint, in order and in time
        kinds = [e.type for e in record.events]
        assert kinds.index("first-batch") < kinds.index("checkpoint"), kinds
        checkpoint = next(e for e in record.events if e.type == "checkpoint")
        assert parse_iso(first[0]["at"]) <= parse_iso(checkpoint.at)


def test_corrupt_newest_checkpoint_falls_back_to_previous(fleet, client, services, long_epochs):
    # Given a job preempted after two published checkpoints, whose newest is then corrupted in S3
    fleet.start("0:A100:40")
    handle = client.submit(_spec(long_epochs, epochs=2))
    poll(lambda: _batch(client, handle.job_id) >= (1, 3), 240, "training into epoch 1")
    store = S3Store(services.settings)
    fleet.stop()
    newest, previous = CheckpointStore(store, handle.job_id).candidates()[:2]
    assert newest.batch > 0  # SIGTERM to the worker made the job checkpoint mid-epoch before it exited
    assert "shutting down" in (client.job(handle.job_id).preemptions[0].reason or "")
    store.put_bytes(newest.key, b"\0" * newest.size)
    # When a worker picks the job up again
    fleet.start("0:A100:40")
    record = handle.wait(timeout_s=300)
    # Then the corrupt checkpoint was skipped with a reason and the previous one was used
    assert record.state is JobState.SUCCEEDED, record.events[-1]
    fallbacks = [e.reason for e in record.events if e.type == "checkpoint-fallback"]
    assert fallbacks and newest.key in fallbacks[0] and "sha256 mismatch" in fallbacks[0]
    assert [e.reason for e in record.events if e.type == "resume"] == [
        f"resuming from {previous.key} at epoch {previous.epoch}, batch {previous.batch}"
    ]
