"""Issue 18 items 1, 2 and 10 with real worker processes: the written order inside a tier, queue positions and ETAs
that follow it exactly, and the runtime history a finished job leaves."""

from __future__ import annotations

import json
import time

import pytest

from infra.runtime_history import RuntimeHistory
from tasks.records import parse_iso
from tasks.specs import ProbeSpec, TrainSpec
from tasks.states import JobState
from tasks.synth import SynthConfig, synthesize
from tests.fleet import poll, yoloq_cli
from tests.integration.test_api import serving_api
from yoloq.standing import job_document, queue_standings

pytestmark = pytest.mark.integration


def test_inside_a_tier_gpus_take_the_written_order_and_positions_say_so(fleet, client):
    # Given one 80 GB card busy with a batch probe
    fleet.start("0:A100:80")
    blocker = client.submit(ProbeSpec(seconds=8, tier="batch", team="ops"))
    blocker.wait({JobState.RUNNING}, timeout_s=30)
    # When three medium jobs queue behind it: a 20 GB one, then a 30 GB one, then a 70 GB one (kombu's fixed order
    # took the largest class first: 70, 30, 20)
    small = client.submit(ProbeSpec(seconds=1, tier="medium", team="ops", memory_gb=20))
    middle = client.submit(ProbeSpec(seconds=1, tier="medium", team="ops", memory_gb=30))
    big = client.submit(ProbeSpec(seconds=1, tier="medium", team="ops", memory_gb=70))
    ids = [h.job_id for h in (small, middle, big)]
    # Then, in one snapshot, the 70 GB job (this card's own class, within the bound) is next, then the others oldest
    # first, each starting when the one before it ends (their runtimes are their declared seconds)
    placed = queue_standings(client, [], time.time())
    assert blocker.refresh().state is JobState.RUNNING, "the blocker ended before the snapshot"
    assert [placed[j].queue_position for j in ids] == [2, 3, 1]
    etas = [placed[j].eta_start_s for j in (big.job_id, small.job_id, middle.job_id)]
    assert etas[0] is not None and 0 < etas[0] <= 8
    assert etas[1] == pytest.approx(etas[0] + 1) and etas[2] == pytest.approx(etas[1] + 1)
    # ... and the CLI's JSON says the same, with where the runtime came from
    doc = json.loads(yoloq_cli(fleet.services, "job", small.job_id, "--json").stdout)
    assert (doc["queue_position"], doc["expected_runtime_s"]) == (2, 1.0), doc
    assert doc["expected_runtime_source"].startswith("spec:") and doc["eta_start"] is not None
    # Then the jobs really start in that order
    done = [h.wait(timeout_s=60) for h in (small, middle, big)]
    assert all(r.state is JobState.SUCCEEDED for r in done)
    started = [r.job_id for r in sorted(done, key=lambda r: parse_iso(r.started_at))]
    assert started == [big.job_id, small.job_id, middle.job_id]
    # ... and a finished job shows no position, and its prediction error was recorded
    after = job_document(client, client.job(small.job_id))
    assert after["queue_position"] is None and after["eta_start"] is None
    errors = poll(lambda: len(RuntimeHistory(client.registry.client).errors()) >= 4 or None, 10, "4 error rows")
    assert errors
    rows = {r["job_id"]: r for r in RuntimeHistory(client.registry.client).errors()}
    assert rows[small.job_id]["predicted_s"] == 1.0 and rows[small.job_id]["source"] == "spec"
    sla = json.loads(yoloq_cli(fleet.services, "sla", "--json").stdout)
    assert sla["runtime_prediction"]["count"] == 4 and sla["runtime_prediction"]["by_source"]["spec"]["count"] == 4


def test_a_job_no_live_gpu_holds_has_no_position_and_says_why(fleet, client):
    fleet.start("0:T4:16")
    job = client.submit(ProbeSpec(seconds=1, tier="low", team="ops", memory_gb=30))
    doc = job_document(client, client.job(job.job_id))
    assert doc["state"] == "queued" and doc["queue_position"] is None and doc["eta_start"] is None
    assert doc["queue_note"] == "no live GPU can hold it"


def test_a_finished_training_job_teaches_the_next_one_its_runtime(fleet, client, services, tmp_path):
    # Given a worker and a small synthetic dataset, and a training job declaring 90 minutes
    fleet.start("0:A100:40")
    data = synthesize(tmp_path / "synth", SynthConfig(images=16, imgsz=64, classes=2))
    spec = TrainSpec(data=str(data.parent), model="yolov8n.yaml", epochs=1, imgsz=64, batch=4, workers=0,
                     tier="low", team="vision", memory_gb=4, expected_minutes=90.0)  # fmt: skip
    first = client.submit(spec)
    shown = job_document(client, client.job(first.job_id))
    assert (shown["expected_runtime_s"], shown["expected_runtime_source"]) == (5400.0, "declared: expected_minutes")
    # When it succeeds
    done = first.wait(timeout_s=300)
    assert done.state is JobState.SUCCEEDED, done.events[-1]
    # Then its seconds per batch are in the history, with its prediction's error (90 min declared, seconds taken)
    store = RuntimeHistory(client.registry.client)
    (sample,) = poll(lambda: store.samples() or None, 10, "the runtime sample")
    assert (sample["model"], sample["imgsz"], sample["batch"], sample["batches_per_epoch"]) == ("yolov8n", 64, 4, 3)
    (error,) = store.errors()
    assert error["source"] == "declared" and error["predicted_s"] == 5400.0 and error["error_ratio"] > 1
    # ... and the same job submitted again is expected to take what the first one measured, over the API too
    again = client.submit(spec.model_copy(update={"expected_minutes": None}))
    with serving_api(services) as api:
        code, doc = api.call("GET", f"/api/v1/jobs/{again.job_id}")
        metrics = api.call("GET", "/metrics")[1]
    assert code == 200 and doc["expected_runtime_source"].startswith("history: 1 runs of yolov8n imgsz 64 batch 4")
    assert doc["expected_runtime_s"] == pytest.approx(sample["s_per_batch"] * 3, abs=0.1)  # 12 training images
    assert "yoloq_runtime_prediction_error_ratio_count 1.0" in metrics
    again.wait(timeout_s=300)
