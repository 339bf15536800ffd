"""Export and batch-inference jobs, datasets from S3, bad inputs that fail clearly, kill -9 during training."""

from __future__ import annotations

import shutil
from pathlib import Path

import onnxruntime as ort
import pytest

from infra.s3 import S3Store
from tasks.infer_results import detections_prefix, read_detections, shard_keys
from tasks.specs import ExportSpec, InferSpec, ProbeSpec
from tasks.states import JobState
from tests.fleet import poll, small_dataset, small_train

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_dataset(tmp_path_factory.mktemp("synth"), seed=3)


_train = small_train


def test_export_then_batch_inference_lists_bad_files_and_worker_keeps_serving(
    fleet, client, services, dataset, tmp_path
):
    fleet.start("0:A100:40")
    exported = client.submit(ExportSpec(model="yolov8n.yaml", imgsz=64, team="vision", memory_gb=2)).wait(timeout_s=120)
    assert exported.state is JobState.SUCCEEDED, exported.events[-1]
    store = S3Store(services.settings)
    onnx = tmp_path / "model.onnx"
    assert store.get_file(exported.result["onnx"].split("/", 3)[3], onnx)
    assert ort.InferenceSession(str(onnx)).get_inputs()[0].shape[0] != 1  # dynamic batch axis for batched infer
    # Given a folder of images with a text file and a corrupt "jpg" among them
    source = tmp_path / "images"
    shutil.copytree(dataset / "images" / "val", source)
    (source / "notes.txt").write_text("not an image")
    (source / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    spec = InferSpec(model=exported.result["onnx"], source=str(source), imgsz=64, batch=4, conf=0.01, team="vision")
    record = client.submit(spec).wait(timeout_s=120)
    # Then every real image has its detections in S3 and the two bad files are listed with their reasons
    assert record.state is JobState.SUCCEEDED, record.events[-1]
    images = sorted(p.name for p in (dataset / "images" / "val").iterdir())
    prefix = detections_prefix(record.job_id)
    assert sorted(read_detections(store, prefix)) == images and record.result["images"] == len(images)
    assert record.result["shards"] == len(shard_keys(store, prefix)) == 1  # one PUT for the job, not one per image
    assert {r["file"]: r["reason"] for r in record.result["refused"]} == {
        "notes.txt": "not an image (the content is not PNG, JPEG, BMP, WebP or TIFF)",
        "broken.jpg": "not an image (the content is not PNG, JPEG, BMP, WebP or TIFF)",
    }
    assert client.submit(ProbeSpec(seconds=0, team="vision")).wait(timeout_s=30).state is JobState.SUCCEEDED


def test_two_jobs_train_from_one_s3_dataset_fetched_once(fleet, client, services, dataset):
    store = S3Store(services.settings)
    for path in dataset.rglob("*"):
        if path.is_file() and not path.name.endswith(".cache"):
            store.put_file(f"datasets/shapes/{path.relative_to(dataset)}", path)
    fleet.start("0:A100:40,1:A100:40")
    caches = services.settings.home / "cache" / "datasets"
    before = set(caches.glob("*/.complete"))  # the session's home: other tests' datasets are cached there too
    # Two jobs on two GPUs start together on the same dataset: one download, one label cache, no race
    handles = [client.submit(_train(f"s3://{store.bucket}/datasets/shapes/")) for _ in range(2)]
    records = [h.wait(timeout_s=240) for h in handles]
    assert [r.state for r in records] == [JobState.SUCCEEDED] * 2, [r.events[-1] for r in records]
    assert {r.attempts[0].gpu for r in records} == {"0", "1"}
    cached = sorted(set(caches.glob("*/.complete")) - before)
    assert len(cached) == 1 and (cached[0].parent / "images" / "train").is_dir()
    assert sorted(p.name for p in (cached[0].parent / "labels").glob("*.cache")) == ["train.cache", "val.cache"]


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda d, t, b: _train(str(t)), "dataset has no data.yaml"),
        (lambda d, t, b: _train(str(_malformed(d, t))), "malformed data.yaml"),
        (lambda d, t, b: _train(f"s3://{b}/no/such/dataset/"), "does not exist or has no data.yaml"),
        (lambda d, t, b: InferSpec(model=f"s3://{b}/no/model.onnx", source=str(d), team="vision"), "does not exist"),
    ],
    ids=["folder-without-data-yaml", "malformed-yaml", "missing-s3-dataset", "missing-model"],
)
def test_bad_inputs_fail_the_job_with_a_clear_reason(fleet, client, services, dataset, tmp_path, make, reason):
    fleet.start("0:A100:40")
    spec = make(dataset, tmp_path, services.settings.s3_bucket)
    record = client.submit(spec).wait(timeout_s=120)
    assert record.state is JobState.FAILED
    assert reason in (record.error or ""), record.error
    assert client.submit(ProbeSpec(seconds=0, team="vision")).wait(timeout_s=30).state is JobState.SUCCEEDED


def _malformed(dataset: Path, tmp: Path) -> Path:
    bad = tmp / "bad"
    shutil.copytree(dataset, bad)
    (bad / "data.yaml").write_text("train: images/train\nval: [unclosed\n")
    return bad


def test_kill_9_during_training_resumes_from_newest_checkpoint(fleet, client, dataset):
    # Given a training job that has published its first epoch's checkpoint
    fleet.start("0:A100:40")
    handle = client.submit(_train(str(dataset), epochs=3))
    poll(lambda: client.job(handle.job_id).checkpoint, 180, "a published checkpoint")
    # When its worker (and the job process with it) is killed with -9 and a new worker starts
    fleet.kill9(0)
    fleet.restart(0)
    record = handle.wait(timeout_s=300)
    # Then the lease expired, the job was requeued and resumed from that checkpoint, not from scratch
    assert record.state is JobState.SUCCEEDED, record.events[-1]
    assert record.preemptions[0].by == "recovery" and "lease expired" in record.preemptions[0].reason
    resumes = [e.reason or "" for e in record.events if e.type == "resume"]
    assert len(resumes) == 1 and "at epoch 0" not in resumes[0]


def _top(store: S3Store, job_id: str, n: int = 5) -> dict[str, list[tuple[float, ...]]]:
    """Per image, the ``n`` most confident detections as (confidence, x1, y1, x2, y2, class)."""
    out = {}
    for image, found in read_detections(store, detections_prefix(job_id)).items():
        dets = sorted(found, key=lambda d: -d["conf"])[:n]
        out[image] = [(d["conf"], *d["box"], d["cls"]) for d in dets]
    return out


def test_torch_and_onnx_backends_find_the_same_detections(fleet, client, services, dataset):
    # Given weights trained by a job (the GPU path runs these .pt weights in FP16; here the same code in FP32)
    fleet.start("0:A100:40")
    trained = client.submit(_train(str(dataset))).wait(timeout_s=240)
    assert trained.state is JobState.SUCCEEDED, trained.events[-1]
    source = str(dataset / "images" / "val")
    runs = {}
    for backend in ("torch", "onnx"):
        spec = InferSpec(model=trained.result["best"], source=source, imgsz=64, batch=4, conf=0.001, backend=backend,
                         team="vision", memory_gb=2)  # fmt: skip
        record = client.submit(spec).wait(timeout_s=180)
        assert record.state is JobState.SUCCEEDED, record.events[-1]
        runs[record.result["backend"]] = _top(S3Store(services.settings), record.job_id)
    # Then both decoders see the same top detections on every image (same letterbox, decode and NMS)
    assert set(runs) == {"torch-fp32-cpu", "onnx-cpu"}
    torch_run, onnx_run = runs["torch-fp32-cpu"], runs["onnx-cpu"]
    assert torch_run.keys() == onnx_run.keys() and torch_run
    for image, dets in torch_run.items():
        assert len(dets) == len(onnx_run[image]), image
        for a, b in zip(dets, onnx_run[image], strict=True):
            assert a[0] == pytest.approx(b[0], abs=2e-3) and a[5] == b[5], (image, a, b)
            assert all(abs(x - y) <= 0.5 for x, y in zip(a[1:5], b[1:5], strict=True)), (image, a, b)


def test_the_torch_backend_refuses_onnx_weights_clearly(fleet, client, services, dataset, tmp_path):
    fleet.start("0:A100:40")
    exported = client.submit(ExportSpec(model="yolov8n.yaml", imgsz=64, team="vision", memory_gb=2)).wait(timeout_s=120)
    spec = InferSpec(model=exported.result["onnx"], source=str(dataset / "images" / "val"), imgsz=64, batch=4,
                     backend="torch", team="vision", memory_gb=2)  # fmt: skip
    record = client.submit(spec).wait(timeout_s=120)
    assert record.state is JobState.FAILED and "backend torch needs PyTorch weights (.pt)" in (record.error or "")
